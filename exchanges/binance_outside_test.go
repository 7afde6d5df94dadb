package exchanges_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/bestof"
	"github.com/redquota/redquota/middleware"
)

// The outside-client scenario of issue 21: four clients of 16 senders each
// behind the Binance preset with Headroom, and one client outside the fleet
// on the same IP (the simulator's one listener) that spends a third of each
// window's weight (5 requests of 80: GET /api/v3/ticker/24hr for every
// symbol, in parallel) at the window's start, every window, without
// redquota. The outside client is already running when the fleet starts, a
// third of the way into window 0. Windows are Binance's minute scaled to two
// seconds, with a window guard of 700 ms (the preset's would be 250 ms): on
// the shared two-core machine under -race, requests granted 250 ms before a
// window's end were seen to land in the next window (as
// TestBinanceWebSocketAndRESTShareOrders notes), and a fleet request landing
// in another window than the one it was charged to looks, to the headers,
// like the outsider's spending. Connections are opened before the run
// (warm): a cold connection's first request can take longer still.
//
// From window 1 on, the simulator must answer no 429 at all, to anyone
// (exact counts): the fleet leaves free what the headers showed the
// outsider spent. Over windows 1-10, at least 70% of the weight Binance
// allows must be accepted, outsider included (the bar; the fleet
// alone wants far more than its share, so what is missing is what the
// reserve kept free and nobody spent).
//
// Why the fleet sees the outsider in each window: its requests weigh 2 to
// 25 (8.5 on average), so its 800 units of a window take more than one wave
// of 64 requests, whose answers come after the outsider's burst and carry
// the count with it. The fleet needs about 50 requests a second to take its
// share, far below what this machine serves under -race, so the 70% bound
// measures the reserve, not the machine. A
// window where none does (the outsider late) is quiet; the reserve holds for
// two quiet windows in a row before it halves (limiter.Quota.Headroom).
func TestBinanceOutsideClient(t *testing.T) {
	rls := []exchanges.BinanceRateLimit{
		{RateLimitType: exchanges.BinanceRequestWeight, Interval: "MINUTE", IntervalNum: 1, Limit: 1200},
		{RateLimitType: exchanges.BinanceRawRequests, Interval: "MINUTE", IntervalNum: 5, Limit: 61000},
		{RateLimitType: exchanges.BinanceOrders, Interval: "MINUTE", IntervalNum: 1, Limit: 120},
		{RateLimitType: exchanges.BinanceOrders, Interval: "DAY", IntervalNum: 1, Limit: 200000},
	}
	p, err := exchanges.Binance(exchanges.Scaled(exchanges.BinanceOptions{
		Hosts: []string{"127.0.0.1"}, RateLimits: rls, Headroom: 0.5,
		Middleware: middleware.Options{WindowGuard: 700 * time.Millisecond},
	}, 2.0/60))
	if err != nil {
		t.Fatal(err)
	}
	bestof.Run(t, func(t *testing.T, use *bestof.Usage) {
		sim := newBinanceSim(t, p, rls)
		// Window 0 may draw 429s: nothing is learned yet, and while 64 requests
		// are on their way the headers cannot tell the outsider's units from the
		// fleet's own in flight (the server has not counted those yet), so the
		// fleet can grant past what the outsider left. Requests already on their
		// way then land inside the 429's backoff: the simulator's three such
		// violations would earn a 2-minute ban, and windows 1-10 would measure
		// the ban instead of the reserve. The simulator bans no one here; any
		// 429 from window 1 on fails the test all the same.
		sim.banAfter = 1 << 30
		fleet := newFleetOf(t, p, p, p, p)
		warm(t, fleet, p, sim.srv.URL+"/warm", 16) // not under /api/: not charged
		const windows = 10
		const period = 2 * time.Second
		start := startAfterBoundary(period).Truncate(period) // window 0's start
		stop := start.Add((windows + 1) * period)
		windowOf := func(at time.Time) int64 { return int64(at.Sub(start) / period) }

		// The outsider: a plain client, 5 × 80 weight at each window's start.
		outsider := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
		var owg sync.WaitGroup
		owg.Go(func() {
			for w := range windows + 1 {
				time.Sleep(time.Until(start.Add(time.Duration(w)*period + 2*time.Millisecond)))
				var wg sync.WaitGroup
				for range 5 {
					wg.Go(func() {
						resp, err := outsider.Get(sim.srv.URL + "/api/v3/ticker/24hr")
						if err != nil {
							t.Error(err)
							return
						}
						resp.Body.Close()
					})
				}
				wg.Wait()
			}
		})

		paths := []string{
			"/api/v3/ticker/price?symbol=BTCUSDT",
			"/api/v3/klines?symbol=BTCUSDT&interval=1m",
			"/api/v3/depth?symbol=BTCUSDT&limit=500",
			"/api/v3/depth?symbol=BTCUSDT&limit=100",
		}
		time.Sleep(time.Until(start.Add(period / 3)))
		drive(t, fleet, 16, stop, func(ctx context.Context, pr *proc, g int) error {
			rng := rand.New(rand.NewPCG(uint64(pr.id), uint64(g)))
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, sim.srv.URL+paths[rng.IntN(len(paths))], nil)
			if err != nil {
				return err
			}
			_, _, err = pr.do(req)
			return err
		})
		owg.Wait()

		hits := sim.log()
		const first = 1
		type tally struct{ fleet, outside, refused int }
		win := map[int64]*tally{}
		banned := 0
		for _, h := range hits {
			w := windowOf(h.at)
			if h.at.Before(start) {
				continue // warming up
			}
			if win[w] == nil {
				win[w] = &tally{}
			}
			x := win[w]
			switch {
			case h.status == http.StatusTeapot:
				banned++
			case h.status != http.StatusOK:
				x.refused++
			case h.cost["weight-1m"] == 80:
				x.outside += 80
			default:
				x.fleet += h.cost["weight-1m"]
			}
		}
		accepted, refused := 0, 0
		for w := int64(0); w < first+windows; w++ {
			x := win[w]
			if x == nil {
				x = &tally{}
			}
			t.Logf("window %d: fleet %d + outsider %d = %d of 1200, %d refused", w, x.fleet, x.outside, x.fleet+x.outside, x.refused)
			if w >= first {
				accepted += x.fleet + x.outside
				refused += x.refused
			}
		}
		share := float64(accepted) / float64(windows*1200)
		t.Logf("windows 1-%d: %d 429s, %d 418s, %.1f%% of the weight accepted", windows, refused, banned, 100*share)
		if refused+banned > 0 {
			sim.mu.Lock()
			t.Logf("denied: %v", sim.denied)
			sim.mu.Unlock()
			t.Errorf("after the first window the simulator answered %d 429s (and %d 418s in all), want 0", refused, banned)
		}
		if share < 0.70 {
			use.Errorf("%.1f%% of the allowed weight accepted over %d windows, want ≥ 70%%", 100*share, windows)
		}
	})
}
