package exchanges

import (
	"errors"
	"net/http"
	"time"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// Binance's /sapi/ endpoints (wallet, margin, sub-accounts, …) do not share
// the /api/ limits: "Each endpoint with IP limits has an independent weight
// of 12,000 per minute limit. Each endpoint with UID limits has an
// independent weight of 180,000 per minute limit. Responses from endpoints
// with IP limits contain the header X-SAPI-USED-IP-WEIGHT-1M … with UID
// limits … X-SAPI-USED-UID-WEIGHT-1M" (Binance's developer forum, "Request
// limit on the API endpoints", https://dev.binance.vision/t/request-limit-on-the-api-endpoints/9275,
// read 2026-12-06). Binance's own documentation says the same (checked
// 2026-12-07): on /sapi/ "Each endpoint is marked as IP- or UID-limited,
// with its own weight", "Each IP-limited endpoint has an independent 12,000
// per minute; each UID-limited endpoint an independent 180,000 per minute",
// header X-SAPI-USED-IP-WEIGHT-1M or X-SAPI-USED-UID-WEIGHT-1M, and over a
// limit "always 429 — the 418 IP-ban escalation does not apply"
// (https://developers.binance.com/zh-CN/docs/products/caas/basics/4.rate-limits,
// English text, the table "/api/* and /sapi/* differ"). Each endpoint's
// weight and limit are in binanceSAPIWeights and binanceSAPIVariable
// (Binance's own connector, see there): a request is charged to the limit
// its endpoint counts against only, the IP's window of that endpoint or the
// account's (the account only when the request carries one), so that
// accounts behind one IP each have their own 180 000 on a UID-limited
// endpoint. An endpoint neither table knows is charged to both, the
// weight BinanceOptions.Weights gives it or UnknownWeight; Weights
// overrides a known endpoint's weight in the limit(s) it counts against.
// The headers correct the count of the limit the answer reports; a 429 holds
// the limits the request was charged weight in, not the IP's other
// endpoints. A request charged to its account only also takes nothing of
// the IP's window of its endpoint, so that a 403 (the firewall's ban of the
// IP, binanceWAF) still holds it.
//
// One endpoint counts in a window of a second: Withdraw History (GET
// /sapi/v1/capital/withdraw/history), "Weight(UID): 18000 (10 requests per
// second)" (binance-connector-js a9de9a9,
// clients/wallet/src/rest-api/modules/capital-api.ts); Binance's OpenAPI
// document (binance-api-swagger spot_api.yaml, 64b327c, 2024-10-08): "This
// endpoint specifically uses per second UID rate limit, user's total second
// level IP rate limit is 180000/second. Response from the endpoint contains
// header key X-SAPI-USED-UID-WEIGHT-1S". It is charged to the account's
// 180 000 a second (binanceSAPIUIDSecondLimit) of that endpoint only.
const (
	binanceSAPIIPLimit        = 12_000
	binanceSAPIUIDLimit       = 180_000
	binanceSAPIUIDSecondLimit = 180_000
)

// sapiWeight is what a /sapi/ request weighs in the IP's window of its
// endpoint (ip) and in its account's (uid); perSecond puts uid in the
// account's window of a second instead of a minute.
type sapiWeight struct {
	ip, uid   int
	perSecond bool
}

// binanceSAPIVariable are the /sapi/ endpoints whose weight depends on the
// request's parameters or that count against more than one limit. Sources:
// binance-connector-js a9de9a9 (2026-07-24), the endpoint's doc comment in
// the file named; read 2026-12-07.
var binanceSAPIVariable = map[string]func(q queryer) sapiWeight{
	// clients/margin-trading/src/rest-api/modules/account-api.ts:
	// "Weight: 1 when coin is specified;(IP) 5 when the coin parameter is
	// omitted(IP)" and "1 when a single is specified;(IP) 10 when the
	// symbol parameter is omitted(IP)".
	"GET /sapi/v1/margin/crossMarginData":    func(q queryer) sapiWeight { return sapiWeight{ip: pick(q.Get("coin") != "", 1, 5)} },
	"GET /sapi/v1/margin/isolatedMarginData": func(q queryer) sapiWeight { return sapiWeight{ip: pick(q.Get("symbol") != "", 1, 10)} },
	// clients/derivatives-trading-portfolio-margin-pro/src/rest-api/modules/market-data-api.ts:
	// "Weight: - 1 if `asset` is sent - 50 if `asset` is not sent", with no
	// IP or UID: charged to both.
	"GET /sapi/v1/portfolio/asset-index-price": func(q queryer) sapiWeight {
		w := pick(q.Get("asset") != "", 1, 50)
		return sapiWeight{ip: w, uid: w}
	},
	// clients/margin-trading/src/rest-api/modules/trade-api.ts: "Weight:
	// 6(UID) or 1500(UID) when sideEffectType is MARGIN_BUY or
	// AUTO_BORROW_REPAY" (new order, OCO, OTO, OTOCO).
	"POST /sapi/v1/margin/order":       marginOrderWeight,
	"POST /sapi/v1/margin/order/oco":   marginOrderWeight,
	"POST /sapi/v1/margin/order/oto":   marginOrderWeight,
	"POST /sapi/v1/margin/order/otoco": marginOrderWeight,
	// clients/margin-trading/src/rest-api/modules/account-api.ts:
	// "Weight(UID): 3000, 1 times/min per IP": the IP's whole
	// window of the endpoint, so once a minute per IP.
	"POST /sapi/v1/margin/max-leverage": func(queryer) sapiWeight { return sapiWeight{ip: binanceSAPIIPLimit, uid: 3000} },
	// clients/sub-account/src/rest-api/modules/asset-management-api.ts:
	// "Weight(IP): 1" and "Weight(UID): 360".
	"POST /sapi/v1/sub-account/universalTransfer": func(queryer) sapiWeight { return sapiWeight{ip: 1, uid: 360} },
	// clients/wallet/src/rest-api/modules/capital-api.ts: "Weight(UID):
	// 18000 (10 requests per second)" (see above).
	"GET /sapi/v1/capital/withdraw/history": func(queryer) sapiWeight { return sapiWeight{uid: 18000, perSecond: true} },
}

// marginOrderWeight is a margin order's weight: 1500 when it borrows or
// repays (sideEffectType MARGIN_BUY or AUTO_BORROW_REPAY, or parameters that
// could not be read), else 6, in the account's window.
func marginOrderWeight(q queryer) sapiWeight {
	se := q.Get("sideEffectType")
	return sapiWeight{uid: pick(se == "MARGIN_BUY" || se == "AUTO_BORROW_REPAY" || se == "" && q.Unknown(), 1500, 6)}
}

// binanceSAPIWeight is what a /sapi/ request of endpoint ("METHOD /path")
// with parameters q weighs, and whether the tables know the endpoint.
func binanceSAPIWeight(endpoint string, q queryer) (sapiWeight, bool) {
	if f, ok := binanceSAPIVariable[endpoint]; ok {
		return f(q), true
	}
	w, ok := binanceSAPIWeights[endpoint]
	return w, ok
}

// binanceSAPIRule is the /sapi/ rule of opts (whose defaults are set), and
// its quota templates: per IP and endpoint, per account and endpoint (a
// minute), per account and endpoint (a second).
func binanceSAPIRule(opts BinanceOptions) (middleware.Rule, []limiter.Quota) {
	minute := scale(time.Minute, opts.timeScale)
	ipQ := limiter.Quota{Name: opts.Quota + "-sapi", Group: opts.Quota, Limits: []limiter.NamedLimit{
		{Name: "sapi-ip-weight", Limit: limiter.Limit{Rate: binanceSAPIIPLimit, Period: minute, Algorithm: limiter.FixedWindow}},
	}}
	uidQ := limiter.Quota{Name: opts.Quota + "-sapi-uid", Group: opts.Quota, Limits: []limiter.NamedLimit{
		{Name: "sapi-uid-weight", Limit: limiter.Limit{Rate: binanceSAPIUIDLimit, Period: minute, Algorithm: limiter.FixedWindow}},
	}}
	// A quota of its own: a window guard of a second or more (a user's
	// Middleware.WindowGuard) fails the charges of this quota only.
	uidSecondQ := limiter.Quota{Name: opts.Quota + "-sapi-uid-1s", Group: opts.Quota, Limits: []limiter.NamedLimit{
		{Name: "sapi-uid-weight-1s", Limit: limiter.Limit{Rate: binanceSAPIUIDSecondLimit, Period: scale(time.Second, opts.timeScale), Algorithm: limiter.FixedWindow}},
	}}
	weights, unknown, account, ip := opts.Weights, opts.UnknownWeight, opts.Account, opts.IP
	charges := func(r *http.Request, body []byte) ([]limiter.Charge, error) {
		method := r.Method
		if method == "" {
			method = http.MethodGet
		}
		endpoint := method + " " + r.URL.Path
		w, known := binanceSAPIWeight(endpoint, &binanceParams{r: r, query: r.URL.Query(), body: body})
		if !known {
			w = sapiWeight{ip: unknown, uid: unknown}
		}
		if o, ok := weights[endpoint]; ok {
			w.ip, w.uid = pick(w.ip > 0 || !known, o, 0), pick(w.uid > 0 || !known, o, 0)
		}
		id := account(r)
		if id == "" {
			w.uid = 0 // no account to charge: Binance refuses the request
		}
		// The IP's window of the endpoint, charged nothing when the request
		// counts against its account only: a 403 still holds it.
		cs := []limiter.Charge{{Quota: limiter.Quota{Name: ipQ.Name, Group: ipQ.Group}.For(ip + " " + endpoint)}}
		if w.ip > 0 {
			cs[0] = limiter.Charge{Quota: ipQ.For(ip + " " + endpoint), Cost: limiter.Cost{"sapi-ip-weight": w.ip}}
		}
		if w.uid > 0 {
			c := limiter.Charge{Quota: uidQ.For(id + " " + endpoint), Cost: limiter.Cost{"sapi-uid-weight": w.uid}}
			if w.perSecond {
				c = limiter.Charge{Quota: uidSecondQ.For(id + " " + endpoint), Cost: limiter.Cost{"sapi-uid-weight-1s": w.uid}}
			}
			cs = append(cs, c)
		}
		return cs, nil
	}
	rule := middleware.Rule{
		Hosts:      opts.Hosts,
		PathPrefix: "/sapi/",
		Quota:      ipQ,
		Charges:    charges,
		Usage:      []middleware.UsageParser{{Parse: sapiUsage{}.ParseUsage}, binanceWAF(ipQ.Name, opts.timeScale)},
	}
	return rule, []limiter.Quota{ipQ, uidQ, uidSecondQ}
}

// sapiUsage reads X-SAPI-USED-IP-WEIGHT-1M, X-SAPI-USED-UID-WEIGHT-1M and
// X-SAPI-USED-UID-WEIGHT-1S into the limit of the quota the request charged,
// and claims a 429 for the quotas the request was charged weight in (the
// limit that refused it is among them), so that its hold spares the IP's
// window of an endpoint that counts against the account only.
type sapiUsage struct{}

func (sapiUsage) ParseUsage(a *middleware.Answer) ([]middleware.Usage, error) {
	var out []middleware.Usage
	var errs []error
	for _, h := range []struct{ header, limit string }{
		{"X-SAPI-USED-IP-WEIGHT-1M", "sapi-ip-weight"},
		{"X-SAPI-USED-UID-WEIGHT-1M", "sapi-uid-weight"},
		{"X-SAPI-USED-UID-WEIGHT-1S", "sapi-uid-weight-1s"},
	} {
		v := a.Header.Get(h.header)
		if v == "" {
			continue
		}
		n, err := parseCount(h.header, v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// The quota the request charged this limit to (none: a hold-only charge).
		for _, c := range a.Charges {
			if c.Cost[h.limit] > 0 {
				out = append(out, middleware.Usage{Quota: c.Quota.Name, Limit: h.limit, Used: n})
			}
		}
	}
	if a.StatusCode == http.StatusTooManyRequests {
		for _, c := range a.Charges {
			if len(c.Cost) > 0 {
				out = append(out, middleware.Usage{Quota: c.Quota.Name, Refused: true})
			}
		}
	}
	return out, errors.Join(errs...)
}
