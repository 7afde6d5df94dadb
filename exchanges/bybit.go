package exchanges

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
	"github.com/redquota/redquota/wsguard"
)

// Bybit V5's documented limits, read in the bybit-exchange/docs repository
// (commit 072c197 of 2026-07-24; docs/v5/rate-limit/rate-limit.mdx last
// changed 2026-05-22 in 66875b8, the page https://bybit-exchange.github.io/docs/v5/rate-limit;
// docs/v5/error.mdx; checked 2026-12-06):
//
//   - "600 requests within a 5-second window per IP", for all traffic to
//     api.bybit.com, api.bybick.com (sic) and local hosts such as
//     api.bybit.kz; over it, "403, access too frequent": "terminate all HTTP
//     sessions and wait for at least 10 minutes" (rate-limit.mdx, "HTTP IP
//     limit"). The older pages (…/docs/derivatives/rate-limit) say "in any
//     5-second window" and name api.bytick.com: a sliding window.
//   - Per UID, per endpoint: "based on the rolling time window per second and
//     UID", reported in every answer by X-Bapi-Limit-Status ("your remaining
//     requests for current endpoint"), X-Bapi-Limit ("your current limit")
//     and X-Bapi-Limit-Reset-Timestamp (ms; "when your request limit resets
//     if you have exceeded your rate_limit"); over it, retCode 10006 "Too
//     many visits!" in the JSON body (rate-limit.mdx, "API Rate Limit").
//   - The per-endpoint figures of bybitUIDLimits (rate-limit.mdx, "API Rate
//     Limit Table", UTA2.0 Pro columns inverse, linear, option, spot).
//   - Batch endpoints count each order: "Number of consumption = number of
//     requests * number of orders included in a single request" (same page,
//     "Instructions for batch endpoints").
//   - WebSocket: "Do not establish more than 500 connections within a
//     5-minute window" to stream.bybit.com, and at most 1,000 market-data
//     connections per IP per market (rate-limit.mdx, "Websocket IP limit").
//
// Bybit does not say whether a 10006 answer has HTTP status 200 (the error
// page lists it among retCodes, whose answers are 200): the preset reads the
// body whatever the status.
const (
	bybitIPRequests = 600
	bybitIPPeriod   = 5 * time.Second
	bybitBan        = 10 * time.Minute
	bybitTooMany    = 10006
)

// bybitUIDLimits are the per-UID limits per second of each endpoint, by
// category ("" for every category), from rate-limit.mdx's "API Rate Limit
// Table" (Trade, Position and Account; Asset and User endpoints are not
// charged per UID unless BybitOptions.Limits names them). A category the
// table leaves out ("-") or a request without category takes the smallest
// figure of the endpoint.
var bybitUIDLimits = map[string]map[string]int{
	"POST /v5/order/create":                  {"inverse": 10, "linear": 10, "option": 10, "spot": 20},
	"POST /v5/order/amend":                   {"inverse": 10, "linear": 10, "option": 10, "spot": 10},
	"POST /v5/order/cancel":                  {"inverse": 10, "linear": 10, "option": 10, "spot": 20},
	"POST /v5/order/cancel-all":              {"inverse": 10, "linear": 10, "option": 1, "spot": 20},
	"POST /v5/order/create-batch":            {"inverse": 10, "linear": 10, "option": 10, "spot": 20},
	"POST /v5/order/amend-batch":             {"inverse": 10, "linear": 10, "option": 10, "spot": 20},
	"POST /v5/order/cancel-batch":            {"inverse": 10, "linear": 10, "option": 10, "spot": 20},
	"POST /v5/order/disconnected-cancel-all": {"": 5},
	"POST /v5/order/pre-check":               {"inverse": 10, "linear": 10, "option": 10, "spot": 20},
	"GET /v5/order/realtime":                 {"": 50},
	"GET /v5/order/history":                  {"": 50},
	"GET /v5/execution/list":                 {"": 50},
	"GET /v5/order/spot-borrow-check":        {"": 50},
	"GET /v5/position/list":                  {"": 50},
	"GET /v5/position/closed-pnl":            {"": 50},
	"GET /v5/position/get-closed-positions":  {"": 50},
	"GET /v5/position/move-history":          {"": 10},
	"POST /v5/position/set-leverage":         {"": 10},
	"POST /v5/position/switch-mode":          {"": 10},
	"POST /v5/position/trading-stop":         {"": 10},
	"POST /v5/position/set-auto-add-margin":  {"": 10},
	"POST /v5/position/add-margin":           {"": 10},
	"POST /v5/position/confirm-pending-mmr":  {"": 10},
	"POST /v5/position/move-positions":       {"": 10},
	"GET /v5/account/wallet-balance":         {"": 50},
	"GET /v5/account/withdrawal":             {"": 50},
	"GET /v5/account/borrow-history":         {"": 50},
	"GET /v5/account/collateral-info":        {"": 50},
	"GET /v5/asset/coin-greeks":              {"": 50},
	"GET /v5/account/transaction-log":        {"": 25},
	"GET /v5/account/fee-rate":               {"": 5},
	"GET /v5/account/info":                   {"": 50},
	"GET /v5/account/instruments-info":       {"": 10},
	"GET /v5/account/query-dcp-info":         {"": 5},
	"GET /v5/account/smp-group":              {"": 5},
	"POST /v5/account/mmp-modify":            {"": 5},
	"POST /v5/account/mmp-reset":             {"": 5},
	"POST /v5/account/set-margin-mode":       {"": 5},
	"POST /v5/account/set-limit-px-action":   {"": 10},
	"POST /v5/account/upgrade-to-uta":        {"": 1},
	"POST /v5/account/borrow":                {"": 1},
	"POST /v5/account/repay":                 {"": 1},
	"POST /v5/account/quick-repayment":       {"": 1},
}

