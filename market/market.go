// Package market is a typed market-data cache on package cache: tickers, order
// books, trades, candles and strategy signals, each kind with its own TTL, and
// invalidation by exchange, symbol or strategy; plus per-endpoint API-call
// counters.
//
// # Keys
//
// An exchange's data lives in the cache group of the exchange, so in one hash
// slot, and is listed in the exchange's tag set. Within a key, the cache
// escapes ':' as %3A (and '{', '}', '%' likewise), so that no name can collide
// with another key: a SCAN pattern must use the escaped form.
//
//	<prefix>:v:{<exchange>}:ticker%3A<symbol>
//	<prefix>:v:{<exchange>}:book%3A<symbol>
//	<prefix>:v:{<exchange>}:trades%3A<symbol>
//	<prefix>:v:{<exchange>}:candles%3A<symbol>%3A<interval>
//	<prefix>:v:{<exchange>}:calls%3A<endpoint>%3A<window ms>
//	<prefix>:{<exchange>}:t:exchange                 tag set of the exchange's data
//
// Signals live in the group of their strategy, tagged "strategy":
//
//	<prefix>:v:{<strategy>}:signal%3A<symbol>
//
// So InvalidateExchange and InvalidateSignals are each one script call per 1000
// values on one slot, SetTickers is one script call, and GetTickers one MGET.
// The exchanges and strategies written to are remembered in two indexes
// (<prefix>:{market}:i:exchanges, …:strategies) for InvalidateSymbol and
// InvalidateAllSignals, which fan out from Go over them.
//
// A Market is safe for concurrent use.
package market

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/telemetry"
)

// Default TTLs, the seed's: how long each kind stays fresh.
const (
	// DefaultTickerTTL: prices change rapidly.
	DefaultTickerTTL = 2 * time.Second
	// DefaultOrderBookTTL: a book must be very fresh.
	DefaultOrderBookTTL = 500 * time.Millisecond
	// DefaultTradesTTL: recent trades are history, less critical.
	DefaultTradesTTL = 10 * time.Second
	// DefaultSignalTTL: signals are recomputed frequently.
	DefaultSignalTTL = 30 * time.Second
	// DefaultAPICallsWindow: API quotas are tracked per minute.
	DefaultAPICallsWindow = 60 * time.Second
	// DefaultRegistryTTL is how long an exchange or strategy written to stays
	// known to InvalidateSymbol and InvalidateAllSignals, at least.
	DefaultRegistryTTL = 24 * time.Hour
)

// TTLs are the lifetimes of each kind. A zero field takes its default.
type TTLs struct {
	// Ticker defaults to DefaultTickerTTL (2 s).
	Ticker time.Duration
	// OrderBook defaults to DefaultOrderBookTTL (500 ms).
	OrderBook time.Duration
	// Trades defaults to DefaultTradesTTL (10 s).
	Trades time.Duration
	// Candles, when set, is the TTL of candles of every interval. By default a
	// candle series lives until its interval's next boundary (Interval.Next),
	// so at most as long as its interval, the seed's TTL (1m candles 60 s, 5m
	// candles 5 min), and never past the close of the candle that was open
	// when it was fetched.
	Candles time.Duration
	// Signal is the TTL of SetSignal called with ttl 0. Default DefaultSignalTTL (30 s).
	Signal time.Duration
	// APICalls is the window of the API-call counters called with window 0.
	// Default DefaultAPICallsWindow (60 s).
	APICalls time.Duration
}

