package exchanges_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
	"github.com/redquota/redquota/wsguard"
)

// nopSocket is an open connection that reads nothing.
type nopSocket struct{}

func (nopSocket) Read(ctx context.Context) ([]byte, error) { <-ctx.Done(); return nil, ctx.Err() }
func (nopSocket) Write(context.Context, []byte) error      { return nil }
func (nopSocket) Close(int, string) error                  { return nil }

// Eight processes (each its own Redis client, Limiter and Guard) open
// connections as fast as their guards let them: the exchange's connection
// limit, simulated as a rolling window (Bybit: 500 in any 5 minutes, scaled
// by 1/60 to 5 s; OKX: 3 in any second, scaled by 3), is never exceeded, and
// a window fills to at least 95% of it at some point. Attempts are dialled in
// the process right after their turn; the windows are padded by 500 ms (a
// woken waiter under -race on a loaded machine dialled over 100 ms after
// its turn, into the next OKX window).
func TestWebSocketConnectLimits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   func() (wsguard.Options, error)
		n      int
		period time.Duration
		run    time.Duration
	}{
		{"bybit", func() (wsguard.Options, error) {
			return exchanges.BybitWebSocket(exchanges.Scaled(exchanges.BybitOptions{Guard: 500 * time.Millisecond}, 1.0/60))
		}, 500, 5 * time.Second, 7 * time.Second},
		{"okx", func() (wsguard.Options, error) {
			return exchanges.OKXWebSocket(exchanges.Scaled(exchanges.OKXOptions{Guard: 500 * time.Millisecond}, 3))
		}, 3, 3 * time.Second, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := tc.opts()
			if err != nil {
				t.Fatal(err)
			}
			addr := redistest.Shared(t).Addr()
			prefix := redistest.NewPrefix(t)
			var mu sync.Mutex
			server := slidingLog{n: tc.n, period: tc.period}
			var hits []windowHit
			dial := func(context.Context) (wsguard.Socket, error) {
				mu.Lock()
				defer mu.Unlock()
				now := time.Now()
				_, ok, _ := server.take(now, 1)
				hits = append(hits, windowHit{at: now, key: "conn", cost: 1, refused: !ok})
				if !ok {
					return nil, errors.New("429")
				}
				return nopSocket{}, nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.run)
			defer cancel()
			var wg sync.WaitGroup
			for range fleetSize {
				o := redistest.ClientOptions(addr)
				o.ReadTimeout, o.WriteTimeout = 5*time.Second, 5*time.Second
				rdb := redis.NewClient(o)
				t.Cleanup(func() { _ = rdb.Close() })
				g, err := wsguard.New(limiter.New(rdb, limiter.Options{Prefix: prefix, Timeout: 5 * time.Second}), opts)
				if err != nil {
					t.Fatal(err)
				}
				for range 4 {
					wg.Go(func() {
						for ctx.Err() == nil {
							c, err := g.Dial(ctx, dial)
							if err != nil {
								if !errors.Is(err, limiter.ErrWouldExceedDeadline) && ctx.Err() == nil {
									t.Errorf("dial: %v", err)
								}
								return
							}
							_ = c.Close(1000, "")
						}
					})
				}
			}
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if n := refusals(hits); n != 0 {
				t.Fatalf("the exchange refused %d of %d connection attempts", n, len(hits))
			}
			busiest := 0
			for i, h := range hits {
				n := 0
				for _, o := range hits[i:] {
					if o.at.Sub(h.at) < tc.period {
						n++
					}
				}
				busiest = max(busiest, n)
			}
			t.Logf("%d attempts, busiest window %d of %d", len(hits), busiest, tc.n)
			if float64(busiest) < 0.95*float64(tc.n) {
				t.Errorf("busiest window %d of %d", busiest, tc.n)
			}
		})
	}
}

