// Demo: a fleet of trading processes sharing one exchange's rate limit through
// Redis, first calling the exchange for every request, then through the market
// cache, then through the market cache with a near cache in each process,
// which answers repeated reads without Redis (on a real Redis: miniredis has
// no CLIENT TRACKING, so there the near cache stays off).
//
//	go run ./examples/demo [-duration 10s] [-workers 8] [-limit 240] [-metrics :9464]
//
// With -metrics, the fleet's limiters, Transports, caches and Redis clients
// report to one Prometheus endpoint at that address's /metrics while it runs
// (make monitoring-demo scrapes it with a real Prometheus).
//
// The exchange is simulated on a local port: Binance's request weights,
// 30–80 ms per call, weight counted in clock-aligned 1 s windows (Binance's
// are a minute), 429 with Retry-After over the limit and 418 for a client that
// keeps sending during a Retry-After. Each worker has its own go-redis clients,
// limiter, rate-limited http.Client and market cache, as separate processes
// would: they share nothing but Redis. Redis is an embedded miniredis unless
// REDIS_URL is set.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redquota/redquota/examples/internal/exampleenv"
	"github.com/redquota/redquota/examples/internal/fakeexchange"
	"github.com/redquota/redquota/market"
	"github.com/redquota/redquota/middleware"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h: flag has printed the usage
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

var symbols = []string{"BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT"}

// phaseResult is what one phase measured.
type phaseResult struct {
	name     string
	start    time.Time
	elapsed  time.Duration
	requests int64
	errs     int64
	firstErr error
	weight   int64 // what the answered requests would cost the exchange uncached
	lat      []time.Duration
	exchange fakeexchange.Stats
	hits     int64 // cache hits and misses, cached phases only
	misses   int64
	near     bool  // the near-cache phase
	nearHits int64 // hits the near cache answered without Redis
	nearLive bool  // every worker's near cache was live at the end
	mw       middleware.Stats
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stdout)
	duration := fs.Duration("duration", 10*time.Second, "how long to run, the three phases together (a third each: without the cache, with it, with a near cache too)")
	workers := fs.Int("workers", 8, "trading processes to simulate, each with its own Redis clients, limiter and cache")
	limit := fs.Int("limit", 240, "request weight the simulated exchange allows per 1 s window")
	metrics := fs.String("metrics", "", exampleenv.MetricsFlag)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *duration < 2*time.Second || *workers < 1 || *limit < 10 {
		return errors.New("need -duration ≥ 2s, -workers ≥ 1 and -limit ≥ 10")
	}

	env, err := exampleenv.Start(ctx)
	if err != nil {
		return err
	}
	defer env.Close()
	ex := fakeexchange.New(fakeexchange.Options{Limit: *limit, Window: time.Second})
	defer ex.Close()
	providers, stopMetrics, err := exampleenv.ServeMetrics(*metrics)
	if err != nil {
		return err
	}
	defer stopMetrics()

	prefix := exampleenv.Prefix("demo")
	fleet := make([]*worker, *workers)
	for i := range fleet {
		if fleet[i], err = newWorker(i, env, prefix, ex, symbols, providers); err != nil {
			return err
		}
		defer fleet[i].close()
	}
	warm, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, w := range fleet {
		if err := w.warm(warm); err != nil {
			return fmt.Errorf("warming up worker %d: %w", w.id, err)
		}
	}
	ex.TakeStats()

	ttls := marketTTLs
	fmt.Fprintf(stdout, "redquota demo: %d workers, each with its own go-redis clients, limiter, RoundTripper and market cache\n", *workers)
	fmt.Fprintf(stdout, "redis:    %s\n", env)
	if *metrics != "" {
		fmt.Fprintf(stdout, "metrics:  Prometheus text format on http://%s/metrics\n", *metrics)
	}
	fmt.Fprintf(stdout, "exchange: simulated Binance on %s: %d weight per clock-aligned %s window, 30-80 ms per call,\n", ex.URL(), ex.Limit(), ex.Window())
	fmt.Fprintf(stdout, "          429 + Retry-After over the limit, 418 after %d requests during a Retry-After\n", 3)
	fmt.Fprintf(stdout, "requests: %d symbols; %d0%% tickers (weight %d, cached %v), %d0%% order books (weight %d, cached %v)\n",
		len(symbols), 10-bookShare, fakeexchange.TickerWeight, ttls.TickerTTL, bookShare, fakeexchange.DepthWeight(depthLimit), ttls.OrderBookTTL)
	fmt.Fprintf(stdout, "watch:    in another terminal, from the repository's root (-duration 60s gives you time):\n          %s\n\n", env.WatchCommand(prefix))

	tty := isTerminal(stdout)
	// Phases are whole windows, starting at a window's start, so that the share
	// of the limit used is exact.
	whole := duration.Round(ex.Window())
	first := max(ex.Window(), (whole / 3).Round(ex.Window()))
	second := max(ex.Window(), ((whole - first) / 2).Round(ex.Window()))
	phases := []struct {
		name string
		mode phaseMode
		d    time.Duration
	}{
		{"no cache", uncached, first},
		{"market cache", cached, second},
		{"+ near cache", nearCached, max(ex.Window(), whole-first-second)},
	}
	var results []phaseResult
	for i, p := range phases {
		r, err := runPhase(ctx, stdout, tty, ex, fleet, p.name, p.mode, p.d, uint64(i))
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	fmt.Fprintln(stdout)
	printTable(stdout, ex, results, env.Embedded())
	if err := verdict(results); err != nil {
		return err
	}
	return ctx.Err()
}