// Options configure a Market. The zero value works.
type Options struct {
	// TTLs per kind; see TTLs for the defaults.
	TTLs TTLs
	// RegistryTTL is how long an exchange or strategy stays known after its
	// last write (at least as long as the write's TTL). Default DefaultRegistryTTL (24 h).
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

// refreshEvery bounds how long a process trusts its memory that a name is in
// the registry before it writes it again (a Redis restart loses the registry).
const refreshEvery = time.Minute

// Market is a typed market-data cache.
type Market struct {
	c    *cache.Cache
	reg  *cache.Cache
	ttl  TTLs
	regT time.Duration

	mu   sync.Mutex
	seen map[string]time.Time // "e:<exchange>" / "s:<strategy>" → last registration
	now  func() time.Time     // time.Now but in tests: candle boundaries, registrations

	// views holds the cache group of each exchange and strategy read or
	// written, up to maxViews of them, so that a read through a near cache
	// does not allocate one.
	views  sync.Map // name → *cache.Cache
	nviews atomic.Int64

	tel instruments
}

// maxViews bounds the group views a Market keeps; past it they are made per call.
const maxViews = 4096

// New returns a Market storing into c (its prefix, codec, breaker and near
// cache apply; its group, if it has one, is not used: each exchange and
// strategy is a group). With a near cache (cache.Options.Near), reads of
// market data are answered in process until Redis reports them changed.
func New(c *cache.Cache, o Options) *Market {
	t := o.TTLs
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Ticker, DefaultTickerTTL)
	def(&t.OrderBook, DefaultOrderBookTTL)
	def(&t.Trades, DefaultTradesTTL)
	def(&t.Signal, DefaultSignalTTL)
	def(&t.APICalls, DefaultAPICallsWindow)
	reg := o.RegistryTTL
	def(&reg, DefaultRegistryTTL)
	m := &Market{c: c, reg: c.Group(registryGroup), ttl: t, regT: reg, seen: map[string]time.Time{}, now: time.Now}
	m.initTelemetry(o.Telemetry)
	return m
}

// TTLs returns the TTLs in effect, defaults filled in.
func (m *Market) TTLs() TTLs { return m.ttl }

// Cache returns the cache the market stores into.
func (m *Market) Cache() *cache.Cache { return m.c }

// group returns the cache group of an exchange or strategy.
func (m *Market) group(name, what string) (*cache.Cache, error) {
	if name == "" {
		return nil, fmt.Errorf("market: %s: %w", what, ErrEmptyName)
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
		return fmt.Errorf("market: symbol: %w", ErrEmptyName)
	}
	return nil
}

// register remembers an exchange ("exchanges") or strategy ("strategies") for
// at least ttl, at most once a minute per process and name.
func (m *Market) register(ctx context.Context, index, name string, ttl time.Duration) error {
	memo := index + "\x00" + name
	now := m.now()
	m.mu.Lock()
	last, ok := m.seen[memo]
	m.mu.Unlock()
	// The registration at last lasts until last + regT at least: skip only
	// while that covers this write's lifetime too.
	if ok && now.Sub(last) < refreshEvery && now.Sub(last)+ttl <= m.regT {
		return nil
	}
	if err := m.reg.Remember(ctx, index, max(ttl, m.regT), name); err != nil {
		return err
	}
	m.mu.Lock()
	m.seen[memo] = now
	m.mu.Unlock()
	return nil
}

// Exchanges returns the exchanges the market has written to within RegistryTTL.
func (m *Market) Exchanges(ctx context.Context) ([]string, error) {
	return m.reg.Recall(ctx, "exchanges")
}

// Strategies returns the strategies the market has written signals of within RegistryTTL.
func (m *Market) Strategies(ctx context.Context) ([]string, error) {
	return m.reg.Recall(ctx, "strategies")
}

// setData writes exchange data with the exchange tag and registers the exchange.
func (m *Market) setData(ctx context.Context, exchange string, items map[string]any, ttl time.Duration) error {
	g, err := m.group(exchange, "exchange")
	if err != nil {
		return err
	}
	if err := g.SetManyTagged(ctx, items, ttl, exchangeTag); err != nil {
		return err
	}
	return m.register(ctx, "exchanges", exchange, ttl)
}

// getData reads one value of an exchange.
func (m *Market) getData(ctx context.Context, exchange, key string, dst any) (bool, error) {
	g, err := m.group(exchange, "exchange")
	if err != nil {
		return false, err
	}
	return g.Get(ctx, key, dst)
}

