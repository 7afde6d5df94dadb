package market

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/cacheops"
	"github.com/redquota/redquota/telemetry"
)

// Default TTLs, the seed's: how long each kind stays fresh. Options documents them.
const (
	defaultTickerTTL      = 2 * time.Second
	defaultOrderBookTTL   = 500 * time.Millisecond
	defaultTradesTTL      = 10 * time.Second
	defaultSignalTTL      = 30 * time.Second
	defaultAPICallsWindow = 60 * time.Second
	defaultRegistryTTL    = 24 * time.Hour
)

// Options configure a Market. The zero value works: a zero or negative field
// takes its default, the seed's TTL for its kind.
type Options struct {
	// TickerTTL is how long a ticker is kept. Default 2 s: prices change
	// rapidly.
	TickerTTL time.Duration
	// OrderBookTTL is how long an order book is kept. Default 500 ms: a book
	// must be very fresh.
	OrderBookTTL time.Duration
	// TradesTTL is how long a list of recent trades is kept. Default 10 s:
	// recent trades are history, less critical.
	TradesTTL time.Duration
	// CandlesTTL, when set, is how long candles of every interval are kept.
	// By default a candle series lives until its interval's next boundary, so
	// at most as long as its interval, the seed's TTL (1m candles 60 s, 5m
	// candles 5 min). The boundary is the one after the call, on this
	// process's clock: OrFetch takes it before it calls fetch and measures
	// the TTL to it when it stores the series (one whose candle closed during
	// the fetch is returned, not stored); Set takes it when called, so a series fetched before a boundary and Set after it
	// is kept through the whole next interval with its last candle closed.
	CandlesTTL time.Duration
	// SignalTTL is how long a signal is kept when SetSignal is given no TTL
	// of its own. Default 30 s: signals are recomputed frequently.
	SignalTTL time.Duration
	// APICallsWindow is the window of the API-call counters called with
	// window 0. Default 60 s: API quotas are counted per minute.
	APICallsWindow time.Duration
	// RegistryTTL is how long an exchange or strategy stays known to
	// InvalidateSymbol and InvalidateSignals after its last write (at least
	// as long as the write's TTL). Default 24 h.
	RegistryTTL time.Duration
	// Telemetry are the OpenTelemetry providers of the market's spans and
	// metrics (see TELEMETRY_NAMES.md). Default: the global providers. The
	// cache's own spans and metrics go to the providers of its Options.
	Telemetry telemetry.Providers
}

// Tags the market data is listed under, in each exchange's or strategy's group.
const (
	exchangeTag = "exchange"
	strategyTag = "strategy"
)

// registryGroup is the cache group of the exchange and strategy indexes.
const registryGroup = "market"

// The registry's indexes, and what they list.
const (
	exchangesIndex  = "exchanges"
	strategiesIndex = "strategies"
)

// refreshEvery bounds how long a process trusts its memory that a name is in
// the registry before it writes it again. A Redis restart or failover loses
// the registry; the client dials then, and a registration made before that
// dial is written again at the next write (registered.dials).
const refreshEvery = time.Minute

// Market is a typed market-data cache.
type Market struct {
	c   *cache.Cache
	reg *cache.Cache
	o   Options // defaults filled in

	mu   sync.Mutex
	seen map[string]registered // "<index>\x00<name>" → last registration
	now  func() time.Time      // time.Now but in tests: candle boundaries, registrations

	// views holds the cache group of each exchange and strategy read or
	// written, up to maxViews of them, so that a read through a near cache
	// does not allocate one.
	views  sync.Map // name → *cache.Cache
	nviews atomic.Int64

	tel instruments

	err error // set by New when c is nil: every call returns it
}

// maxViews bounds the group views a Market keeps; past it they are made per call.
const maxViews = 4096

// New returns a Market storing into c (its prefix, codec, breaker and near
// cache apply; its group, if it has one, is not used: each exchange and
// strategy is a group). With a near cache (cache.Options.NearMaxBytes), reads
// of market data are answered in process until Redis reports them changed.
// A nil c makes every call fail with an error wrapping ErrInvalid.
func New(c *cache.Cache, o Options) *Market {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.TickerTTL, defaultTickerTTL)
	def(&o.OrderBookTTL, defaultOrderBookTTL)
	def(&o.TradesTTL, defaultTradesTTL)
	def(&o.SignalTTL, defaultSignalTTL)
	def(&o.APICallsWindow, defaultAPICallsWindow)
	def(&o.RegistryTTL, defaultRegistryTTL)
	m := &Market{c: c, o: o, seen: map[string]registered{}, now: time.Now}
	if c == nil {
		m.err = fmt.Errorf("market: nil cache (market.New needs a *cache.Cache from cache.New): %w", ErrInvalid)
	} else {
		m.reg = c.Group(registryGroup)
	}
	m.initTelemetry(o.Telemetry)
	return m
}