// bybitBatch are the batch endpoints, which count each order of "request".
var bybitBatch = map[string]bool{
	"POST /v5/order/create-batch": true,
	"POST /v5/order/amend-batch":  true,
	"POST /v5/order/cancel-batch": true,
}

// BybitOptions configure a Bybit V5 preset. The zero value gives Bybit's
// documented limits for a UTA2.0 Pro account; each field documents its
// default.
type BybitOptions struct {
	// Quota names the IP's quota (600 requests per 5 s) and the Redis Cluster
	// group of every quota of the preset; each UID's endpoint limits are the
	// quota <Quota>-uid applied to the UID, endpoint and category. Use one
	// name per IP; a UID used from two IPs is then counted apart in each.
	// Default "bybit".
	Quota string
	// Hosts are the hosts whose /v5/ requests are charged, each a host or
	// host:port (see middleware.Rule.Hosts). Default api.bybit.com,
	// api.bytick.com and api.bybick.com (as the documentation names them).
	Hosts []string
	// Account names the UID a request counts against. Default: its
	// X-BAPI-API-KEY header (one UID per key: map your keys to their UID when
	// several keys share one). A request without one is charged to the IP
	// only.
	Account func(*http.Request) string
	// IP overrides the IP's limit; the zero value keeps
	// 600 per 5 s.
	IP limiter.Limit
	// Limits set or override per-UID endpoint limits (the VIP and Pro levels
	// raise the "upgradable" ones), keyed "METHOD /path" for every category
	// or "METHOD /path category" for one, e.g. "POST /v5/order/create linear":
	// Rate per Period, counted as a sliding window. Default: the
	// documented table.
	Limits map[string]limiter.Limit
	// Guard is added to every limit's period: a request granted at t
	// still counts until t+Period+Guard, so that requests that reach Bybit up
	// to Guard later than their grant cannot crowd a window of Bybit's. Set it
	// to the spread of the one-way latency to Bybit. Default 100 ms, at most a
	// tenth of the shortest period; negative for none.
	Guard time.Duration
	// timeScale multiplies every period and the ban hold, for tests against a
	// simulator. Default 1.
	timeScale float64
	// Middleware is the Transport's options, as the base; the preset sets
	// BanHold (10 minutes) where it is zero.
	Middleware middleware.Options
}

