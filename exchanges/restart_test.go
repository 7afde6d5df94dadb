package exchanges_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
)

// Redis restarted without persistence in the middle of a window, under full
// load, with the Binance preset against the simulated exchange (minute
// windows scaled to 1 s). Before the restart the fleet has spent the
// window's weight; after it Redis is empty while the exchange still counts.
// With limiter.Options.RestartSpent 1 the limiter finds the new run_id before
// it answers the decisions that reconnected and charges each limit as spent
// until its window ends: the exchange answers no 429 or 418. Its cost: no
// request goes out until the longest window charged ends, here RAW_REQUESTS'
// 5 minutes (5 s scaled), although the fleet never comes near that limit
// (logged: the weight used in each 1 s window). By
// default (RestartSpent 0) the empty state grants the window again before the
// first answers' usage headers repair it: the 429s are logged, not asserted
// (how many depends on what was in flight).
func TestBinanceRestartMidWindow(t *testing.T) {
	for _, spent := range []float64{0, 1} {
		t.Run(fmt.Sprintf("RestartSpent=%v", spent), func(t *testing.T) {
			n429, n418, windows := binanceRestart(t, spent)
			t.Logf("RestartSpent %v: %d 429s, %d 418s; weight used per window (restart in window 2): %v", spent, n429, n418, windows)
			if spent == 1 {
				require.Zero(t, n429+n418, "429s and 418s after the restart")
			}
		})
	}
}

// binanceRestart drives the fleet for 6 weight windows from the start of a
// RAW_REQUESTS window (5 s), restarting its Redis 0.5 s into the third, and
// returns the exchange's 429s and 418s and the weight it accepted in each
// weight window.
func binanceRestart(t *testing.T, spent float64) (n429, n418 int, windows []int) {
	rls := []exchanges.BinanceRateLimit{
		{RateLimitType: exchanges.BinanceRequestWeight, Interval: "MINUTE", IntervalNum: 1, Limit: 1200},
		{RateLimitType: exchanges.BinanceRawRequests, Interval: "MINUTE", IntervalNum: 5, Limit: 61000},
		{RateLimitType: exchanges.BinanceOrders, Interval: "MINUTE", IntervalNum: 1, Limit: 120},
	}
	p, err := exchanges.Binance(exchanges.Scaled(exchanges.BinanceOptions{Hosts: []string{"127.0.0.1"}, RateLimits: rls}, 1.0/60))
	require.NoError(t, err)
	sim := newBinanceSim(t, p, rls)
	srv := redistest.Private(t)
	fleet := newFleetOn(t, p, srv.Addr(), limiter.Options{RestartSpent: spent})
	paths := []struct{ method, path string }{
		{"GET", "/api/v3/ticker/price?symbol=BTCUSDT"},
		{"GET", "/api/v3/depth?symbol=BTCUSDT&limit=100"},
		{"GET", "/api/v3/depth?symbol=BTCUSDT&limit=500"},
		{"GET", "/api/v3/account"},
		{"POST", "/api/v3/order?symbol=BTCUSDT&side=BUY&type=LIMIT"},
	}
	start := startAfterBoundary(5 * time.Second)
	stop := start.Add(6 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), stop)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var unexpected []error
	for _, pr := range fleet {
		for g := range 6 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(pr.id), uint64(g)))
				for ctx.Err() == nil {
					pe := paths[rng.IntN(len(paths))]
					req, err := http.NewRequestWithContext(ctx, pe.method, sim.srv.URL+pe.path, nil)
					if err != nil {
						panic(err)
					}
					req.Header.Set("X-MBX-APIKEY", "acct")
					_, _, err = pr.do(req)
					switch {
					case err == nil, expectedStop(err):
					case errors.Is(err, limiter.ErrUnavailable):
						time.Sleep(5 * time.Millisecond) // Redis down: fail closed, try again
					default:
						mu.Lock()
						unexpected = append(unexpected, err)
						mu.Unlock()
						return
					}
				}
			})
		}
	}
	// The restart: 0.5 s into the third window, when the fleet has long
	// spent its weight (it spends a window's 1200 in well under 0.5 s).
	time.Sleep(time.Until(start.Truncate(5 * time.Second).Add(2500 * time.Millisecond)))
	srv.Stop()
	require.NoError(t, srv.Start())
	wg.Wait()
	require.Empty(t, unexpected)

	hits := sim.log()
	first := start.Truncate(5 * time.Second).Unix()
	windows = make([]int, 6)
	weight := exchanges.RateLimitName(rls[0])
	for _, h := range hits {
		if w := int(h.at.Unix() - first); w >= 0 && w < len(windows) && h.status == http.StatusOK {
			windows[w] += h.cost[weight]
		}
	}
	if n := countStatus(hits, http.StatusTooManyRequests); n > 0 {
		sim.mu.Lock()
		t.Logf("denied: %v", sim.denied[:min(5, len(sim.denied))])
		sim.mu.Unlock()
	}
	return countStatus(hits, http.StatusTooManyRequests), countStatus(hits, http.StatusTeapot), windows
}
