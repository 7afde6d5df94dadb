package exchanges

import (
	"fmt"

	"github.com/redquota/redquota/limiter"
)

// Names the tests reach that are not part of the package's API: the
// documented figures, the exchangeInfo parser and its error kinds.
const (
	BinanceRequestWeight = binanceTypeWeight
	BinanceRawRequests   = binanceTypeRaw
	BinanceOrders        = binanceTypeOrders

	DefaultBinanceQuota       = defaultBinanceQuota
	DefaultBinanceOrderQuota  = defaultBinanceOrderQuota
	DefaultBinanceWindowGuard = defaultBinanceWindowGuard
	DefaultKrakenCancelCost   = defaultKrakenCancelCost
	DefaultKrakenEditCost     = defaultKrakenEditCost

	KrakenStarter      = "starter"
	KrakenIntermediate = "intermediate"
	KrakenPro          = "pro"
)

var (
	ParseBinanceExchangeInfo = parseBinanceExchangeInfo
	BinanceWeight            = binanceWeight
	BinanceTestnetHosts      = binanceTestnetHosts

	ErrMissingField       = errMissingField
	ErrUnknownInterval    = errUnknownInterval
	ErrInvalidValue       = errInvalidValue
	ErrOutOfRange         = errOutOfRange
	ErrDuplicateRateLimit = errDuplicateRateLimit

	CoinbaseExchangePublic  = coinbaseExchangePublic
	CoinbaseExchangePrivate = coinbaseExchangePrivate
	CoinbaseExchangeFills   = coinbaseExchangeFills
)

// RateLimitError is the error of an unusable Binance rate limit.
type RateLimitError = rateLimitError

// KrakenCallCounter and KrakenTradingCounter return tier's counters.
func KrakenCallCounter(tier string) (limiter.Limit, bool) {
	l, ok := krakenCounter[tier]
	return l, ok
}

// KrakenTradingCounter returns tier's per-pair trading counter.
func KrakenTradingCounter(tier string) (limiter.Limit, bool) {
	l, ok := krakenTrading[tier]
	return l, ok
}

// Scaled returns opts (BinanceOptions, BybitOptions, KrakenOptions or
// OKXOptions) with their unexported time scale set to s: every period and
// hold multiplied by s, for tests against a simulator.
func Scaled[O any](opts O, s float64) O {
	switch p := any(&opts).(type) {
	case *BinanceOptions:
		p.timeScale = s
	case *BybitOptions:
		p.timeScale = s
	case *KrakenOptions:
		p.timeScale = s
	case *OKXOptions:
		p.timeScale = s
	default:
		panic(fmt.Sprintf("Scaled: %T has no time scale", opts))
	}
	return opts
}

// RateLimitName is r's limit name in the preset's quota, e.g. "weight-1m".
func RateLimitName(r BinanceRateLimit) string { return r.name() }

// RateLimitHeader is r's interval as the usage headers spell it, e.g. "1m".
func RateLimitHeader(r BinanceRateLimit) string { return r.header() }

// RaiseOnly returns opts whose ORDERS counts only rise (no limiter.Limit.Lowers).
func RaiseOnly(opts BinanceOptions) BinanceOptions {
	opts.raiseOnly = true
	return opts
}
