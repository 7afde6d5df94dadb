// Package exchanges ships the rate limits of Binance, Coinbase and Kraken as
// presets for package middleware: the quotas each exchange counts, what each
// endpoint costs, and how to learn from the exchange's answers (usage headers,
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
// ParseBinanceExchangeInfo reads them into BinanceOptions.RateLimits.
package exchanges

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/redquota/redquota/internal/bound"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// Preset is an exchange's rate limits ready for package middleware: the quotas
// its requests are charged to, the rules that say what each request costs,
// and the Transport options that suit the exchange. Build one with Binance,
// Coinbase or Kraken; it is a value and safe to share.
type Preset struct {
	// Exchange names the exchange: "binance", "coinbase" or "kraken".
	Exchange string
	// Quotas are the quotas the rules charge, for inspection (Limiter.Allow,
	// Reset). Some are templates applied to a key per request (Binance's
	// accounts, Kraken's pairs: Quota.For(key)).
	Quotas []limiter.Quota
	// Rules charge each request to its quotas, first match wins. Requests no
	// rule matches (other hosts, endpoints the exchange does not limit) pass
	// through, counted in the Transport's Stats.Unmatched, unless
	// Options.Strict.
	Rules []middleware.Rule
	// Options are the middleware Transport's options the preset chose (window
	// guard, ban hold…), with the caller's own options from the preset's options
	// struct as the base.
	Options middleware.Options
}

// Transport returns the middleware Transport of the preset's rules and
// options: it charges every request the rules match to lim before sending it
// through next (http.DefaultTransport when nil), and learns from the answers.
// It fails with an error wrapping middleware.ErrInvalidRule when an overridden
// figure or host makes a rule unusable.
func (p Preset) Transport(lim *limiter.Limiter, next http.RoundTripper) (*middleware.Transport, error) {
	if lim == nil {
		return nil, errors.New("exchanges: nil limiter")
	}
	t := middleware.NewTransportWithOptions(next, lim, p.Options, p.Rules...)
	if err := t.Err(); err != nil {
		return nil, fmt.Errorf("exchanges: %s: %w", p.Exchange, err)
	}
	return t, nil
}

// Client returns a copy of base (a zero http.Client when nil) whose transport
// is p.Transport(lim, base.Transport). base itself is not modified.
func (p Preset) Client(lim *limiter.Limiter, base *http.Client) (*http.Client, error) {
	var c http.Client
	if base != nil {
		c = *base
	}
	t, err := p.Transport(lim, c.Transport)
	if err != nil {
		return nil, err
	}
	c.Transport = t
	return &c, nil
}

// scale multiplies d by s (1 when s is 0), to the microsecond.
func scale(d time.Duration, s float64) time.Duration {
	if s == 0 || s == 1 {
		return d
	}
	return time.Duration(math.Round(float64(d)*s/float64(time.Microsecond))) * time.Microsecond
}

// checkScale reports an unusable time scale.
func checkScale(s float64) error {
	if s < 0 || math.IsNaN(s) || math.IsInf(s, 0) {
		return fmt.Errorf("%w: time scale %v must be ≥ 0", ErrInvalidOption, s)
	}
	return nil
}

// reserve returns l with its burst lowered by n units (never below 1): units
// held back so that requests delayed on their way cannot reach a server bucket
// that has refilled to full all at once. See CoinbaseOptions.BurstReserve.
func reserve(l limiter.Limit, n int) limiter.Limit {
	if n <= 0 {
		return l
	}
	l.Burst = max(most(l)-n, 1)
	return l
}

// ErrInvalidOption: an option out of range (a negative time scale, an invalid
// overriding limit, a tier the preset does not know).
var ErrInvalidOption = errors.New("exchanges: invalid option")

// findLimit returns the limit of q named name.
func findLimit(q limiter.Quota, name string) (limiter.Limit, bool) {
	for _, nl := range q.Limits {
		if nl.Name == name {
			return nl.Limit, true
		}
	}
	return limiter.Limit{}, false
}

// most is the most units one call can take from l.
func most(l limiter.Limit) int { return bound.Most(l.Rate, l.Burst, l.Algorithm == limiter.GCRA) }