// group returns the cache group of an exchange or strategy.
func (m *Market) group(name, what string) (*cache.Cache, error) {
	if m.err != nil {
		return nil, m.err
	}
	if name == "" {
		return nil, fmt.Errorf("market: %s: %w: empty name", what, ErrInvalid)
	}
	if g, ok := m.views.Load(name); ok {
		return g.(*cache.Cache), nil
	}
	g := m.c.Group(name)
	if m.nviews.Add(1) <= maxViews {
		m.views.Store(name, g)
	}
	return g, nil
}

func checkSymbol(symbol string) error {
	if symbol == "" {
		return fmt.Errorf("market: symbol: %w: empty name", ErrInvalid)
	}
	return nil
}

// register remembers an exchange (exchangesIndex) or strategy
// (strategiesIndex) for at least ttl, at most once a minute per process and
// name.
func (m *Market) register(ctx context.Context, index, name string, ttl time.Duration) error {
	if m.err != nil {
		return m.err
	}
	memo := index + "\x00" + name
	now := m.now()
	dials := cacheops.Dials(m.reg)
	m.mu.Lock()
	last, ok := m.seen[memo]
	m.mu.Unlock()
	// The registration at last lasts until last.at + RegistryTTL at least:
	// skip only while that covers this write's lifetime too, and while the
	// client has dialed no connection since (no restart can have lost it).
	if ok && last.dials == dials && now.Sub(last.at) < refreshEvery && now.Sub(last.at)+ttl <= m.o.RegistryTTL {
		return nil
	}
	if err := cacheops.Remember(ctx, m.reg, index, max(ttl, m.o.RegistryTTL), name); err != nil {
		return err
	}
	m.mu.Lock()
	m.seen[memo] = registered{at: now, dials: dials}
	m.mu.Unlock()
	return nil
}

// registered is a registration this process wrote: when, and how many
// connections its client had dialed before it (cacheops.Dials).
type registered struct {
	at    time.Time
	dials uint64
}

// known returns the exchanges (exchangesIndex) or strategies
// (strategiesIndex) the market has written to within RegistryTTL.
func (m *Market) known(ctx context.Context, index string) ([]string, error) {
	if m.err != nil {
		return nil, m.err
	}
	return cacheops.Recall(ctx, m.reg, index)
}

// candleTTL returns the TTL of candles of interval: Options.CandlesTTL when
// set, else until the interval's next boundary, end, so that a series never
// outlives the candle that was open when it was fetched (end is zero with
// CandlesTTL).
func (m *Market) candleTTL(interval Interval) (ttl time.Duration, end time.Time, err error) {
	now := m.now()
	next, err := interval.next(now)
	if err != nil {
		return 0, time.Time{}, err
	}
	if m.o.CandlesTTL > 0 {
		return m.o.CandlesTTL, time.Time{}, nil
	}
	return max(next.Sub(now), time.Millisecond), next, nil
}

func candleKey(symbol string, interval Interval) string {
	return "candles:" + symbol + ":" + string(interval)
}

// InvalidateSignals deletes every cached signal of the strategies given, or
// of every strategy the market knows when none is given (the seed's
// invalidate_signals()), and returns how many it deleted. Each strategy is one
// script call per 1000 signals.
func (m *Market) InvalidateSignals(ctx context.Context, strategies ...string) (int, error) {
	if len(strategies) == 1 {
		return m.invalidateSignalsOf(ctx, strategies[0])
	}
	ctx, span := m.start(ctx, mopInvalidate, kindSignal, "", "")
	n, err := m.invalidateSignals(ctx, strategies)
	spanCount(span, attrDeleted, n)
	m.finish(ctx, span, mopInvalidate, kindSignal, resultOf(err), err)
	return n, err
}