// SetTicker caches the ticker of symbol on exchange for TTLs.Ticker.
func (m *Market) SetTicker(ctx context.Context, exchange, symbol string, t Ticker) error {
	ctx, span := m.start(ctx, mopSet, kindTicker, attrExchange, exchange)
	err := m.setTicker(ctx, exchange, symbol, t)
	m.finish(ctx, span, mopSet, kindTicker, resultOf(err), err)
	return err
}

func (m *Market) setTicker(ctx context.Context, exchange, symbol string, t Ticker) error {
	if err := checkSymbol(symbol); err != nil {
		return err
	}
	if err := t.validate(); err != nil {
		return err
	}
	return m.setData(ctx, exchange, map[string]any{"ticker:" + symbol: t}, m.ttl.Ticker)
}

// GetTicker returns the cached ticker of symbol on exchange and whether there
// was one. A Redis error is returned with found false (see cache.Cache.Get).
func (m *Market) GetTicker(ctx context.Context, exchange, symbol string) (Ticker, bool, error) {
	ctx, span := m.start(ctx, mopGet, kindTicker, attrExchange, exchange)
	t, found, err := m.getTicker(ctx, exchange, symbol)
	spanHit(span, found)
	m.finish(ctx, span, mopGet, kindTicker, read(found, err), err)
	return t, found, err
}

func (m *Market) getTicker(ctx context.Context, exchange, symbol string) (Ticker, bool, error) {
	var t Ticker
	if err := checkSymbol(symbol); err != nil {
		return t, false, err
	}
	found, err := m.getData(ctx, exchange, "ticker:"+symbol, &t)
	return t, found, err
}

// SetTickers caches the tickers of many symbols of one exchange, keyed by
// symbol, in one script call (one round trip, atomic) for up to 1000 symbols.
func (m *Market) SetTickers(ctx context.Context, exchange string, tickers map[string]Ticker) error {
	ctx, span := m.start(ctx, mopSetMany, kindTicker, attrExchange, exchange)
	if span.IsRecording() {
		span.SetAttributes(attrSymbols.Int(len(tickers)))
	}
	err := m.setTickers(ctx, exchange, tickers)
	m.finish(ctx, span, mopSetMany, kindTicker, resultOf(err), err)
	return err
}

func (m *Market) setTickers(ctx context.Context, exchange string, tickers map[string]Ticker) error {
	if _, err := m.group(exchange, "exchange"); err != nil {
		return err // also with no tickers: bad input is an error whatever else is given
	}
	items := make(map[string]any, len(tickers))
	for sym, t := range tickers {
		if err := checkSymbol(sym); err != nil {
			return err
		}
		if err := t.validate(); err != nil {
			return err
		}
		items["ticker:"+sym] = t
	}
	if len(items) == 0 {
		return nil
	}
	return m.setData(ctx, exchange, items, m.ttl.Ticker)
}

// GetTickers returns the cached tickers of symbols on exchange, keyed by
// symbol; symbols without one are absent. One MGET.
func (m *Market) GetTickers(ctx context.Context, exchange string, symbols []string) (map[string]Ticker, error) {
	ctx, span := m.start(ctx, mopGetMany, kindTicker, attrExchange, exchange)
	out, err := m.getTickers(ctx, exchange, symbols)
	if span.IsRecording() {
		span.SetAttributes(attrSymbols.Int(len(symbols)), attrFound.Int(len(out)))
	}
	m.finish(ctx, span, mopGetMany, kindTicker, read(len(out) > 0, err), err)
	return out, err
}

func (m *Market) getTickers(ctx context.Context, exchange string, symbols []string) (map[string]Ticker, error) {
	g, err := m.group(exchange, "exchange")
	if err != nil {
		return nil, err
	}
	ks := make([]string, len(symbols))
	for i, s := range symbols {
		if err := checkSymbol(s); err != nil {
			return nil, err
		}
		ks[i] = "ticker:" + s
	}
	got, err := cache.GetManyOf[Ticker](ctx, g, ks)
	out := make(map[string]Ticker, len(got))
	for k, t := range got {
		out[k[len("ticker:"):]] = t
	}
	return out, err
}

