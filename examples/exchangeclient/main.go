// Exchange client: an http.Client whose Transport keeps every process of a
// fleet inside an exchange's request-weight limit, shared through Redis.
//
//	go run ./examples/exchangeclient [-duration 3s] [-processes 2] [-metrics :9464]
//
// With -metrics, the processes' limiters, Transports and Redis clients report
// to a Prometheus endpoint at that address's /metrics while it runs.
//
// It talks to a simulated Binance-like exchange on a local port (weight
// counted in clock-aligned 1 s windows, 429 with Retry-After over the limit)
// and runs on an embedded miniredis unless REDIS_URL is set.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/examples/internal/exampleenv"
	"github.com/redquota/redquota/examples/internal/fakeexchange"
	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
	"github.com/redquota/redquota/telemetry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h: flag has printed the usage
		}
		fmt.Fprintln(os.Stderr, "exchangeclient:", err)
		os.Exit(1)
	}
}

// client is a minimal exchange client. It holds no rate-limit code of its own:
// its http.Client's Transport does all of it.
type client struct {
	base string
	http *http.Client
	tr   *middleware.Transport
	rdb  redis.UniversalClient
}

// newClient is what each process does at start-up: its own go-redis client
// and limiter, and an http.Client wrapped by the Transport.
func newClient(env *exampleenv.Env, prefix string, ex *fakeexchange.Exchange, p telemetry.Providers) (*client, error) {
	rdb := env.NewLimiterClient()
	if err := exampleenv.Instrument(p, rdb); err != nil {
		_ = rdb.Close()
		return nil, err
	}
	lim := limiter.New(rdb, limiter.Options{Prefix: prefix, Telemetry: p})

	// Every limit the exchange counts for our IP in one quota: a 429 then holds
	// all of it. Binance counts request weight per minute; this exchange per second.
	weight := limiter.Quota{Name: "binance", Limits: []limiter.NamedLimit{
		{Name: "weight", Limit: limiter.Limit{Rate: ex.Limit(), Period: ex.Window(), Algorithm: limiter.FixedWindow}},
	}}
	// Learn the exchange's own count from X-MBX-USED-WEIGHT-1S.
	usage := []middleware.UsageParser{exchanges.BinanceUsage(map[string]string{ex.Interval(): "weight"}, nil)}
	tr, err := middleware.NewTransport(nil, lim, middleware.Options{WindowGuard: 100 * time.Millisecond, Telemetry: p},
		middleware.Rule{Method: http.MethodGet, PathPrefix: "/api/v3/ticker/24hr", Quota: weight, Usage: usage,
			Cost: limiter.Cost{"weight": fakeexchange.TickerWeight}},
		middleware.Rule{Method: http.MethodGet, PathPrefix: "/api/v3/depth", Quota: weight, Usage: usage,
			Charges: func(r *http.Request, _ []byte) ([]limiter.Charge, error) {
				n, err := strconv.Atoi(r.URL.Query().Get("limit"))
				if err != nil {
					return nil, fmt.Errorf("depth limit: %w", err)
				}
				return []limiter.Charge{{Quota: weight, Cost: limiter.Cost{"weight": fakeexchange.DepthWeight(n)}}}, nil
			}},
		middleware.Rule{PathPrefix: "/api/", Quota: weight, Usage: usage, Cost: limiter.Cost{"weight": 1}},
	)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return &client{base: ex.URL(), http: &http.Client{Transport: tr, Timeout: 10 * time.Second}, tr: tr, rdb: rdb}, nil
}

func (c *client) close() {
	c.http.CloseIdleConnections()
	_ = c.rdb.Close()
}

// ticker fetches a symbol's 24 h ticker (weight 2).
func (c *client) ticker(ctx context.Context, symbol string) (fakeexchange.Ticker24hr, int, error) {
	var t fakeexchange.Ticker24hr
	code, err := c.get(ctx, "/api/v3/ticker/24hr?"+url.Values{"symbol": {symbol}}.Encode(), &t)
	return t, code, err
}

// depth fetches a symbol's order book (weight 5 for up to 100 levels).
func (c *client) depth(ctx context.Context, symbol string, limit int) (fakeexchange.Depth, int, error) {
	var d fakeexchange.Depth
	code, err := c.get(ctx, "/api/v3/depth?"+url.Values{"symbol": {symbol}, "limit": {strconv.Itoa(limit)}}.Encode(), &d)
	return d, code, err
}

