package exchanges_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/bestof"
	"github.com/redquota/redquota/middleware"
)

// Binance lowers an account's unfilled order count when its orders fill
// (faqs/order_count_decrement.md of binance-spot-api-docs, since 2023-10;
// checked 2026-12-06): "So long as your orders trade, you can keep trading."
// The simulator does so: every other order of the account fills 2 ms after it
// is placed, lowering the count of every ORDERS window by one. A fleet of 8
// processes × 2 senders places orders only, against 100 orders a window (a
// second here). With the preset's ORDERS limits lowered by the answers'
// X-MBX-ORDER-COUNT headers (limiter.Limit.Lowers) it places more than 120
// in every whole window (153–168 were seen: not 200, as each lowering keeps
// the orders still on their way, up to 15 here, and a window closes for
// good once a sender is booked into the next), with 0 429s; with counts that
// only rise (the behaviour before), at most 100, which the second run shows.
// The header taken as the whole truth (without the orders on their way) drew
// 13 and 17 429s in two runs (and about 200 orders a window).
func TestBinanceOrdersFill(t *testing.T) {
	rls := []exchanges.BinanceRateLimit{
		{RateLimitType: exchanges.BinanceRequestWeight, Interval: "MINUTE", IntervalNum: 1, Limit: 6000},
		{RateLimitType: exchanges.BinanceRawRequests, Interval: "MINUTE", IntervalNum: 5, Limit: 300000},
		{RateLimitType: exchanges.BinanceOrders, Interval: "MINUTE", IntervalNum: 1, Limit: 100},
		{RateLimitType: exchanges.BinanceOrders, Interval: "DAY", IntervalNum: 1, Limit: 200000},
	}
	run := func(t *testing.T, opts exchanges.BinanceOptions) (perWindow []int, refused int) {
		t.Helper()
		probe, _ := exchanges.Binance(exchanges.Scaled(exchanges.BinanceOptions{RateLimits: rls}, 1.0/60))
		sim := newBinanceSim(t, probe, rls)
		sim.fill = func(seq int) (time.Duration, bool) { return 2 * time.Millisecond, seq%2 == 0 }
		u, _ := url.Parse(sim.srv.URL)
		opts.Hosts, opts.RateLimits = []string{u.Host}, rls
		p, err := exchanges.Binance(exchanges.Scaled(opts, 1.0/60))
		if err != nil {
			t.Fatal(err)
		}
		fleet := newFleet(t, p)
		start := startAfterBoundary(time.Second)
		stop := start.Add(3200 * time.Millisecond)
		drive(t, fleet, 2, stop, func(ctx context.Context, pr *proc, g int) error {
			req, err := http.NewRequestWithContext(ctx, "POST", sim.srv.URL+"/api/v3/order?symbol=BTCUSDT&side=BUY&type=LIMIT", nil)
			if err != nil {
				return err
			}
			req.Header.Set("X-MBX-APIKEY", "acct")
			_, _, err = pr.do(req)
			return err
		})
		hits := sim.log()
		refused = countStatus(hits, http.StatusTooManyRequests) + countStatus(hits, http.StatusTeapot)
		if refused > 0 {
			sim.mu.Lock()
			t.Logf("denied: %v", sim.denied)
			sim.mu.Unlock()
			t.Errorf("simulator answered %d 429s and 418s", refused)
		}
		first, last := start.Unix()+1, stop.Unix()-1
		orders := map[int64]int{}
		for _, h := range hits {
			if w := h.at.Unix(); h.status == http.StatusOK && w >= first && w <= last {
				orders[w] += h.cost["orders-1m"]
			}
		}
		for w := first; w <= last; w++ {
			perWindow = append(perWindow, orders[w])
		}

		return perWindow, refused
	}
	t.Run("lowered", func(t *testing.T) {
		bestof.Run(t, func(t *testing.T, use *bestof.Usage) {
			lowered, refused := run(t, exchanges.BinanceOptions{})
			t.Logf("orders per whole window, counts lowered by fills: %v (limit 100 unfilled), %d 429s", lowered, refused)
			for i, n := range lowered {
				if n <= 120 {
					use.Errorf("window %d: %d orders, want more than 120 (100 unfilled ones, and half of the orders fill)", i, n)
				}
			}
		})
	})
	t.Run("raise-only", func(t *testing.T) {
		raised, refused := run(t, exchanges.RaiseOnly(exchanges.BinanceOptions{}))
		t.Logf("orders per whole window, counts only raised: %v (limit 100 unfilled), %d 429s", raised, refused)
		for i, n := range raised {
			if n > 100 {
				t.Errorf("window %d: %d orders with counts that only rise", i, n)
			}
		}
	})
}

