// Package market is a typed market-data cache on package cache: tickers, order
// books, trades, candles and strategy signals, each kind with its own TTL, and
// invalidation by exchange, symbol or strategy; plus per-endpoint API-call
// counters.
//
// # Where to start
//
// Make a Market with New on a cache.Cache (Options' zero value gives the
// seed's TTLs). Most callers use OrFetch: it returns the cached value, or
// calls the exchange once on a miss and caches what it answered:
//
//	t, err := market.OrFetch(ctx, m, "binance", "BTCUSDT", fetchTicker)
//
// Get and Set read and write one value of any kind: the kind is the type,
// Ticker, OrderBook, []Trade, []Candle or Signal (whose owner is a strategy,
// not an exchange), and candles take their Interval. Go methods cannot have
// type parameters, so these three are functions taking the Market; the
// seed's names stay as methods where they add something: GetTicker and
// SetTicker (the most common read and write), GetTickers and SetTickers (many
// symbols in one round trip), SetSignal (a TTL of its own). Invalidate with
// InvalidateExchange, InvalidateSymbol or InvalidateSignals; count API calls
// with IncrementAPICalls and read them with APICalls. Bad input is
// ErrInvalid; other errors are the cache's.
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
// InvalidateSignals of every strategy, which fan out from Go over them.
//
// A Market is safe for concurrent use.
package market
