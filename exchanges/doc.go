// Package exchanges ships the rate limits of Binance, Coinbase, Kraken, Bybit
// and OKX as presets for package middleware: the quotas each exchange counts,
// what each endpoint costs, and how to learn from the exchange's answers (usage headers,
// 429 and 418 with Retry-After, error bodies).
//
// A preset is no more than middleware Rules and Options: each rule's Charges
// says what a request costs in which quotas (a quota template applied to a
// key with limiter.Quota.For: Binance's accounts, Kraken's pairs), and its
// usage parsers read the exchange's answers (headers, and error bodies
// through Rule.PeekBody) into holds and counts. One middleware.Transport
// serves a whole preset; windows, guards and holds are the limiter's.
//
// A preset is built once, from options whose zero value gives the exchange's
// documented figures; every figure cites its source in a comment and can be
// overridden. Preset.Client then wraps an *http.Client in one call:
//
//	p, _ := exchanges.Binance(exchanges.BinanceOptions{})
//	client, _ := p.Client(lim, nil)
//	resp, err := client.Get("https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=500")
//
// Every process that shares the limiter's Redis then shares the exchange's
// limits: the fleet, not the process, stays inside them.
//
// Exchanges change their limits; the figures here are the documented ones at
// the time of writing. Binance states its own in GET /api/v3/exchangeInfo:
// BinanceFromExchangeInfo builds the preset from them.
//
// Most callers should use one preset constructor (Binance, BinanceFutures,
// Coinbase, Kraken, Bybit, OKX) with its zero options, then Preset.Client
// (or Preset.Transport, to read the Transport's Stats). Those who keep
// WebSocket connections too use BinanceWebSocket, BybitWebSocket or
// OKXWebSocket with package wsguard: the same quotas, one state in Redis.
// Every error of bad input (an option out of range, an unusable rate limit,
// an implausible Kraken pair) wraps ErrInvalid and says which.
package exchanges