// A header older than a booking still on its way does not lower the count
// below that booking: order A is booked and sent first but held on its way
// (it reaches Binance last); order B, booked after A, fills at once and its
// answer says 0 unfilled orders, which does not count A. The limit is 2: the
// count goes from 2 (A, B) to 1 (A), not 0, so one more order goes out
// while A is held, not two; when A arrives Binance counts 2 of 2, no 429.
// Lowered to 0 (the header taken as the whole truth), two more go out and A
// draws a -1015 429. With counts that only rise, none goes out.
func TestBinanceStaleOrderCount(t *testing.T) {
	rls := []exchanges.BinanceRateLimit{
		{RateLimitType: exchanges.BinanceRequestWeight, Interval: "MINUTE", IntervalNum: 1, Limit: 6000},
		{RateLimitType: exchanges.BinanceRawRequests, Interval: "MINUTE", IntervalNum: 5, Limit: 300000},
		{RateLimitType: exchanges.BinanceOrders, Interval: "HOUR", IntervalNum: 1, Limit: 2},
	}
	for _, tc := range []struct {
		name string
		opts exchanges.BinanceOptions
		more int // orders sent while A is held
	}{
		{"lowered", exchanges.BinanceOptions{}, 1},
		{"raise-only", exchanges.RaiseOnly(exchanges.BinanceOptions{}), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One hour-long window for the whole test (this machine's clock is Redis's).
			if now := time.Now(); now.Truncate(time.Hour).Add(time.Hour).Sub(now) < 10*time.Second {
				time.Sleep(now.Truncate(time.Hour).Add(time.Hour).Sub(now) + 100*time.Millisecond)
			}
			probe, _ := exchanges.Binance(exchanges.BinanceOptions{RateLimits: rls})
			sim := newBinanceSim(t, probe, rls)
			// Every order fills at once, but A: the first order to arrive is B.
			sim.fill = func(seq int) (time.Duration, bool) { return 0, seq == 0 }
			arrived, release := make(chan struct{}), make(chan struct{})
			held := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("newClientOrderId") == "A" {
					close(arrived)
					<-release
				}
				sim.ServeHTTP(w, r)
			})
			srvURL := listenHandler(t, held)
			u, _ := url.Parse(srvURL)
			opts := tc.opts
			opts.Hosts, opts.RateLimits = []string{u.Host}, rls
			p, err := exchanges.Binance(opts)
			if err != nil {
				t.Fatal(err)
			}
			fleet := newFleet(t, p)
			order := func(ctx context.Context, pr *proc, id string) (int, error) {
				req, _ := http.NewRequestWithContext(ctx, "POST", srvURL+"/api/v3/order?symbol=BTCUSDT&side=BUY&type=LIMIT&newClientOrderId="+id, nil)
				req.Header.Set("X-MBX-APIKEY", "acct")
				st, _, err := pr.do(req)
				return st, err
			}
			done := make(chan int, 1)
			go func() {
				st, err := order(context.Background(), fleet[0], "A")
				if err != nil {
					t.Error(err)
				}
				done <- st
			}()
			<-arrived
			if st, err := order(context.Background(), fleet[1], "B"); err != nil || st != http.StatusOK {
				t.Fatalf("B: %d %v", st, err)
			}
			more := 0
			for i := range 3 {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				st, err := order(ctx, fleet[2+i], "C")
				cancel()
				if err == nil && st == http.StatusOK {
					more++
					continue
				}
				if !errors.Is(err, middleware.ErrRateLimited) && !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("order %d: %d %v", i, st, err)
				}
			}
			close(release)
			if st := <-done; st != http.StatusOK {
				t.Errorf("A: answered %d", st)
			}
			if more != tc.more {
				t.Errorf("%d orders went out while A was on its way, want %d", more, tc.more)
			}
			if n := countStatus(sim.log(), http.StatusTooManyRequests); n > 0 {
				t.Errorf("simulator answered %d 429s", n)
			}
			t.Logf("%s: %d more orders while A was held", tc.name, more)
		})
	}
}

// listenHandler serves h on a new listener and returns its URL.
func listenHandler(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
