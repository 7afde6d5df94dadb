package exchanges

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// Coinbase's documented limits. Coinbase counts with a token bucket (a burst
// and a refill rate), which is limiter.GCRA: Rate per Period, Burst at once.
var (
	// coinbaseExchangePublic: "Requests per second per IP: 10", "in bursts: Up
	// to 15" (https://docs.cdp.coinbase.com/exchange/rest-api/rate-limits,
	// "Public Endpoints").
	coinbaseExchangePublic = limiter.Limit{Rate: 10, Period: time.Second, Burst: 15}
	// coinbaseExchangePrivate: "Requests per second per profile: 15", "in
	// bursts: Up to 30" (same page, "Private Endpoints").
	coinbaseExchangePrivate = limiter.Limit{Rate: 15, Period: time.Second, Burst: 30}
	// coinbaseExchangeFills: /fills, "Requests per second per profile: 10", "in
	// bursts: Up to 20" (same page, "Private /fills Endpoint").
	coinbaseExchangeFills = limiter.Limit{Rate: 10, Period: time.Second, Burst: 20}
	// coinbaseExchangeLoans: /loans, "Requests per second per profile: 10"
	// (https://docs.cdp.coinbase.com/exchange/rest-api/rate-limits, "Private
	// /loans Endpoint", checked 2026-12-06); "Rate limits do not apply to List
	// loan assets (/loans/assets) which is not private". No burst is
	// documented: one second's worth.
	coinbaseExchangeLoans = limiter.Limit{Rate: 10, Period: time.Second, Burst: 10}
	// coinbaseAdvancedTradePublic: public endpoints, 10 requests per second per
	// IP (https://docs.cloud.coinbase.com/advanced-trade/docs/rest-api-rate-limits).
	// No burst is documented: one second's worth.
	coinbaseAdvancedTradePublic = limiter.Limit{Rate: 10, Period: time.Second, Burst: 10}
	// coinbaseAdvancedTradePrivate: private endpoints, 30 requests per second
	// per user (same page). No burst is documented: one second's worth.
	coinbaseAdvancedTradePrivate = limiter.Limit{Rate: 30, Period: time.Second, Burst: 30}
)

// defaultBurstReserve is the default BurstReserve of the token-bucket presets
// (Coinbase, Kraken): one unit.
const defaultBurstReserve = 1

// CoinbaseOptions configure a Coinbase preset. The zero value gives the
// Exchange API's documented limits; each field documents its default.
type CoinbaseOptions struct {
	// AdvancedTrade limits the Advanced Trade REST API
	// (api.coinbase.com/api/v3/brokerage/). Default false: the Coinbase
	// Exchange REST API (api.exchange.coinbase.com).
	AdvancedTrade bool
	// Quota prefixes the quotas' names: <Quota>-public (per IP),
	// <Quota>-private (per profile or user) and, for the Exchange API,
	// <Quota>-fills. Use one per IP and profile. Default "coinbase".
	Quota string
	// Hosts are the hosts whose requests are charged, each a host or
	// host:port (see middleware.Rule.Hosts). Default
	// api.exchange.coinbase.com (Exchange) or api.coinbase.com (Advanced Trade).
	Hosts []string
	// Public, Private and Fills override the limits; zero values keep the
	// documented ones, each one token bucket (limiter.GCRA). Exchange API:
	// public 10 per second per IP, bursts of 15; private 15 per second per
	// profile, bursts of 30; /fills 10 per second per profile, bursts of 20
	// (https://docs.cdp.coinbase.com/exchange/rest-api/rate-limits).
	// Advanced Trade: public 10 per second per IP, private 30 per second per
	// user, bursts of one second's worth
	// (https://docs.cloud.coinbase.com/advanced-trade/docs/rest-api-rate-limits).
	// Fills applies to the Exchange API's /fills only.
	Public, Private, Fills limiter.Limit
	// BurstReserve is how many units of each burst the limiter keeps back. A
	// fleet that drains a full bucket at once sends a burst whose requests
	// travel at different speeds; when the server's bucket was full, the time
	// the slower ones spend on the way refills nothing (a full bucket cannot
	// grow), so a request granted just after the burst can reach the server
	// before a token is back. Holding back n units absorbs n emission
	// intervals of such jitter (100 ms each at 10 per second). Default
	// 1; negative for none.
	BurstReserve int
	// IsPrivate, when set, tells private (authenticated) requests from public
	// ones. Default: a request carrying CB-ACCESS-KEY (Exchange) or
	// Authorization (Advanced Trade's JWT) is private.
	IsPrivate func(*http.Request) bool
	// Middleware is the Transport's options, used as they are.
	Middleware middleware.Options
}

