package exchanges_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
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
			return exchanges.BybitWebSocket(exchanges.BybitOptions{TimeScale: 1.0 / 60, Guard: 500 * time.Millisecond})
		}, 500, 5 * time.Second, 7 * time.Second},
		{"okx", func() (wsguard.Options, error) {
			return exchanges.OKXWebSocket(exchanges.OKXOptions{TimeScale: 3, Guard: 500 * time.Millisecond})
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
