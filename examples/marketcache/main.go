// Market cache: typed market data in Redis with a TTL per kind, fetched
// through on a miss, invalidated by symbol, exchange or strategy.
//
//	go run ./examples/marketcache [-duration 3s] [-readers 4] [-metrics :9464]
//
// With -metrics, the market, its cache and its Redis client report to a
// Prometheus endpoint at that address's /metrics while it runs.
//
// The "exchange" here is a function that takes 50 ms and counts its calls.
// It runs on an embedded miniredis unless REDIS_URL is set.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/examples/internal/exampleenv"
	"github.com/redquota/redquota/market"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h: flag has printed the usage
		}
		fmt.Fprintln(os.Stderr, "marketcache:", err)
		os.Exit(1)
	}
}

// slowAPI stands in for an exchange: 50 ms a call, and a count of calls.
type slowAPI struct{ calls atomic.Int64 }

func (a *slowAPI) ticker(symbol string) func(context.Context) (market.Ticker, error) {
	return func(ctx context.Context) (market.Ticker, error) {
		a.calls.Add(1)
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return market.Ticker{}, ctx.Err()
		}
		p := 100 + rand.Float64()
		return market.Ticker{Symbol: symbol, Price: p, Bid: p - 0.01, Ask: p + 0.01, Time: time.Now()}, nil
	}
}

func (a *slowAPI) book(symbol string) func(context.Context) (market.OrderBook, error) {
	return func(ctx context.Context) (market.OrderBook, error) {
		a.calls.Add(1)
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return market.OrderBook{}, ctx.Err()
		}
		return market.OrderBook{Symbol: symbol, Time: time.Now(),
			Bids: []market.Level{{Price: 99.99, Size: 1}, {Price: 99.98, Size: 2}},
			Asks: []market.Level{{Price: 100.01, Size: 1}, {Price: 100.02, Size: 3}}}, nil
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("marketcache", flag.ContinueOnError)
	fs.SetOutput(stdout)
	duration := fs.Duration("duration", 3*time.Second, "how long the readers read")
	readers := fs.Int("readers", 4, "goroutines reading tickers and order books")
	metrics := fs.String("metrics", "", exampleenv.MetricsFlag)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *duration <= 0 || *readers < 1 {
		return errors.New("need -duration > 0 and -readers ≥ 1")
	}
	env, err := exampleenv.Start(ctx)
	if err != nil {
		return err
	}
	defer env.Close()
	rdb := env.NewClient()
	defer rdb.Close()
	providers, stopMetrics, err := exampleenv.ServeMetrics(*metrics)
	if err != nil {
		return err
	}
	defer stopMetrics()
	if err := exampleenv.Instrument(providers, rdb); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "redis:", env)

	// The seed's TTLs are the defaults: tickers 2 s, order books 500 ms,
	// trades 10 s, candles their interval, signals 30 s.
	c := cache.New(rdb, cache.Options{Prefix: exampleenv.Prefix("marketcache"), Telemetry: providers})
	m := market.New(c, market.Options{Telemetry: providers})
	api := &slowAPI{}
	symbols := []string{"BTCUSDT", "ETHUSDT", "SOLUSDT"}

	// 1. Fetch-through: a hit costs one GET; a miss calls the API once however
	// many readers miss together, and caches the answer for its kind's TTL.
	fmt.Fprintf(stdout, "\n1. %d readers, %d symbols, tickers and order books, for %v:\n", *readers, len(symbols), *duration)
	read, cancel := context.WithCancel(ctx)
	stop := time.AfterFunc(*duration, cancel)
	defer stop.Stop()
	var wg sync.WaitGroup
	var reads atomic.Int64
	var firstErr atomic.Pointer[error]
	for range *readers {
		wg.Go(func() {
			for read.Err() == nil {
				sym := symbols[rand.IntN(len(symbols))]
				var err error
				if rand.IntN(2) == 0 {
					_, err = market.OrFetch(read, m, "binance", sym, api.ticker(sym))
				} else {
					_, err = market.OrFetch(read, m, "binance", sym, api.book(sym))
				}
				switch {
				case read.Err() != nil:
				case err != nil:
					firstErr.CompareAndSwap(nil, &err)
				default:
					reads.Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	cancel()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	st, _ := c.Stats(ctx)
	fmt.Fprintf(stdout, "   reads %d, API calls %d, cache hit rate %.1f%%\n", reads.Load(), api.calls.Load(), 100*st.HitRate)

	// 2. Batches: many tickers of one exchange in one script call, read back
	// with one MGET.
	fmt.Fprintln(stdout, "\n2. batch write and read:")
	if err := m.SetTickers(ctx, "coinbase", map[string]market.Ticker{
		"BTC-USD": {Symbol: "BTC-USD", Price: 45000.5},
		"ETH-USD": {Symbol: "ETH-USD", Price: 2500.25},
	}); err != nil {
		return err
	}
	ts, err := m.GetTickers(ctx, "coinbase", []string{"BTC-USD", "ETH-USD", "SOL-USD"})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "   asked 3, found %d: BTC-USD %.2f, ETH-USD %.2f\n", len(ts), ts["BTC-USD"].Price, ts["ETH-USD"].Price)

	// 3. Invalidation: a symbol on every exchange, or everything of one exchange.
	fmt.Fprintln(stdout, "\n3. invalidation:")
	calls := api.calls.Load()
	if _, err := m.InvalidateSymbol(ctx, "BTCUSDT"); err != nil {
		return err
	}
	if _, err := market.OrFetch(ctx, m, "binance", "BTCUSDT", api.ticker("BTCUSDT")); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "   after InvalidateSymbol(BTCUSDT), reading its ticker called the API %d time(s)\n", api.calls.Load()-calls)
	n, err := m.InvalidateExchange(ctx, "coinbase")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "   InvalidateExchange(coinbase) deleted %d values\n", n)

	// 4. Strategy signals, invalidated by strategy.
	fmt.Fprintln(stdout, "\n4. signals:")
	sig := market.Signal{Action: "BUY", Price: 45000, Confidence: 0.85, Strategy: "momentum", Time: time.Now()}
	if err := m.SetSignal(ctx, "momentum", "BTCUSDT", sig, 0); err != nil {
		return err
	}
	got, found, err := market.Get[market.Signal](ctx, m, "momentum", "BTCUSDT")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "   momentum/BTCUSDT: found %t, %s at %.0f (confidence %.2f)\n", found, got.Action, got.Price, got.Confidence)
	if n, err = m.InvalidateSignals(ctx, "momentum"); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "   InvalidateSignals(momentum) deleted %d\n", n)

	// 5. API-call counters, per endpoint and window.
	fmt.Fprintln(stdout, "\n5. API-call counter:")
	for range 3 {
		if _, err := m.IncrementAPICalls(ctx, "binance", "/api/v3/ticker", 0); err != nil {
			return err
		}
	}
	counted, err := m.APICalls(ctx, "binance", "/api/v3/ticker", 0)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "   /api/v3/ticker calls this minute: %d\n", counted)

	st, err = c.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ncache stats: hits %d, misses %d, hit rate %.1f%%, loads %d, errors %d, breaker %s; redis keys %d",
		st.Hits, st.Misses, 100*st.HitRate, st.Loads, st.Errors, st.Breaker, st.Keys)
	if st.UsedMemory > 0 { // miniredis does not report memory
		fmt.Fprintf(stdout, ", memory %d KiB", st.UsedMemory/1024)
	}
	fmt.Fprintln(stdout)
	return nil
}
