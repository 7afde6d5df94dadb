package market

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/cacheops"
)

// data are the kinds of market data Get, Set and OrFetch take, each cached
// under its own key and TTL: Ticker, OrderBook, []Trade and []Candle (of an
// exchange), and Signal (of a strategy).
type data interface {
	Ticker | OrderBook | []Trade | []Candle | Signal
}

// kindOf returns the kind of T.
func kindOf[T data]() kind {
	switch any((*T)(nil)).(type) { // a nil pointer: no allocation
	case *Ticker:
		return kindTicker
	case *OrderBook:
		return kindOrderBook
	case *[]Trade:
		return kindTrades
	case *[]Candle:
		return kindCandles
	}
	return kindSignal
}

// place is where a value of one kind lives: its owner's group, key and TTL.
type place struct {
	g   *cache.Cache
	key string
	ttl time.Duration
	// end, when not zero, is when the data stops being current (a candle's
	// close): ttl is the time until it, read when the place was found.
	end time.Time
}

// placeOf checks a call's names and returns where data of kind k of owner and
// symbol lives. Candles need exactly one interval; other kinds take none.
func (m *Market) placeOf(k kind, owner, symbol string, interval []Interval) (place, error) {
	what := "exchange"
	if k == kindSignal {
		what = "strategy"
	}
	g, err := m.group(owner, what)
	if err != nil {
		return place{}, err
	}
	if err := checkSymbol(symbol); err != nil {
		return place{}, err
	}
	if k == kindCandles {
		if len(interval) != 1 {
			return place{}, fmt.Errorf("market: candles need one interval, got %d: %w", len(interval), ErrInvalid)
		}
		ttl, end, err := m.candleTTL(interval[0])
		if err != nil {
			return place{}, err
		}
		return place{g, candleKey(symbol, interval[0]), ttl, end}, nil
	}
	if len(interval) != 0 {
		return place{}, fmt.Errorf("market: an interval is for candles, not a %s: %w", kindNames[k], ErrInvalid)
	}
	switch k {
	case kindTicker:
		return place{g: g, key: "ticker:" + symbol, ttl: m.o.TickerTTL}, nil
	case kindOrderBook:
		return place{g: g, key: "book:" + symbol, ttl: m.o.OrderBookTTL}, nil
	case kindTrades:
		return place{g: g, key: "trades:" + symbol, ttl: m.o.TradesTTL}, nil
	}
	return place{g: g, key: "signal:" + symbol, ttl: m.o.SignalTTL}, nil
}

// validate checks a value about to be cached.
func validate(v any) error {
	switch x := v.(type) {
	case *Ticker:
		return x.validate()
	case *OrderBook:
		return x.validate()
	case *[]Trade:
		for i := range *x {
			if err := (*x)[i].validate(); err != nil {
				return err
			}
		}
	case *[]Candle:
		for i := range *x {
			if err := (*x)[i].validate(); err != nil {
				return err
			}
		}
	case *Signal:
		return x.validate()
	}
	return nil
}

// spanOwner returns the owner attribute of kind k.
func spanOwner(k kind) attribute.Key {
	if k == kindSignal {
		return attrStrategy
	}
	return attrExchange
}

// Get returns the cached data of symbol and whether there was one: a
// Ticker, OrderBook, []Trade or []Candle of the exchange owner, or a Signal of
// the strategy owner. Candles take their interval, and only they take one:
//
//	t, found, err := market.Get[market.Ticker](ctx, m, "binance", "BTCUSDT")
//	c, found, err := market.Get[[]market.Candle](ctx, m, "binance", "BTCUSDT", "1m")
//
// A Redis error is returned with found false (see cache.Cache.Get).
func Get[T data](ctx context.Context, m *Market, owner, symbol string, interval ...Interval) (T, bool, error) {
	k := kindOf[T]()
	ctx, span := m.start(ctx, mopGet, k, spanOwner(k), owner)
	if k == kindCandles && len(interval) == 1 {
		spanInterval(span, interval[0])
	}
	v, found, err := get[T](ctx, m, k, owner, symbol, interval)
	spanHit(span, found)
	m.finish(ctx, span, mopGet, k, read(found, err), err)
	return v, found, err
}