// Bybit returns the preset for Bybit's V5 REST API (/v5/ on opts.Hosts).
// Every request is charged, in one decision, one request to the IP's quota
// (a sliding window of 600 per 5 s) and, for an endpoint with a per-UID
// limit whose request names a UID (see BybitOptions.Account), one request
// (each order of a batch) to that UID's, endpoint's and category's sliding
// window of one second. Categories come from the query string or a JSON
// body ("category").
//
// It learns from each answer: X-Bapi-Limit-Status raises the UID's count
// for the endpoint to its limit less the remaining requests (never lowering
// it) and, at 0, holds it until X-Bapi-Limit-Reset-Timestamp; retCode 10006
// fills that window in every process (and holds it until the reset time,
// when given); an HTTP 403 whose body is not a V5 JSON answer (the IP ban's
// "access too frequent") holds the IP's quota for Middleware.BanHold.
//
// The limiter serves each limit first come first served: a request that
// must wait for its UID's window is booked at its turn in the IP's log too,
// and requests on the same IP asked for after it (other UIDs, other
// endpoints) are booked no earlier. Callers that keep one UID's endpoint
// saturated therefore delay the IP's other traffic; give such a stream a
// context deadline (or Middleware.FailFast) rather than an unbounded queue.
func Bybit(opts BybitOptions) (Preset, error) {
	if err := checkScale(opts.timeScale); err != nil {
		return Preset{}, err
	}
	if opts.Quota == "" {
		opts.Quota = "bybit"
	}
	if len(opts.Hosts) == 0 {
		opts.Hosts = []string{"api.bybit.com", "api.bytick.com", "api.bybick.com"}
	}
	if opts.Account == nil {
		opts.Account = func(r *http.Request) string { return r.Header.Get("X-BAPI-API-KEY") }
	}
	ipLimit := opts.IP
	if ipLimit == (limiter.Limit{}) {
		ipLimit = limiter.Limit{Rate: bybitIPRequests, Period: bybitIPPeriod}
	}
	ipLimit.Period = scale(ipLimit.Period, opts.timeScale)
	shortest := min(ipLimit.Period, scale(time.Second, opts.timeScale))
	for _, l := range opts.Limits {
		if p := scale(l.Period, opts.timeScale); p > 0 {
			shortest = min(shortest, p)
		}
	}
	guard := slidingGuard(opts.Guard, shortest)
	ip := limiter.Quota{Name: opts.Quota, Group: opts.Quota, Limits: []limiter.NamedLimit{{Name: "requests", Limit: sliding(ipLimit, guard)}}}
	if err := ip.Validate(); err != nil {
		return Preset{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	uid := limiter.Quota{Name: opts.Quota + "-uid", Group: opts.Quota}
	table := map[string]limiter.Limit{}
	for ep, cats := range bybitUIDLimits {
		for cat, n := range cats {
			table[strings.TrimSpace(ep+" "+cat)] = limiter.Limit{Rate: n, Period: scale(time.Second, opts.timeScale)}
		}
	}
	for k, l := range opts.Limits {
		l.Period = scale(l.Period, opts.timeScale)
		table[strings.Join(strings.Fields(k), " ")] = l
	}
	for k, l := range table {
		l = sliding(l, guard)
		if err := limiter.Key(k, l).Validate(); err != nil {
			return Preset{}, fmt.Errorf("%w: Bybit limit %q: %w", ErrInvalid, k, err)
		}
		table[k] = l
	}
	account := opts.Account
	one := limiter.Cost{"requests": 1}
	charges := func(r *http.Request, body []byte) ([]limiter.Charge, error) {
		cs := []limiter.Charge{{Quota: ip, Cost: one}}
		method := r.Method
		if method == "" {
			method = http.MethodGet
		}
		ep := method + " " + r.URL.Path
		p := bybitParse(r, body)
		l, ok := bybitLookup(table, ep, p.Category)
		if !ok {
			return cs, nil
		}
		id := account(r)
		if id == "" {
			return cs, nil
		}
		n := 1
		if bybitBatch[ep] && p.Orders > 0 {
			n = p.Orders
		}
		q := uid
		q.Limits = []limiter.NamedLimit{{Name: "requests", Limit: l}}
		return append(cs, limiter.Charge{Quota: q.For(id + " " + ep + " " + p.Category), Cost: limiter.Cost{"requests": n}}), nil
	}
	mo := opts.Middleware
	if mo.BanHold == 0 {
		mo.BanHold = scale(bybitBan, opts.timeScale)
	}
	rule := middleware.Rule{
		Hosts:      opts.Hosts,
		PathPrefix: "/v5/",
		Quota:      ip,
		Charges:    charges,
		Usage:      []middleware.UsageParser{{Parse: bybitUsage{ip: ip.Name, uid: uid.Name, ban: mo.BanHold}.ParseUsage}},
		PeekBody:   maxErrorBody,
	}
	return Preset{Exchange: "bybit", Quotas: []limiter.Quota{ip}, Rules: []middleware.Rule{rule}, Options: mo}, nil
}

// bybitLookup finds ep's limit for category: its own, the endpoint's for
// every category, or (a category the table does not give) its smallest.
func bybitLookup(table map[string]limiter.Limit, ep, category string) (limiter.Limit, bool) {
	if category != "" {
		if l, ok := table[ep+" "+category]; ok {
			return l, true
		}
	}
	if l, ok := table[ep]; ok {
		return l, true
	}
	var best limiter.Limit
	found := false
	for k, l := range table {
		if strings.HasPrefix(k, ep+" ") && (!found || float64(l.Rate)/float64(l.Period) < float64(best.Rate)/float64(best.Period)) {
			best, found = l, true
		}
	}
	return best, found
}

// bybitParams are what a V5 request says of its cost: its category and, for
// a batch, how many orders it carries.
type bybitParams struct {
	Category string            `json:"category"`
	Request  []json.RawMessage `json:"request"`
	Orders   int               `json:"-"`
}

// bybitParse reads r's category from its query string or JSON body, and a
// batch's orders from the body's "request" array.
func bybitParse(r *http.Request, body []byte) bybitParams {
	var p bybitParams
	if len(body) > 0 && len(body) <= maxBody {
		_ = json.Unmarshal(body, &p)
	}
	if c := r.URL.Query().Get("category"); c != "" {
		p.Category = c
	}
	p.Category = strings.ToLower(p.Category)
	p.Orders = len(p.Request)
	p.Request = nil
	return p
}

// sliding returns l counted as a sliding window whose period is longer by
// guard.
func sliding(l limiter.Limit, guard time.Duration) limiter.Limit {
	l.Algorithm = limiter.SlidingWindow
	l.Period += guard
	l.Burst = 0
	return l
}

// slidingGuard is a sliding-window preset's Guard option: g, or by default
// 100 ms but at most a tenth of the shortest period; none when negative.
func slidingGuard(g, shortest time.Duration) time.Duration {
	switch {
	case g < 0:
		return 0
	case g == 0:
		return min(100*time.Millisecond, shortest/10)
	}
	return g
}

// bybitUsage reads Bybit's answers: the X-Bapi-Limit-* headers and retCode
// 10006 into the UID's endpoint window, a 403 ban into a hold of the IP's
// quota.
type bybitUsage struct {
	ip, uid string        // the quotas' names
	ban     time.Duration // the 403's hold
}

func (b bybitUsage) ParseUsage(a *middleware.Answer) ([]middleware.Usage, error) {
	var body struct {
		RetCode *int `json:"retCode"`
	}
	isV5 := json.Unmarshal(a.Body, &body) == nil && body.RetCode != nil
	if a.StatusCode == http.StatusForbidden && !isV5 {
		return []middleware.Usage{{Quota: b.ip, Hold: b.ban}}, nil
	}
	if !b.charged(a) {
		return nil, nil
	}
	var out []middleware.Usage
	var err error
	hold := func() time.Duration {
		v := a.Header.Get("X-Bapi-Limit-Reset-Timestamp")
		if v == "" {
			return 0
		}
		ms, e := parseCount("X-Bapi-Limit-Reset-Timestamp", v)
		if e != nil {
			err = e
			return 0
		}
		return max(time.Until(time.UnixMilli(int64(ms))), 0)
	}
	if v := a.Header.Get("X-Bapi-Limit-Status"); v != "" {
		left, e := parseCount("X-Bapi-Limit-Status", v)
		if e != nil {
			return nil, e
		}
		if l, ok := b.limit(a); ok && left < most(l) {
			u := middleware.Usage{Quota: b.uid, Limit: "requests", Used: most(l) - left}
			if left == 0 {
				u.Hold = hold()
			}
			out = append(out, u)
		}
	}
	if isV5 && *body.RetCode == bybitTooMany {
		out = append(out, middleware.Usage{Quota: b.uid, Limit: "requests", Used: math.MaxInt, Hold: hold(), Refused: true})
	}
	return out, err
}

// charged reports whether a's request was charged to a UID's endpoint limit.
func (b bybitUsage) charged(a *middleware.Answer) bool {
	_, ok := b.limit(a)
	return ok
}

// limit returns the limit of the UID endpoint charge of a's request.
func (b bybitUsage) limit(a *middleware.Answer) (limiter.Limit, bool) {
	for _, c := range a.Charges {
		if c.Quota.Name == b.uid {
			return findLimit(c.Quota, "requests")
		}
	}
	return limiter.Limit{}, false
}

// BybitWebSocket returns the wsguard options for Bybit's V5 WebSocket
// connections from one IP (stream.bybit.com and its local hosts): each
// connection attempt is charged to the quota <Quota>-ws-connections, at most
// 500 attempts in any 5 minutes ("Do not establish more than 500 connections
// within a 5-minute window", rate-limit.mdx, "Websocket IP limit"), a
// sliding window padded by Guard like the REST
// limits, in the group of the REST preset's quotas. A handshake answered 429
// holds it (the guard's handling). Not modelled: the 1,000 market-data
// connections per IP and market open at once (a count of open connections,
// not a rate), and the WebSocket trade API's per-session limits.
func BybitWebSocket(opts BybitOptions) (wsguard.Options, error) {
	if err := checkScale(opts.timeScale); err != nil {
		return wsguard.Options{}, err
	}
	if opts.Quota == "" {
		opts.Quota = "bybit"
	}
	period := scale(5*time.Minute, opts.timeScale)
	l := sliding(limiter.Limit{Rate: 500, Period: period}, slidingGuard(opts.Guard, period))
	q := limiter.Quota{Name: opts.Quota + "-ws-connections", Group: opts.Quota, Limits: []limiter.NamedLimit{{Name: "connections", Limit: l}}}
	if err := q.Validate(); err != nil {
		return wsguard.Options{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return wsguard.Options{
		Name:      opts.Quota + "-ws",
		Connect:   []limiter.Charge{{Quota: q, Cost: limiter.Cost{"connections": 1}}},
		MaxHold:   opts.Middleware.MaxHold,
		Telemetry: opts.Middleware.Telemetry,
	}, nil
}