// Coinbase returns the preset for Coinbase's REST API: a per-IP quota for
// public endpoints and a per-profile (Exchange) or per-user (Advanced Trade)
// quota for private ones, each one token bucket, every request costing one.
// The Exchange API's private /fills and /loans (but /loans/assets) have
// quotas of their own, <Quota>-fills and <Quota>-loans (10 per second, a
// burst of 10: Coinbase documents no burst for it; not overridable).
// Coinbase answers 429 when a limit is exceeded, without a documented
// Retry-After: the Transport then holds the quota for its FallbackHold.
func Coinbase(opts CoinbaseOptions) (Preset, error) {
	name := opts.Quota
	if name == "" {
		name = "coinbase"
	}
	pub, priv, fills := coinbaseExchangePublic, coinbaseExchangePrivate, coinbaseExchangeFills
	hosts := []string{"api.exchange.coinbase.com"}
	if opts.AdvancedTrade {
		pub, priv = coinbaseAdvancedTradePublic, coinbaseAdvancedTradePrivate
		hosts = []string{"api.coinbase.com"}
	}
	if opts.Public != (limiter.Limit{}) {
		pub = opts.Public
	}
	if opts.Private != (limiter.Limit{}) {
		priv = opts.Private
	}
	if opts.Fills != (limiter.Limit{}) {
		fills = opts.Fills
	}
	if len(opts.Hosts) > 0 {
		hosts = opts.Hosts
	}
	n := opts.BurstReserve
	if n == 0 {
		n = defaultBurstReserve
	}
	isPrivate := opts.IsPrivate
	if isPrivate == nil {
		isPrivate = func(r *http.Request) bool {
			return r.Header.Get("CB-ACCESS-KEY") != "" || r.Header.Get("Authorization") != ""
		}
	}
	quota := func(suffix string, l limiter.Limit) (limiter.Quota, error) {
		q := limiter.Quota{Name: name + "-" + suffix, Limits: []limiter.NamedLimit{{Name: "requests", Limit: reserve(l, n)}}}
		if err := q.Validate(); err != nil {
			return q, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return q, nil
	}
	one := limiter.Cost{"requests": 1}
	var p Preset
	p.Exchange, p.Options = "coinbase", opts.Middleware
	if !opts.AdvancedTrade {
		q, err := quota("fills", fills)
		if err != nil {
			return Preset{}, err
		}
		p.Quotas = append(p.Quotas, q)
		p.Rules = append(p.Rules, middleware.Rule{
			Hosts:      hosts,
			PathPrefix: "/fills",
			Match: func(r *http.Request) bool {
				return isPrivate(r) && (r.URL.Path == "/fills" || strings.HasPrefix(r.URL.Path, "/fills/"))
			},
			Quota: q, Cost: one,
		})
		ql, err := quota("loans", coinbaseExchangeLoans)
		if err != nil {
			return Preset{}, err
		}
		p.Quotas = append(p.Quotas, ql)
		p.Rules = append(p.Rules, middleware.Rule{
			Hosts:      hosts,
			PathPrefix: "/loans",
			Match: func(r *http.Request) bool {
				return isPrivate(r) && isCoinbaseLoans(r.URL.Path)
			},
			Quota: ql, Cost: one,
		})
	}
	qp, err := quota("private", priv)
	if err != nil {
		return Preset{}, err
	}
	qu, err := quota("public", pub)
	if err != nil {
		return Preset{}, err
	}
	p.Quotas = append(p.Quotas, qp, qu)
	p.Rules = append(p.Rules,
		middleware.Rule{Hosts: hosts, Match: isPrivate, Quota: qp, Cost: one},
		middleware.Rule{Hosts: hosts, Quota: qu, Cost: one},
	)
	return p, nil
}

// isCoinbaseLoans reports whether path is one of the Exchange API's private
// /loans endpoints: /loans and below, but /loans/assets.
func isCoinbaseLoans(path string) bool {
	if path == "/loans/assets" || strings.HasPrefix(path, "/loans/assets/") {
		return false
	}
	return path == "/loans" || strings.HasPrefix(path, "/loans/")
}