func get[T data](ctx context.Context, m *Market, k kind, owner, symbol string, interval []Interval) (T, bool, error) {
	var v T
	p, err := m.placeOf(k, owner, symbol, interval)
	if err != nil {
		return v, false, err
	}
	found, err := p.g.Get(ctx, p.key, &v)
	return v, found, err
}

// Set caches v, the data of symbol (see Get), for its kind's TTL (see
// Options) and lists it under its owner, so that InvalidateExchange or
// InvalidateSignals reaches it. The value is checked first: NaN or infinite
// prices, negative sizes, an order book out of order or a confidence outside
// [0, 1] are ErrInvalid.
func Set[T data](ctx context.Context, m *Market, owner, symbol string, v T, interval ...Interval) error {
	k := kindOf[T]()
	ctx, span := m.start(ctx, mopSet, k, spanOwner(k), owner)
	if k == kindCandles && len(interval) == 1 {
		spanInterval(span, interval[0])
	}
	err := set(ctx, m, k, owner, symbol, v, 0, interval)
	m.finish(ctx, span, mopSet, k, resultOf(err), err)
	return err
}

// set writes v for ttl, or its kind's TTL when ttl is 0.
func set[T data](ctx context.Context, m *Market, k kind, owner, symbol string, v T, ttl time.Duration, interval []Interval) error {
	p, err := m.placeOf(k, owner, symbol, interval)
	if err != nil {
		return err
	}
	if err := validate(&v); err != nil {
		return err
	}
	if ttl != 0 {
		p.ttl = ttl
	}
	return m.write(ctx, k, owner, p, map[string]any{p.key: v})
}

// write stores items in p's group, tagged with their owner, and registers
// the owner.
func (m *Market) write(ctx context.Context, k kind, owner string, p place, items map[string]any) error {
	tag, index := exchangeTag, exchangesIndex
	if k == kindSignal {
		tag, index = strategyTag, strategiesIndex
	}
	if err := p.g.SetMany(ctx, items, p.ttl, tag); err != nil {
		return err
	}
	return m.register(ctx, index, owner, p.ttl)
}

// OrFetch returns the data of symbol (see Get), fetched on a miss: the seed's
// @cache_market_data. A hit returns the cached value and makes no call; a
// miss calls fetch once, however many callers of this process miss together
// (cache.GetOrLoad's singleflight), caches the result with its kind's TTL
// and returns it. Candles' TTL (without Options.CandlesTTL) is taken when the
// result is stored: it lives until the close of the candle that was open when
// the fetch began, and is not cached when that candle closed during the
// fetch. A fetch error is returned and nothing is cached. A Redis
// error never fails it: fetch is called instead. The fetched value is not
// checked; it is what the exchange returned.
//
// fetch runs with a context that carries the first caller's values and is
// cancelled once no caller waits for it any more, so pass it on to the
// exchange call: a hung call then ends with its callers. A panic in fetch is
// raised again in each waiting caller (see cache.GetOrLoad).
func OrFetch[T data](ctx context.Context, m *Market, owner, symbol string, fetch func(context.Context) (T, error), interval ...Interval) (T, error) {
	k := kindOf[T]()
	ctx, span := m.start(ctx, mopFetch, k, spanOwner(k), owner)
	if k == kindCandles && len(interval) == 1 {
		spanInterval(span, interval[0])
	}
	var fetched atomic.Bool // set by the flight, which can outlive a caller whose ctx ended
	v, err := fetchThrough(ctx, m, k, owner, symbol, interval, fetch, &fetched)
	r := resultHit
	switch {
	case err != nil:
		r = resultError
	case fetched.Load():
		r = resultFetched
	}
	if span.IsRecording() {
		span.SetAttributes(attrHit.Bool(r == resultHit))
	}
	m.finish(ctx, span, mopFetch, k, r, err)
	return v, err
}

