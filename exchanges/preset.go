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
// BinanceFromExchangeInfo, BinanceFutures, Coinbase, Kraken, Bybit or OKX;
// it is a value and safe to share.
type Preset struct {
	// Exchange names the exchange: "binance", "binance-futures", "coinbase",
	// "kraken", "bybit" or "okx".
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
// It fails with an error wrapping middleware.ErrInvalid when lim is nil or
// an overridden figure or host makes a rule unusable.
func (p Preset) Transport(lim *limiter.Limiter, next http.RoundTripper) (*middleware.Transport, error) {
	t, err := middleware.NewTransport(next, lim, p.Options, p.Rules...)
	if err != nil {
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
		return fmt.Errorf("%w: time scale %v must be ≥ 0", ErrInvalid, s)
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

// ErrInvalid is wrapped by every error of bad input, whose message says
// which: an option out of range (an invalid overriding limit, a tier the
// preset does not know, unusable Binance rate limits or exchangeInfo), or a
// Kraken trading, Trades or OHLC request whose pair is not a plausible name
// (not sent).
var ErrInvalid = errors.New("exchanges: invalid")

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
