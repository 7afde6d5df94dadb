package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/examples/internal/exampleenv"
	"github.com/redquota/redquota/examples/internal/fakeexchange"
	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/market"
	"github.com/redquota/redquota/middleware"
	"github.com/redquota/redquota/telemetry"
)

const (
	exchangeName = "binance"
	depthLimit   = 100                   // levels asked of /api/v3/depth: weight 5
	bookShare    = 3                     // in 10 requests, order books; the rest tickers
	think        = 10 * time.Millisecond // a worker's pause between requests
	callTimeout  = 5 * time.Second       // the longest an exchange call may take, waiting included
)

// worker is one trading process: its own go-redis clients, limiter, rate
// limited http.Client and market cache, sharing only Redis with the others.
type worker struct {
	id       int
	base     string
	symbols  []string
	limRDB   redis.UniversalClient
	cacheRDB redis.UniversalClient
	tr       *middleware.Transport
	http     *http.Client
	market   *market.Market
	near     *market.Market // the same data through a cache with a near cache
	plainC   *cache.Cache   // market's cache
	nearC    *cache.Cache   // near's cache

	requests atomic.Int64 // answered requests, this phase
	errs     atomic.Int64 // failed requests, this phase
	weight   atomic.Int64 // weight the answered requests would cost uncached, this phase
	firstErr atomic.Pointer[error]
	lat      []time.Duration // latencies of answered requests, this phase
	inflight sync.WaitGroup  // exchange calls under way
}

// binanceQuota is Binance's request-weight limit scaled to the simulated
// exchange's window: counted in clock-aligned fixed windows, as Binance does.
func binanceQuota(ex *fakeexchange.Exchange) limiter.Quota {
	return limiter.Quota{Name: exchangeName, Limits: []limiter.NamedLimit{
		{Name: "weight", Limit: limiter.Limit{Rate: ex.Limit(), Period: ex.Window(), Algorithm: limiter.FixedWindow}},
	}}
}

// newWorker builds a worker's clients. Two go-redis clients, as the limiter
// recommends: the limiter's without retries, the cache's with them. Each
// reports its metrics to p.
func newWorker(id int, env *exampleenv.Env, prefix string, ex *fakeexchange.Exchange, symbols []string, p telemetry.Providers) (*worker, error) {
	w := &worker{id: id, base: ex.URL(), symbols: symbols, limRDB: env.NewLimiterClient(), cacheRDB: env.NewClient()}
	if err := exampleenv.Instrument(p, w.limRDB, w.cacheRDB); err != nil {
		_ = w.limRDB.Close()
		_ = w.cacheRDB.Close()
		return nil, err
	}
	lim := limiter.New(w.limRDB, limiter.Options{Prefix: prefix, Telemetry: p})
	q := binanceQuota(ex)
	usage := []middleware.UsageParser{exchanges.BinanceUsage(map[string]string{ex.Interval(): "weight"}, nil)}
	var err error
	w.tr, err = middleware.NewTransport(&http.Transport{MaxIdleConnsPerHost: 16}, lim,
		middleware.Options{
			// A request granted in a window's last 100 ms may reach the exchange in
			// the next window: charge it there instead.
			WindowGuard: 100 * time.Millisecond,
			Telemetry:   p,
		},
		middleware.Rule{Method: http.MethodGet, PathPrefix: "/api/v3/depth", Quota: q, Usage: usage,
			Charges: func(r *http.Request, _ []byte) ([]limiter.Charge, error) {
				n := 100
				if v := r.URL.Query().Get("limit"); v != "" {
					var err error
					if n, err = strconv.Atoi(v); err != nil {
						return nil, fmt.Errorf("depth limit %q: %w", v, err)
					}
				}
				return []limiter.Charge{{Quota: q, Cost: limiter.Cost{"weight": fakeexchange.DepthWeight(n)}}}, nil
			}},
		middleware.Rule{Method: http.MethodGet, PathPrefix: "/api/v3/ticker/24hr", Quota: q, Usage: usage,
			Cost: limiter.Cost{"weight": fakeexchange.TickerWeight}},
		middleware.Rule{PathPrefix: "/api/", Quota: q, Usage: usage, Cost: limiter.Cost{"weight": 1}},
	)
	if err != nil {
		_ = w.limRDB.Close()
		_ = w.cacheRDB.Close()
		return nil, err
	}
	w.http = &http.Client{Transport: w.tr}
	mo := marketTTLs
	mo.Telemetry = p
	w.plainC = cache.New(w.cacheRDB, cache.Options{Prefix: prefix, Telemetry: p})
	w.nearC = cache.New(w.cacheRDB, cache.Options{Prefix: prefix, Telemetry: p, NearMaxBytes: 16 << 20})
	w.market, w.near = market.New(w.plainC, mo), market.New(w.nearC, mo)
	return w, nil
}