// fetchThrough returns the cached value or fetches it; fetched is set when
// this call's fetch function ran.
func fetchThrough[T data](ctx context.Context, m *Market, k kind, owner, symbol string, interval []Interval, fetch func(context.Context) (T, error), fetched *atomic.Bool) (T, error) {
	var zero T
	p, err := m.placeOf(k, owner, symbol, interval)
	if err != nil {
		return zero, err
	}
	if fetch == nil {
		return zero, fmt.Errorf("market: nil fetch function: %w", ErrInvalid)
	}
	tag, index := exchangeTag, exchangesIndex
	if k == kindSignal {
		tag, index = strategyTag, strategiesIndex
	}
	if !p.end.IsZero() {
		// The fetch takes time: the value is stored until p.end, however long
		// it took, and not at all when the candle closed meanwhile.
		ctx = cacheops.WithTTL(ctx, func() time.Duration { return p.end.Sub(m.now()) })
	}
	return cache.GetOrLoad(ctx, p.g, p.key, p.ttl, func(ctx context.Context) (T, error) {
		fetched.Store(true)
		v, err := fetch(ctx)
		if err == nil {
			_ = m.register(ctx, index, owner, p.ttl) // best effort, like the write
		}
		return v, err
	}, tag)
}

// GetTicker returns the cached ticker of symbol on exchange: Get[Ticker], the
// seed's get_ticker.
func (m *Market) GetTicker(ctx context.Context, exchange, symbol string) (Ticker, bool, error) {
	return Get[Ticker](ctx, m, exchange, symbol)
}

// SetTicker caches the ticker of symbol on exchange for Options.TickerTTL:
// Set[Ticker], the seed's set_ticker.
func (m *Market) SetTicker(ctx context.Context, exchange, symbol string, t Ticker) error {
	return Set(ctx, m, exchange, symbol, t)
}

// SetSignal caches a strategy's signal for symbol for ttl, or
// Options.SignalTTL when ttl is 0: Set[Signal] with a TTL of its own, the
// seed's set_signal. A negative ttl (cache.NoExpiry too) is ErrInvalid: a
// signal that never expires would outlive the registry of strategies, and
// InvalidateSignals would no longer find it. Get[Signal] reads it.
func (m *Market) SetSignal(ctx context.Context, strategy, symbol string, s Signal, ttl time.Duration) error {
	ctx, span := m.start(ctx, mopSet, kindSignal, attrStrategy, strategy)
	var err error
	if ttl < 0 {
		if _, err = m.group(strategy, "strategy"); err == nil {
			err = fmt.Errorf("market: signal TTL %v: %w: below 0", ttl, ErrInvalid)
		}
	} else {
		err = set(ctx, m, kindSignal, strategy, symbol, s, ttl, nil)
	}
	m.finish(ctx, span, mopSet, kindSignal, resultOf(err), err)
	return err
}

// SetTickers caches the tickers of many symbols of one exchange, keyed by
// symbol, in one script call (one round trip, atomic) for up to 1000 symbols:
// the seed's set_tickers.
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
	g, err := m.group(exchange, "exchange")
	if err != nil {
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
	return m.write(ctx, kindTicker, exchange, place{g: g, ttl: m.o.TickerTTL}, items)
}

// GetTickers returns the cached tickers of symbols on exchange, keyed by
// symbol; symbols without one are absent. One MGET: the seed's get_tickers.
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
	got, err := cache.GetMany[Ticker](ctx, g, ks)
	out := make(map[string]Ticker, len(got))
	for k, t := range got {
		out[k[len("ticker:"):]] = t
	}
	return out, err
}
