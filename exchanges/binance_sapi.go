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
// English text, the table "/api/* and /sapi/* differ"). No page found lists
// which endpoints are IP- and which UID-limited: which of the two an
// endpoint is measured by, and its
// weight, are stated per endpoint in Binance's documentation; this preset has
// no table of them, so it charges every /sapi/ request to both: the IP's
// window of that endpoint and the account's window of that endpoint (an
// account only when the request carries one), each BinanceOptions.Weights'
// weight for the endpoint or UnknownWeight, and the headers correct the count
// of the one the answer reports.
const (
	binanceSAPIIPLimit  = 12_000
	binanceSAPIUIDLimit = 180_000
)

// binanceSAPIRule is the /sapi/ rule of opts (whose defaults are set), and
// its two quota templates: per IP and endpoint, per account and endpoint.
func binanceSAPIRule(opts BinanceOptions) (middleware.Rule, []limiter.Quota) {
	minute := scale(time.Minute, opts.timeScale)
	ipQ := limiter.Quota{Name: opts.Quota + "-sapi", Group: opts.Quota, Limits: []limiter.NamedLimit{
		{Name: "sapi-ip-weight", Limit: limiter.Limit{Rate: binanceSAPIIPLimit, Period: minute, Algorithm: limiter.FixedWindow}},
	}}
	uidQ := limiter.Quota{Name: opts.Quota + "-sapi-uid", Group: opts.Quota, Limits: []limiter.NamedLimit{
		{Name: "sapi-uid-weight", Limit: limiter.Limit{Rate: binanceSAPIUIDLimit, Period: minute, Algorithm: limiter.FixedWindow}},
	}}
	weights, unknown, account, ip := opts.Weights, opts.UnknownWeight, opts.Account, opts.IP
	charges := func(r *http.Request, _ []byte) ([]limiter.Charge, error) {
		method := r.Method
		if method == "" {
			method = http.MethodGet
		}
		endpoint := method + " " + r.URL.Path
		w, ok := weights[endpoint]
		if !ok {
			w = unknown
		}
		if w <= 0 {
			return []limiter.Charge{{Quota: limiter.Quota{Name: ipQ.Name, Group: ipQ.Group}.For(ip + " " + endpoint)}}, nil
		}
		cs := []limiter.Charge{{Quota: ipQ.For(ip + " " + endpoint), Cost: limiter.Cost{"sapi-ip-weight": w}}}
		if id := account(r); id != "" {
			cs = append(cs, limiter.Charge{Quota: uidQ.For(id + " " + endpoint), Cost: limiter.Cost{"sapi-uid-weight": w}})
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
	return rule, []limiter.Quota{ipQ, uidQ}
}

// sapiUsage reads X-SAPI-USED-IP-WEIGHT-1M and X-SAPI-USED-UID-WEIGHT-1M
// into the limit of the quota the request charged.
type sapiUsage struct{}

func (sapiUsage) ParseUsage(a *middleware.Answer) ([]middleware.Usage, error) {
	var out []middleware.Usage
	var errs []error
	for _, h := range []struct{ header, limit string }{
		{"X-SAPI-USED-IP-WEIGHT-1M", "sapi-ip-weight"},
		{"X-SAPI-USED-UID-WEIGHT-1M", "sapi-uid-weight"},
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
	return out, errors.Join(errs...)
}