// SetOrderBook caches the order book of symbol on exchange for TTLs.OrderBook.
func (m *Market) SetOrderBook(ctx context.Context, exchange, symbol string, b OrderBook) error {
	ctx, span := m.start(ctx, mopSet, kindOrderBook, attrExchange, exchange)
	err := m.setOrderBook(ctx, exchange, symbol, b)
	m.finish(ctx, span, mopSet, kindOrderBook, resultOf(err), err)
	return err
}

func (m *Market) setOrderBook(ctx context.Context, exchange, symbol string, b OrderBook) error {
	if err := checkSymbol(symbol); err != nil {
		return err
	}
	if err := b.validate(); err != nil {
		return err
	}
	return m.setData(ctx, exchange, map[string]any{"book:" + symbol: b}, m.ttl.OrderBook)
}

// GetOrderBook returns the cached order book of symbol on exchange.
func (m *Market) GetOrderBook(ctx context.Context, exchange, symbol string) (OrderBook, bool, error) {
	ctx, span := m.start(ctx, mopGet, kindOrderBook, attrExchange, exchange)
	b, found, err := m.getOrderBook(ctx, exchange, symbol)
	spanHit(span, found)
	m.finish(ctx, span, mopGet, kindOrderBook, read(found, err), err)
	return b, found, err
}

func (m *Market) getOrderBook(ctx context.Context, exchange, symbol string) (OrderBook, bool, error) {
	var b OrderBook
	if err := checkSymbol(symbol); err != nil {
		return b, false, err
	}
	found, err := m.getData(ctx, exchange, "book:"+symbol, &b)
	return b, found, err
}

// SetTrades caches the recent trades of symbol on exchange for TTLs.Trades.
func (m *Market) SetTrades(ctx context.Context, exchange, symbol string, trades []Trade) error {
	ctx, span := m.start(ctx, mopSet, kindTrades, attrExchange, exchange)
	err := m.setTrades(ctx, exchange, symbol, trades)
	m.finish(ctx, span, mopSet, kindTrades, resultOf(err), err)
	return err
}

func (m *Market) setTrades(ctx context.Context, exchange, symbol string, trades []Trade) error {
	if err := checkSymbol(symbol); err != nil {
		return err
	}
	for i := range trades {
		if err := trades[i].validate(); err != nil {
			return err
		}
	}
	return m.setData(ctx, exchange, map[string]any{"trades:" + symbol: trades}, m.ttl.Trades)
}

// GetTrades returns the cached recent trades of symbol on exchange.
func (m *Market) GetTrades(ctx context.Context, exchange, symbol string) ([]Trade, bool, error) {
	ctx, span := m.start(ctx, mopGet, kindTrades, attrExchange, exchange)
	t, found, err := m.getTrades(ctx, exchange, symbol)
	spanHit(span, found)
	m.finish(ctx, span, mopGet, kindTrades, read(found, err), err)
	return t, found, err
}

func (m *Market) getTrades(ctx context.Context, exchange, symbol string) ([]Trade, bool, error) {
	var t []Trade
	if err := checkSymbol(symbol); err != nil {
		return nil, false, err
	}
	found, err := m.getData(ctx, exchange, "trades:"+symbol, &t)
	return t, found, err
}

// candleTTL returns the TTL of candles of interval: TTLs.Candles when set,
// else until the interval's next boundary, so that a series never outlives
// the candle that was open when it was fetched.
func (m *Market) candleTTL(interval Interval) (time.Duration, error) {
	now := m.now()
	next, err := interval.Next(now)
	if err != nil {
		return 0, err
	}
	if m.ttl.Candles > 0 {
		return m.ttl.Candles, nil
	}
	return max(next.Sub(now), time.Millisecond), nil
}

