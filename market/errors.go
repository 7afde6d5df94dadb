package market

import "github.com/redquota/redquota/cache"

// ErrInvalid is returned, before anything is sent to Redis, for bad input: an
// empty exchange, symbol, strategy or endpoint; an unknown candle interval, or
// none given for candles; a NaN or infinite price; a negative, NaN or
// infinite size or volume; order book levels out of order; a signal
// confidence outside [0, 1]; a negative TTL or window. The message says
// which. It is cache.ErrInvalid, so the cache's own bad-input errors (a name
// over 512 bytes...) match it too. Other errors are the cache's (see package
// cache): test for cache.ErrCircuitOpen, cache.ErrCodec or cache.ErrAuth.
var ErrInvalid = cache.ErrInvalid