func (m *Market) invalidateSignals(ctx context.Context, strategies []string) (int, error) {
	for _, s := range strategies {
		if _, err := m.group(s, "strategy"); err != nil {
			return 0, err
		}
	}
	if len(strategies) == 0 {
		var err error
		if strategies, err = m.known(ctx, strategiesIndex); err != nil {
			return 0, err
		}
	}
	total := 0
	for _, s := range strategies {
		n, err := m.invalidateSignalsOf(ctx, s)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// invalidateSignalsOf deletes every cached signal of strategy.
func (m *Market) invalidateSignalsOf(ctx context.Context, strategy string) (int, error) {
	ctx, span := m.start(ctx, mopInvalidate, kindSignal, attrStrategy, strategy)
	n, err := m.invalidateTag(strategy, "strategy", strategyTag)(ctx)
	spanCount(span, attrDeleted, n)
	m.finish(ctx, span, mopInvalidate, kindSignal, resultOf(err), err)
	return n, err
}

// invalidateTag returns the call that invalidates tag in the group of name.
func (m *Market) invalidateTag(name, what, tag string) func(context.Context) (int, error) {
	return func(ctx context.Context) (int, error) {
		g, err := m.group(name, what)
		if err != nil {
			return 0, err
		}
		return g.InvalidateTags(ctx, tag)
	}
}

// InvalidateExchange deletes every cached ticker, order book, trade list and
// candle series of exchange, and returns how many values it deleted. API-call
// counters are kept: they track quota, not market data.
func (m *Market) InvalidateExchange(ctx context.Context, exchange string) (int, error) {
	ctx, span := m.start(ctx, mopInvalidate, kindExchange, attrExchange, exchange)
	n, err := m.invalidateTag(exchange, "exchange", exchangeTag)(ctx)
	spanCount(span, attrDeleted, n)
	m.finish(ctx, span, mopInvalidate, kindExchange, resultOf(err), err)
	return n, err
}

// InvalidateSymbol deletes the cached ticker, order book, trades and candles
// (of every interval) of symbol on every exchange the market knows (every
// exchange written to within Options.RegistryTTL), one UNLINK per exchange,
// and returns how many exchanges it visited. The exchanges are known from an
// index in Redis that each process writes again at its first write after its
// client reconnects (so after a restart or a failover) and at least once a
// minute: an index lost otherwise (FLUSHDB, eviction under allkeys-lru) hides
// an exchange for up to that minute, until a process writing to it registers
// it again. InvalidateExchange, which names the exchange, needs no index.
func (m *Market) InvalidateSymbol(ctx context.Context, symbol string) (int, error) {
	ctx, span := m.start(ctx, mopInvalidate, kindSymbol, "", "")
	n, err := m.invalidateSymbol(ctx, symbol)
	spanCount(span, attrVisited, n)
	m.finish(ctx, span, mopInvalidate, kindSymbol, resultOf(err), err)
	return n, err
}

func (m *Market) invalidateSymbol(ctx context.Context, symbol string) (int, error) {
	if err := checkSymbol(symbol); err != nil {
		return 0, err
	}
	exchanges, err := m.known(ctx, exchangesIndex)
	if err != nil {
		return 0, err
	}
	ks := []string{"ticker:" + symbol, "book:" + symbol, "trades:" + symbol}
	for _, iv := range allIntervals {
		ks = append(ks, candleKey(symbol, iv))
	}
	for i, ex := range exchanges {
		if err := m.c.Group(ex).Delete(ctx, ks...); err != nil {
			return i, err
		}
	}
	return len(exchanges), nil
}

// callsKey is the counter key of an endpoint and window.
func (m *Market) callsKey(exchange, endpoint string, window time.Duration) (*cache.Cache, string, time.Duration, error) {
	g, err := m.group(exchange, "exchange")
	if err != nil {
		return nil, "", 0, err
	}
	if endpoint == "" {
		return nil, "", 0, fmt.Errorf("market: endpoint: %w: empty name", ErrInvalid)
	}
	if window == 0 {
		window = m.o.APICallsWindow
	}
	if window < time.Millisecond {
		return nil, "", 0, fmt.Errorf("market: window %v: %w: below 1ms", window, ErrInvalid)
	}
	return g, "calls:" + endpoint + ":" + strconv.FormatInt(window.Milliseconds(), 10), window, nil
}

// IncrementAPICalls counts one call of endpoint on exchange and returns the
// count in the current window (window 0 means Options.APICallsWindow). The
// first call starts a window; the counter expires when it ends and counting
// starts again. One script call.
func (m *Market) IncrementAPICalls(ctx context.Context, exchange, endpoint string, window time.Duration) (int, error) {
	ctx, span := m.start(ctx, mopIncr, kindAPICalls, attrExchange, exchange)
	n, err := m.incrementAPICalls(ctx, exchange, endpoint, window)
	if err == nil {
		m.countCall(ctx, exchange)
	}
	m.finish(ctx, span, mopIncr, kindAPICalls, resultOf(err), err)
	return n, err
}

func (m *Market) incrementAPICalls(ctx context.Context, exchange, endpoint string, window time.Duration) (int, error) {
	g, k, w, err := m.callsKey(exchange, endpoint, window)
	if err != nil {
		return 0, err
	}
	n, _, err := cacheops.Incr(ctx, g, k, 1, w)
	return int(n), err
}

// APICalls returns the count of endpoint on exchange in the current window
// (window 0 means Options.APICallsWindow), 0 when no window is running.
func (m *Market) APICalls(ctx context.Context, exchange, endpoint string, window time.Duration) (int, error) {
	ctx, span := m.start(ctx, mopCount, kindAPICalls, attrExchange, exchange)
	n, err := m.apiCalls(ctx, exchange, endpoint, window)
	m.finish(ctx, span, mopCount, kindAPICalls, resultOf(err), err)
	return n, err
}

func (m *Market) apiCalls(ctx context.Context, exchange, endpoint string, window time.Duration) (int, error) {
	g, k, _, err := m.callsKey(exchange, endpoint, window)
	if err != nil {
		return 0, err
	}
	n, err := cacheops.Count(ctx, g, k)
	return int(n), err
}