// SetCandles caches the candles of symbol on exchange at interval until the
// interval's next boundary (or for TTLs.Candles).
func (m *Market) SetCandles(ctx context.Context, exchange, symbol string, interval Interval, candles []Candle) error {
	ctx, span := m.start(ctx, mopSet, kindCandles, attrExchange, exchange)
	spanInterval(span, interval)
	err := m.setCandles(ctx, exchange, symbol, interval, candles)
	m.finish(ctx, span, mopSet, kindCandles, resultOf(err), err)
	return err
}

func (m *Market) setCandles(ctx context.Context, exchange, symbol string, interval Interval, candles []Candle) error {
	if err := checkSymbol(symbol); err != nil {
		return err
	}
	ttl, err := m.candleTTL(interval)
	if err != nil {
		return err
	}
	for i := range candles {
		if err := candles[i].validate(); err != nil {
			return err
		}
	}
	return m.setData(ctx, exchange, map[string]any{candleKey(symbol, interval): candles}, ttl)
}

// GetCandles returns the cached candles of symbol on exchange at interval.
func (m *Market) GetCandles(ctx context.Context, exchange, symbol string, interval Interval) ([]Candle, bool, error) {
	ctx, span := m.start(ctx, mopGet, kindCandles, attrExchange, exchange)
	spanInterval(span, interval)
	c, found, err := m.getCandles(ctx, exchange, symbol, interval)
	spanHit(span, found)
	m.finish(ctx, span, mopGet, kindCandles, read(found, err), err)
	return c, found, err
}

func (m *Market) getCandles(ctx context.Context, exchange, symbol string, interval Interval) ([]Candle, bool, error) {
	if err := checkSymbol(symbol); err != nil {
		return nil, false, err
	}
	if _, err := interval.Duration(); err != nil {
		return nil, false, err
	}
	var c []Candle
	found, err := m.getData(ctx, exchange, candleKey(symbol, interval), &c)
	return c, found, err
}

func candleKey(symbol string, interval Interval) string {
	return "candles:" + symbol + ":" + string(interval)
}

// SetSignal caches a strategy's signal for symbol for ttl, or TTLs.Signal
// when ttl is 0. A negative ttl (cache.NoExpiry too) is cache.ErrBadTTL.
func (m *Market) SetSignal(ctx context.Context, strategy, symbol string, s Signal, ttl time.Duration) error {
	ctx, span := m.start(ctx, mopSet, kindSignal, attrStrategy, strategy)
	err := m.setSignal(ctx, strategy, symbol, s, ttl)
	m.finish(ctx, span, mopSet, kindSignal, resultOf(err), err)
	return err
}

func (m *Market) setSignal(ctx context.Context, strategy, symbol string, s Signal, ttl time.Duration) error {
	g, err := m.group(strategy, "strategy")
	if err != nil {
		return err
	}
	if err := checkSymbol(symbol); err != nil {
		return err
	}
	if err := s.validate(); err != nil {
		return err
	}
	if ttl == 0 {
		ttl = m.ttl.Signal
	}
	if ttl < 0 {
		// cache.NoExpiry too: a signal that never expires would outlive the
		// strategies index, and InvalidateAllSignals would no longer find it.
		return fmt.Errorf("market: signal TTL %v: %w", ttl, cache.ErrBadTTL)
	}
	if err := g.SetTagged(ctx, "signal:"+symbol, s, ttl, strategyTag); err != nil {
		return err
	}
	return m.register(ctx, "strategies", strategy, ttl)
}

// GetSignal returns a strategy's cached signal for symbol.
func (m *Market) GetSignal(ctx context.Context, strategy, symbol string) (Signal, bool, error) {
	ctx, span := m.start(ctx, mopGet, kindSignal, attrStrategy, strategy)
	s, found, err := m.getSignal(ctx, strategy, symbol)
	spanHit(span, found)
	m.finish(ctx, span, mopGet, kindSignal, read(found, err), err)
	return s, found, err
}