// marketTTLs are the seed's TTLs (market's defaults), named for the demo's
// report.
var marketTTLs = market.Options{TickerTTL: 2 * time.Second, OrderBookTTL: 500 * time.Millisecond}

// warm opens the worker's Redis and HTTP connections, so that its first
// measured request does not pay for them.
func (w *worker) warm(ctx context.Context) error {
	if err := w.limRDB.Ping(ctx).Err(); err != nil {
		return err
	}
	if err := w.cacheRDB.Ping(ctx).Err(); err != nil {
		return err
	}
	return w.get(ctx, "/api/v3/ping", nil, &struct{}{})
}

func (w *worker) close() {
	_ = w.nearC.Close()
	w.http.CloseIdleConnections()
	_ = w.limRDB.Close()
	_ = w.cacheRDB.Close()
}

// statusError is an exchange answer other than 200.
type statusError struct{ code int }

func (e statusError) Error() string { return "exchange answered " + strconv.Itoa(e.code) }

// get calls the exchange through the rate-limited client and decodes the answer.
func (w *worker) get(ctx context.Context, path string, q url.Values, dst any) error {
	u := w.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := w.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError{resp.StatusCode}
	}
	return json.NewDecoder(resp.Body).Decode(dst)
}

// fetchTicker returns the exchange call behind a ticker request. It runs under
// phase, not the caller's context: the cache runs it detached from its caller
// (one caller giving up must not fail the others sharing the call), and phase
// ends it when the phase does. phase is cancelled, never given a deadline:
// a request waiting for its turn then waits for it, and gives it back when the
// phase ends, instead of being refused because its turn would come after the
// deadline.
func (w *worker) fetchTicker(phase context.Context, symbol string) func(context.Context) (market.Ticker, error) {
	return func(context.Context) (market.Ticker, error) {
		w.inflight.Add(1)
		defer w.inflight.Done()
		ctx, cancel := context.WithTimeout(phase, callTimeout)
		defer cancel()
		var t fakeexchange.Ticker24hr
		if err := w.get(ctx, "/api/v3/ticker/24hr", url.Values{"symbol": {symbol}}, &t); err != nil {
			return market.Ticker{}, err
		}
		return t.Market()
	}
}

// fetchBook is fetchTicker for order books.
func (w *worker) fetchBook(phase context.Context, symbol string) func(context.Context) (market.OrderBook, error) {
	return func(context.Context) (market.OrderBook, error) {
		w.inflight.Add(1)
		defer w.inflight.Done()
		ctx, cancel := context.WithTimeout(phase, callTimeout)
		defer cancel()
		var d fakeexchange.Depth
		q := url.Values{"symbol": {symbol}, "limit": {strconv.Itoa(depthLimit)}}
		if err := w.get(ctx, "/api/v3/depth", q, &d); err != nil {
			return market.OrderBook{}, err
		}
		return d.Market(symbol)
	}
}

// run makes requests until phase ends: each a ticker or an order book of a
// random symbol, from m (the market cache, with or without a near cache), or
// from the exchange when m is nil.
func (w *worker) run(phase context.Context, m *market.Market, seed uint64) {
	cached := m != nil
	w.requests.Store(0)
	w.errs.Store(0)
	w.weight.Store(0)
	w.firstErr.Store(nil)
	w.lat = w.lat[:0]
	rng := rand.New(rand.NewPCG(seed, uint64(w.id)))
	pause := time.NewTimer(0)
	defer pause.Stop()
	for phase.Err() == nil {
		sym := w.symbols[rng.IntN(len(w.symbols))]
		book := rng.IntN(10) < bookShare
		start := time.Now()
		var err error
		weight := fakeexchange.TickerWeight
		switch {
		case book && cached:
			_, err = market.OrFetch(phase, m, exchangeName, sym, w.fetchBook(phase, sym))
		case book:
			_, err = w.fetchBook(phase, sym)(phase)
		case cached:
			_, err = market.OrFetch(phase, m, exchangeName, sym, w.fetchTicker(phase, sym))
		default:
			_, err = w.fetchTicker(phase, sym)(phase)
		}
		if book {
			weight = fakeexchange.DepthWeight(depthLimit)
		}
		if phase.Err() != nil {
			break // the phase ended under this request: not a measurement
		}
		if err != nil {
			w.errs.Add(1)
			w.firstErr.CompareAndSwap(nil, &err)
		} else {
			w.lat = append(w.lat, time.Since(start))
			w.requests.Add(1)
			w.weight.Add(int64(weight))
		}
		pause.Reset(think)
		select {
		case <-pause.C:
		case <-phase.Done():
		}
	}
	w.inflight.Wait()
}

// err returns the first error of the phase, if any.
func (w *worker) err() error {
	if p := w.firstErr.Load(); p != nil {
		return *p
	}
	return nil
}