func (c *client) get(ctx context.Context, path string, dst any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(dst)
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("exchangeclient", flag.ContinueOnError)
	fs.SetOutput(stdout)
	duration := fs.Duration("duration", 3*time.Second, "how long the processes call the exchange flat out")
	procs := fs.Int("processes", 2, "processes sharing the limit, each with its own Redis client and limiter")
	metrics := fs.String("metrics", "", exampleenv.MetricsFlag)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *duration <= 0 || *procs < 1 {
		return errors.New("need -duration > 0 and -processes ≥ 1")
	}
	env, err := exampleenv.Start(ctx)
	if err != nil {
		return err
	}
	defer env.Close()
	ex := fakeexchange.New(fakeexchange.Options{Limit: 60, Window: time.Second})
	defer ex.Close()
	providers, stopMetrics, err := exampleenv.ServeMetrics(*metrics)
	if err != nil {
		return err
	}
	defer stopMetrics()
	prefix := exampleenv.Prefix("exchangeclient")
	clients := make([]*client, *procs)
	for i := range clients {
		if clients[i], err = newClient(env, prefix, ex, providers); err != nil {
			return err
		}
		defer clients[i].close()
	}
	fmt.Fprintln(stdout, "redis:   ", env)
	fmt.Fprintf(stdout, "exchange: %d weight per %s window; %d processes\n\n", ex.Limit(), ex.Window(), *procs)

	// 1. Every process calls as fast as it can, 4 goroutines each; the
	// Transports make them wait their turns, so the exchange never says 429.
	fmt.Fprintf(stdout, "1. %d processes × 4 goroutines calling flat out for %v:\n", *procs, *duration)
	flat, cancel := context.WithCancel(ctx)
	stopAt := time.AfterFunc(*duration, cancel)
	defer stopAt.Stop()
	var wg sync.WaitGroup
	var ok atomic.Int64
	var firstErr atomic.Pointer[error]
	for i, c := range clients {
		for g := range 4 {
			wg.Go(func() {
				for flat.Err() == nil {
					var err error
					if (i+g)%2 == 0 {
						_, _, err = c.ticker(flat, "BTCUSDT")
					} else {
						_, _, err = c.depth(flat, "ETHUSDT", 100)
					}
					switch {
					case flat.Err() != nil:
					case err != nil:
						firstErr.CompareAndSwap(nil, &err)
					default:
						ok.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	cancel()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	st := ex.TakeStats()
	starts := make([]time.Time, 0, len(st.Windows))
	for t := range st.Windows {
		starts = append(starts, t)
	}
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	for _, t := range starts {
		fmt.Fprintf(stdout, "   window %s: weight %3d/%d\n", t.Format("15:04:05"), st.Windows[t], ex.Limit())
	}
	fmt.Fprintf(stdout, "   %d answers; 429s: %d, 418s: %d\n\n", ok.Load(), st.TooManyRequests, st.Banned)

	// 2. Someone outside the fleet (a script run by hand on the same IP) spends
	// the rest of the window. Our limiter did not see it, so the next request
	// goes out and is answered 429 with Retry-After: the Transport holds the
	// quota in Redis, and every process waits, not just the one that was told.
	fmt.Fprintln(stdout, "2. another client on our IP spends a whole window's weight:")
	now := time.Now()
	select { // at the start of a window, where our own limiter has room
	case <-time.After(now.Truncate(ex.Window()).Add(ex.Window() + 10*time.Millisecond).Sub(now)):
	case <-ctx.Done():
		return ctx.Err()
	}
	ex.Spend(ex.Limit())
	a, b := clients[0], clients[len(clients)-1]
	_, code, err := a.ticker(ctx, "BTCUSDT")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "   process 1: answered %d; hold placed in Redis: %t\n", code, a.tr.Stats().Holds > 0)
	start := time.Now()
	_, code, err = b.ticker(ctx, "BTCUSDT")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "   process %d: waited %v for the hold to end, then answered %d\n\n", len(clients), time.Since(start).Round(10*time.Millisecond), code)

	var sum middleware.Stats
	for _, c := range clients {
		s := c.tr.Stats()
		sum.Sent += s.Sent
		sum.TooManyRequests += s.TooManyRequests
		sum.Holds += s.Holds
		sum.Syncs += s.Syncs
		sum.Unmatched += s.Unmatched
	}
	fmt.Fprintf(stdout, "transport stats, all processes: sent %d, 429s seen %d, holds %d, usage syncs %d, unmatched (sent unlimited) %d\n",
		sum.Sent, sum.TooManyRequests, sum.Holds, sum.Syncs, sum.Unmatched)
	return nil
}