func (m *Market) getSignal(ctx context.Context, strategy, symbol string) (Signal, bool, error) {
	var s Signal
	g, err := m.group(strategy, "strategy")
	if err != nil {
		return s, false, err
	}
	if err := checkSymbol(symbol); err != nil {
		return s, false, err
	}
	found, err := g.Get(ctx, "signal:"+symbol, &s)
	return s, found, err
}

// InvalidateSignals deletes every cached signal of strategy and returns how
// many it deleted.
func (m *Market) InvalidateSignals(ctx context.Context, strategy string) (int, error) {
	ctx, span := m.start(ctx, mopInvalidate, kindSignal, attrStrategy, strategy)
	n, err := m.invalidateSignals(ctx, strategy)
	spanCount(span, attrDeleted, n)
	m.finish(ctx, span, mopInvalidate, kindSignal, resultOf(err), err)
	return n, err
}

func (m *Market) invalidateSignals(ctx context.Context, strategy string) (int, error) {
	g, err := m.group(strategy, "strategy")
	if err != nil {
		return 0, err
	}
	return g.InvalidateTags(ctx, strategyTag)
}

// InvalidateAllSignals deletes the cached signals of every strategy the market
// knows (see Strategies) and returns how many it deleted.
func (m *Market) InvalidateAllSignals(ctx context.Context) (int, error) {
	ctx, span := m.start(ctx, mopInvalidate, kindSignal, "", "")
	n, err := m.invalidateAllSignals(ctx)
	spanCount(span, attrDeleted, n)
	m.finish(ctx, span, mopInvalidate, kindSignal, resultOf(err), err)
	return n, err
}

func (m *Market) invalidateAllSignals(ctx context.Context) (int, error) {
	names, err := m.Strategies(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, s := range names {
		n, err := m.InvalidateSignals(ctx, s)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// InvalidateExchange deletes every cached ticker, order book, trade list and
// candle series of exchange, and returns how many values it deleted. API-call
// counters are kept: they track quota, not market data.
func (m *Market) InvalidateExchange(ctx context.Context, exchange string) (int, error) {
	ctx, span := m.start(ctx, mopInvalidate, kindExchange, attrExchange, exchange)
	n, err := m.invalidateExchange(ctx, exchange)
	spanCount(span, attrDeleted, n)
	m.finish(ctx, span, mopInvalidate, kindExchange, resultOf(err), err)
	return n, err
}

func (m *Market) invalidateExchange(ctx context.Context, exchange string) (int, error) {
	g, err := m.group(exchange, "exchange")
	if err != nil {
		return 0, err
	}
	return g.InvalidateTags(ctx, exchangeTag)
}

// InvalidateSymbol deletes the cached ticker, order book, trades and candles
// (of every interval) of symbol on every exchange the market knows (see
// Exchanges), one UNLINK per exchange, and returns how many exchanges it
// visited.
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
	exchanges, err := m.Exchanges(ctx)
	if err != nil {
		return 0, err
	}
	ks := []string{"ticker:" + symbol, "book:" + symbol, "trades:" + symbol}
	for _, iv := range Intervals() {
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
		return nil, "", 0, fmt.Errorf("market: endpoint: %w", ErrEmptyName)
	}
	if window == 0 {
		window = m.ttl.APICalls
	}
	if window < time.Millisecond {
		return nil, "", 0, fmt.Errorf("market: window %v: %w", window, cache.ErrBadTTL)
	}
	return g, "calls:" + endpoint + ":" + strconv.FormatInt(window.Milliseconds(), 10), window, nil
}

// IncrementAPICalls counts one call of endpoint on exchange and returns the
// count in the current window (window 0 means TTLs.APICalls). The first call
// starts a window; the counter expires when it ends and counting starts again.
// One script call.
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
	n, _, err := g.Incr(ctx, k, 1, w)
	return int(n), err
}

// APICalls returns the count of endpoint on exchange in the current window
// (window 0 means TTLs.APICalls), 0 when no window is running.
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
	n, err := g.Count(ctx, k)
	return int(n), err
}