// verdict is the demo's exit status: an error when the exchange ever answered
// 429 or 418, or when a phase answered no request at all (Redis went away:
// under the limiter's default FailClosed every request then fails).
func verdict(results []phaseResult) error {
	var bad []string
	for _, r := range results {
		if n := r.exchange.TooManyRequests + r.exchange.Banned; n > 0 {
			bad = append(bad, fmt.Sprintf("%s: %d 429s and %d 418s", r.name, r.exchange.TooManyRequests, r.exchange.Banned))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("the exchange's limit was overshot (%s)", strings.Join(bad, "; "))
	}
	for _, r := range results {
		if r.requests == 0 && r.errs > 0 {
			return fmt.Errorf("phase %q answered no request: %d errors, the first: %v", r.name, r.errs, r.firstErr)
		}
	}
	return nil
}

// phaseMode is where a phase's requests are answered from.
type phaseMode int

const (
	uncached   phaseMode = iota // the exchange, every time
	cached                      // the market cache
	nearCached                  // the market cache with a near cache
)

// market returns the worker's market of mode, nil for uncached.
func (m phaseMode) market(w *worker) *market.Market {
	switch m {
	case cached:
		return w.market
	case nearCached:
		return w.near
	}
	return nil
}

// runPhase runs every worker for d and collects what they and the exchange saw.
func runPhase(ctx context.Context, stdout io.Writer, tty bool, ex *fakeexchange.Exchange, fleet []*worker,
	name string, mode phaseMode, d time.Duration, seed uint64) (phaseResult, error) {
	// Start just after a window starts.
	now := time.Now()
	if err := sleep(ctx, now.Truncate(ex.Window()).Add(ex.Window()+5*time.Millisecond).Sub(now)); err != nil {
		return phaseResult{}, err
	}
	// Cancelled at the end, not given a deadline: see worker.fetchTicker.
	phase, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := time.AfterFunc(d, cancel)
	defer stop.Stop()
	start := time.Now()
	var wg sync.WaitGroup
	for _, w := range fleet {
		wg.Go(func() { w.run(phase, mode.market(w), seed) })
	}

	every := time.Second
	if tty {
		every = 200 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	width := 0
	show := func(final bool) {
		var n, errs int64
		for _, w := range fleet {
			n += w.requests.Load()
			errs += w.errs.Load()
		}
		st := ex.Stats()
		el := time.Since(start)
		last := "-"
		if w, ok := st.Windows[time.Now().Truncate(ex.Window()).Add(-ex.Window())]; ok {
			last = fmt.Sprint(w)
		}
		line := fmt.Sprintf("%-12s %5.1fs  requests %7d (%5.0f/s)  exchange calls %5d  last window %3s/%d weight  429s %d  418s %d",
			name, el.Seconds(), n, float64(n)/max(el.Seconds(), 0.001), st.Calls, last, ex.Limit(), st.TooManyRequests, st.Banned)
		if errs > 0 {
			line += fmt.Sprintf("  errors %d", errs)
		}
		if final {
			line += "  done"
		}
		if !tty {
			fmt.Fprintln(stdout, line)
			return
		}
		pad := max(0, width-len(line))
		width = len(line)
		fmt.Fprint(stdout, "\r"+line+strings.Repeat(" ", pad))
		if final {
			fmt.Fprintln(stdout)
		}
	}
loop:
	for {
		select {
		case <-tick.C:
			show(false)
		case <-done:
			break loop
		}
	}
	show(true)

	r := phaseResult{name: name, start: start, elapsed: time.Since(start), near: mode == nearCached, nearLive: true}
	for _, w := range fleet {
		r.requests += w.requests.Load()
		r.errs += w.errs.Load()
		r.weight += w.weight.Load()
		r.lat = append(r.lat, w.lat...)
		if err := w.err(); err != nil && r.firstErr == nil {
			r.firstErr = err
		}
		s := w.tr.Stats()
		r.mw.Holds += s.Holds
		r.mw.Syncs += s.Syncs
	}
	r.exchange = ex.TakeStats()
	if mode != uncached {
		for _, w := range fleet {
			c := w.plainC
			if mode == nearCached {
				c = w.nearC
			}
			st, _ := c.Stats(ctx) // the counters are returned even when INFO fails
			r.hits += st.Hits
			r.misses += st.Misses
			r.nearHits += st.NearHits
			r.nearLive = r.nearLive && st.NearLive
		}
	}
	slices.Sort(r.lat)
	return r, ctx.Err()
}

// printTable writes the closing table: one column per phase.
// embedded says the Redis is the embedded miniredis (no CLIENT TRACKING).
func printTable(w io.Writer, ex *fakeexchange.Exchange, rs []phaseResult, embedded bool) {
	row := func(label string, cell func(r phaseResult) string) {
		fmt.Fprintf(w, "  %-30s", label)
		for _, r := range rs {
			fmt.Fprintf(w, " %14s", cell(r))
		}
		fmt.Fprintln(w)
	}
	row("", func(r phaseResult) string { return r.name })
	row("duration", func(r phaseResult) string { return fmt.Sprintf("%.1fs", r.elapsed.Seconds()) })
	row("requests", func(r phaseResult) string { return fmt.Sprint(r.requests) })
	row("exchange calls", func(r phaseResult) string { return fmt.Sprint(r.exchange.Calls) })
	row("cache hit rate", func(r phaseResult) string {
		if r.hits+r.misses == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*float64(r.hits)/float64(r.hits+r.misses))
	})
	row("exchange calls saved", func(r phaseResult) string {
		if r.hits+r.misses == 0 {
			return "-"
		}
		return fmt.Sprint(max(0, r.requests-r.exchange.Calls))
	})
	row("Redis reads", func(r phaseResult) string {
		if r.hits+r.misses == 0 {
			return "-"
		}
		return fmt.Sprint(r.hits + r.misses - r.nearHits)
	})
	row("Redis reads saved (near)", func(r phaseResult) string {
		switch {
		case !r.near:
			return "-"
		case !r.nearLive:
			return "off*"
		}
		return fmt.Sprintf("%d (%.0f%%)", r.nearHits, 100*float64(r.nearHits)/float64(max(1, r.hits+r.misses)))
	})
	row("429s", func(r phaseResult) string { return fmt.Sprint(r.exchange.TooManyRequests) })
	row("418s", func(r phaseResult) string { return fmt.Sprint(r.exchange.Banned) })
	row("exchange limit used", func(r phaseResult) string {
		return fmt.Sprintf("%.0f%%", 100*float64(used(r, ex))/float64(ex.Limit()*windows(r, ex)))
	})
	row("busiest window (weight)", func(r phaseResult) string { return fmt.Sprintf("%d/%d", r.exchange.Peak(), ex.Limit()) })
	row("latency p50", func(r phaseResult) string { return fmtLatency(percentile(r.lat, 50)) })
	row("latency p99", func(r phaseResult) string { return fmtLatency(percentile(r.lat, 99)) })
	row("usage-header syncs / holds", func(r phaseResult) string { return fmt.Sprintf("%d / %d", r.mw.Syncs, r.mw.Holds) })
	row("errors", func(r phaseResult) string { return fmt.Sprint(r.errs) })
	fmt.Fprintln(w)
	for _, r := range rs {
		switch {
		case !r.near || r.nearLive:
		case embedded:
			fmt.Fprintf(w, "*: the near cache was off (no CLIENT TRACKING on this Redis: miniredis has none); set REDIS_URL to a real Redis 6+ to see it\n")
		default:
			fmt.Fprintf(w, "*: the near cache was off: it needs a CLIENT TRACKING connection to every master (Redis 6+, reachable, HELLO 3 allowed)\n")
		}
	}
	for _, r := range rs {
		if r.firstErr != nil {
			fmt.Fprintf(w, "%s: first error: %v\n", r.name, r.firstErr)
		}
	}
	last := rs[len(rs)-1]
	if last.requests == 0 {
		return
	}
	allowed := ex.Limit() * windows(last, ex)
	fmt.Fprintf(w, "Without the cache, the %d requests of the %q phase would have cost %d weight,\n", last.requests, last.name, last.weight)
	fmt.Fprintf(w, "%.1f times the %d the exchange allows in %d windows: the limiter would have made them wait.\n",
		float64(last.weight)/float64(allowed), allowed, windows(last, ex))
}

// used is the weight the exchange counted in the phase's own windows: not the
// calls granted before the phase ended that landed in the next one.
func used(r phaseResult, ex *fakeexchange.Exchange) int {
	first := r.start.Truncate(ex.Window())
	sum := 0
	for i := range windows(r, ex) {
		sum += r.exchange.Windows[first.Add(time.Duration(i)*ex.Window())]
	}
	return sum
}

// windows is the number of exchange windows a phase ran for.
func windows(r phaseResult, ex *fakeexchange.Exchange) int {
	return max(1, int(r.elapsed.Round(ex.Window())/ex.Window()))
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// percentile returns the p-th percentile of sorted, 0 when empty.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

func fmtLatency(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < 10*time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(100 * time.Millisecond).String()
}

// isTerminal reports whether w is a terminal, where the progress line is
// redrawn in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
