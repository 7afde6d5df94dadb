package market

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/redquota/redquota/cache"
)

// Fetch-through helpers, the seed's @cache_market_data: a hit returns the cached
// value and makes no call; a miss calls fetch once, however many callers of
// this process miss together (cache.GetOrLoad's singleflight), caches the
// result with its kind's TTL and returns it. A fetch error is returned and
// nothing is cached. A Redis error never fails them: fetch is called instead.
// The fetched value is not validated; it is what the exchange returned.
//
// fetch runs with a context that carries the first caller's values and is
// cancelled once no caller waits for it any more, so pass it on to the
// exchange call: a hung call then ends with its callers. A panic in fetch is
// raised again in each waiting caller (see cache.GetOrLoad).

// TickerOrFetch returns the ticker of symbol on exchange, fetched on a miss.
func (m *Market) TickerOrFetch(ctx context.Context, exchange, symbol string, fetch func(context.Context) (Ticker, error)) (Ticker, error) {
	return orFetch(ctx, m, kindTicker, exchange, symbol, "ticker:"+symbol, m.ttl.Ticker, fetch)
}

// OrderBookOrFetch returns the order book of symbol on exchange, fetched on a miss.
func (m *Market) OrderBookOrFetch(ctx context.Context, exchange, symbol string, fetch func(context.Context) (OrderBook, error)) (OrderBook, error) {
	return orFetch(ctx, m, kindOrderBook, exchange, symbol, "book:"+symbol, m.ttl.OrderBook, fetch)
}

// TradesOrFetch returns the recent trades of symbol on exchange, fetched on a miss.
func (m *Market) TradesOrFetch(ctx context.Context, exchange, symbol string, fetch func(context.Context) ([]Trade, error)) ([]Trade, error) {
	return orFetch(ctx, m, kindTrades, exchange, symbol, "trades:"+symbol, m.ttl.Trades, fetch)
}

// CandlesOrFetch returns the candles of symbol on exchange at interval, fetched on a miss.
func (m *Market) CandlesOrFetch(ctx context.Context, exchange, symbol string, interval Interval, fetch func(context.Context) ([]Candle, error)) ([]Candle, error) {
	ttl, err := m.candleTTL(interval)
	if err != nil {
		ctx, span := m.start(ctx, mopFetch, kindCandles, attrExchange, exchange)
		spanInterval(span, interval)
		m.finish(ctx, span, mopFetch, kindCandles, resultError, err)
		return nil, err
	}
	return orFetch(ctx, m, kindCandles, exchange, symbol, candleKey(symbol, interval), ttl, fetch)
}

// orFetch is the span and counts of a fetch-through read of kind k; see fetchThrough.
func orFetch[T any](ctx context.Context, m *Market, k kind, exchange, symbol, key string, ttl time.Duration, fetch func(context.Context) (T, error)) (T, error) {
	ctx, span := m.start(ctx, mopFetch, k, attrExchange, exchange)
	var fetched atomic.Bool // set by the flight, which can outlive a caller whose ctx ended
	v, err := fetchThrough(ctx, m, exchange, symbol, key, ttl, fetch, &fetched)
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

// fetchThrough returns the cached value of key or fetches it; fetched is set
// when this call's fetch function ran.
func fetchThrough[T any](ctx context.Context, m *Market, exchange, symbol, key string, ttl time.Duration, fetch func(context.Context) (T, error), fetched *atomic.Bool) (T, error) {
	var zero T
	g, err := m.group(exchange, "exchange")
	if err != nil {
		return zero, err
	}
	if err := checkSymbol(symbol); err != nil {
		return zero, err
	}
	return cache.GetOrLoadTagged(ctx, g, key, ttl, func(ctx context.Context) (T, error) {
		fetched.Store(true)
		v, err := fetch(ctx)
		if err == nil {
			_ = m.register(ctx, "exchanges", exchange, ttl) // best effort, like the write
		}
		return v, err
	}, exchangeTag)
}