// OKX's 60014 error event holds the connection quota; other messages do not.
func TestOKXWebSocketRefusals(t *testing.T) {
	opts, err := exchanges.OKXWebSocket(exchanges.OKXOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for msg, want := range map[string]bool{
		`{"event":"error","code":"60014","msg":"Requests too frequent."}`: true,
		`{"event":"error","code":"60012","msg":"Invalid request"}`:        false,
		`{"event":"subscribe","arg":{"channel":"tickers"}}`:               false,
	} {
		rs := opts.Refusals(wsguard.Signal{Message: []byte(msg)})
		if got := len(rs) == 1 && rs[0].Quota == "okx-ws-connections"; got != want {
			t.Errorf("%s: refusals %+v, want a hold of okx-ws-connections: %v", msg, rs, want)
		}
	}
	if rs := opts.Refusals(wsguard.Signal{Handshake: &wsguard.HandshakeError{StatusCode: 429}}); rs != nil {
		t.Errorf("handshake: %+v, want nothing beyond the guard's own hold", rs)
	}
}

// OKX's WebSocket orders count in their REST endpoint's window (one count
// for both channels): after 60 orders for BTC-USDT over WebSocket, a REST
// order for BTC-USDT from another process waits for the window, and one for
// ETH-USDT goes at once; a 50011 answer holds the order's window.
func TestOKXWebSocketOrdersShareREST(t *testing.T) {
	const scale = 10 // a 20 s window: nothing leaves it during the test
	var mu sync.Mutex
	sent := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent++
		mu.Unlock()
		fmt.Fprint(w, `{"code":"0","data":[]}`)
	}))
	t.Cleanup(srv.Close)
	p, err := exchanges.OKX(exchanges.Scaled(exchanges.OKXOptions{Hosts: []string{"127.0.0.1"}}, scale))
	if err != nil {
		t.Fatal(err)
	}
	wso, err := exchanges.OKXWebSocket(exchanges.Scaled(exchanges.OKXOptions{}, scale))
	if err != nil {
		t.Fatal(err)
	}
	fleet := newFleet(t, p)
	g, err := wsguard.New(fleet[0].lim, wso)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := g.Dial(ctx, func(context.Context) (wsguard.Socket, error) { return nopSocket{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, []byte(`{"op":"login","args":[{"apiKey":"uid-a","passphrase":"p","timestamp":"1","sign":"s"}]}`)); err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		if err := c.Send(ctx, []byte(fmt.Sprintf(`{"id":"%d","op":"order","args":[{"instId":"BTC-USDT","side":"buy","ordType":"limit","px":"1","sz":"1"}]}`, i))); err != nil {
			t.Fatalf("order %d: %v", i, err)
		}
	}
	if err := c.Send(ctx, []byte("ping")); err != nil {
		t.Fatalf("ping: %v", err)
	}
	order := func(inst string) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, _ := okxOrder(ctx, srv.URL, "uid-a", `{"instId":"`+inst+`","side":"buy"}`)
		_, _, err := fleet[1].do(req)
		return err
	}
	if err := order("BTC-USDT"); !errors.Is(err, middleware.ErrRateLimited) {
		t.Errorf("REST order after 60 WebSocket ones: %v, want ErrRateLimited", err)
	}
	if err := order("ETH-USDT"); err != nil {
		t.Errorf("REST order of another instrument: %v", err)
	}
	// A 50011 answer to an ETH-USDT order holds ETH-USDT's window.
	if err := c.Send(ctx, []byte(`{"id":"e1","op":"order","args":[{"instId":"ETH-USDT"}]}`)); err != nil {
		t.Fatal(err)
	}
	rs := wso.Refusals(wsguard.Signal{Message: []byte(`{"id":"e1","op":"order","code":"1","msg":"","data":[{"sCode":"50011"}]}`)})
	if len(rs) != 1 || rs[0].ID != "e1" {
		t.Errorf("refusals of a 50011 answer: %+v, want one for request e1", rs)
	}
	mu.Lock()
	defer mu.Unlock()
	if sent != 1 {
		t.Errorf("the server saw %d REST orders, want 1 (ETH-USDT)", sent)
	}
}
