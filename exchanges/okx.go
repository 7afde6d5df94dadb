package exchanges

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
	"github.com/redquota/redquota/wsguard"
)

// OKX v5's documented limits, from https://www.okx.com/docs-v5/en/: the
// sections "Rate Limits" (#overview-rate-limits) and "WebSocket / Connect"
// (#overview-websocket-connect) as crawled on 2026-07-04 and 2026-07-08, and
// each endpoint's "Rate Limit" and "Rate limit rule" lines as mirrored in
// github.com/rosssaunders/coincise docs/okx (last changed 2025-11-24),
// checked 2026-12-06; the official page itself could not be fetched here:
//
//   - "The rate limit is different for each endpoint": public
//     (unauthenticated) REST limits are "based on IP address", private ones
//     "on User ID (sub-accounts have individual User IDs)"; some endpoints
//     count per instrument (rule "User ID + Instrument ID", or "IP +
//     Instrument ID", "IP + Instrument Type"). Over a limit: error code 50011
//     "Rate limit reached" (HTTP 429; the error-code table also lists 50011
//     with HTTP 200).
//   - Trading (place, amend, cancel): limits per Instrument ID ("except
//     Options": per Instrument Family), shared by REST and WebSocket, each
//     operation apart, batch endpoints apart from single ones, except that a
//     batch of one order counts as a single order.
//   - Sub-account: "a maximum of 1000 order requests per 2 seconds", new and
//     amended orders only, each order of a batch counted; over it, 50061.
//   - WebSocket: "Connection limit: 3 requests per second (based on IP)";
//     "The total number of 'subscribe'/'unsubscribe'/'login' requests per
//     connection is limited to 480 times per hour"; 60014 "Requests too
//     frequent".
//
// OKX does not say how it counts "N requests per 2 seconds" (fixed or
// rolling): the preset counts a sliding window, which also keeps inside a
// fixed window or a token bucket of the same figures.
const (
	okxSubAccountOrders = 1000
	okxTooMany          = "50011"
	okxSubAccountLimit  = "50061"
)

// okxScope says what an endpoint's limit is counted per.
type okxScope uint8

const (
	okxIP      okxScope = iota // per IP
	okxIPInst                  // per IP and instrument ID
	okxIPType                  // per IP and instrument type
	okxUID                     // per User ID
	okxUIDInst                 // per User ID and instrument ID (family for options)
)

// okxEndpoint is one endpoint's documented limit.
type okxEndpoint struct {
	n      int           // requests (orders for a batch) per period
	period time.Duration // 2 s unless stated otherwise
	scope  okxScope
	batch  bool   // a JSON array of orders, each counted
	orders bool   // counts toward the sub-account's order limit (new and amended orders)
	single string // for a batch: the single-order endpoint a batch of one counts as
	custom bool   // an endpoint only OKXOptions.Limits names: per UID when keyed, else per IP
}

func per2s(n int, s okxScope) okxEndpoint {
	return okxEndpoint{n: n, period: 2 * time.Second, scope: s}
}

// okxEndpoints are the endpoints the preset knows (market data, public data,
// trading, account): each one's "Rate Limit" and "Rate limit rule".
var okxEndpoints = map[string]okxEndpoint{
	"GET /api/v5/market/tickers":             per2s(20, okxIP),
	"GET /api/v5/market/ticker":              per2s(20, okxIP),
	"GET /api/v5/market/books":               per2s(40, okxIP),
	"GET /api/v5/market/books-full":          per2s(10, okxIP),
	"GET /api/v5/market/candles":             per2s(40, okxIP),
	"GET /api/v5/market/history-candles":     per2s(20, okxIP),
	"GET /api/v5/market/trades":              per2s(100, okxIP),
	"GET /api/v5/market/history-trades":      per2s(20, okxIP),
	"GET /api/v5/market/index-tickers":       per2s(20, okxIP),
	"GET /api/v5/public/time":                per2s(10, okxIP),
	"GET /api/v5/public/instruments":         per2s(20, okxIPType),
	"GET /api/v5/public/funding-rate":        per2s(10, okxIPInst),
	"GET /api/v5/public/mark-price":          per2s(10, okxIPInst),
	"GET /api/v5/public/open-interest":       per2s(20, okxIPInst),
	"GET /api/v5/public/price-limit":         per2s(20, okxIP),
	"GET /api/v5/public/position-tiers":      per2s(10, okxIP),
	"POST /api/v5/trade/order":               {n: 60, period: 2 * time.Second, scope: okxUIDInst, orders: true},
	"POST /api/v5/trade/batch-orders":        {n: 300, period: 2 * time.Second, scope: okxUIDInst, batch: true, orders: true, single: "POST /api/v5/trade/order"},
	"POST /api/v5/trade/cancel-order":        per2s(60, okxUIDInst),
	"POST /api/v5/trade/cancel-batch-orders": {n: 300, period: 2 * time.Second, scope: okxUIDInst, batch: true, single: "POST /api/v5/trade/cancel-order"},
	"POST /api/v5/trade/amend-order":         {n: 60, period: 2 * time.Second, scope: okxUIDInst, orders: true},
	"POST /api/v5/trade/amend-batch-orders":  {n: 300, period: 2 * time.Second, scope: okxUIDInst, batch: true, orders: true, single: "POST /api/v5/trade/amend-order"},
	"POST /api/v5/trade/close-position":      per2s(20, okxUIDInst),
	"POST /api/v5/trade/mass-cancel":         per2s(5, okxUID),
	"GET /api/v5/trade/order":                per2s(60, okxUIDInst),
	"GET /api/v5/trade/orders-pending":       per2s(60, okxUID),
	"GET /api/v5/trade/orders-history":       per2s(40, okxUID),
	"GET /api/v5/trade/fills":                per2s(60, okxUID),
	"GET /api/v5/trade/fills-history":        per2s(10, okxUID),
	"GET /api/v5/account/balance":            per2s(10, okxUID),
	"GET /api/v5/account/positions":          per2s(10, okxUID),
	"GET /api/v5/account/config":             per2s(5, okxUID),
	"GET /api/v5/account/max-size":           per2s(20, okxUID),
	"GET /api/v5/account/leverage-info":      per2s(20, okxUID),
}

// OKXOptions configure an OKX v5 preset. The zero value gives OKX's
// documented limits; each field documents its default.
type OKXOptions struct {
	// Quota names the IP's endpoint limits, applied to each endpoint (and
	// instrument where OKX counts per instrument), and the Redis Cluster group
	// of every quota of the preset; a UID's endpoint limits are the quota
	// <Quota>-uid and its sub-account order limit <Quota>-orders, applied to
	// the UID. Use one name per IP. Default "okx".
	Quota string
	// Hosts are the hosts whose /api/v5/ requests are charged, each a host or
	// host:port (see middleware.Rule.Hosts). Default www.okx.com.
	Hosts []string
	// Account names the UID a private request counts against. Default: its
	// OK-ACCESS-KEY header (one UID per key: map your keys to their UID when
	// several keys share one). A private request without one is charged
	// nothing but waits out the endpoint's hold.
	Account func(*http.Request) string
	// Limits set or override endpoint limits, keyed "METHOD /path", e.g.
	// "GET /api/v5/market/books": Rate per Period, counted as a
	// sliding window per the endpoint's documented rule (an endpoint the
	// preset does not know counts per UID when it carries a key, else per
	// IP). Default: the documented table.
	Limits map[string]limiter.Limit
	// SubAccount overrides the sub-account order limit (1000 per 2 s; the
	// fill-ratio tiers raise it).
	SubAccount limiter.Limit
	// Guard is added to every limit's period, as BybitOptions.Guard.
	// Default 100 ms, at most a tenth of the shortest period; negative for none.
	Guard time.Duration
	// timeScale multiplies every period, for tests (export_test.go's Scaled).
	// Default 1.
	timeScale float64
	// Middleware is the Transport's options, used as they are.
	Middleware middleware.Options
}

// OKX returns the preset for OKX's v5 REST API (/api/v5/ on opts.Hosts).
// Each request is charged one request (each order of a batch, grouped by
// instrument; a batch of one as a single order) to its endpoint's sliding
// window: the IP's, or its UID's (see OKXOptions.Account), per instrument
// where OKX counts so (the instrument family for options); new and amended
// orders also count toward the UID's sub-account limit, in the same
// decision. Instruments come from the query string ("instId", "instType") or
// the JSON body.
//
// An answer with code 50011 (HTTP 429 or 200) fills the endpoint's window in
// every process, and a 429 holds that window for Middleware.FallbackHold
// (OKX gives no Retry-After); 50061 fills the sub-account's. OKX returns no
// usage headers. As with Bybit, the limiter serves each limit first come
// first served: an order booked ahead for its instrument's window books the
// sub-account's at the same time, ahead of later orders of other
// instruments.
func OKX(opts OKXOptions) (Preset, error) {
	pr, err := newOKXPricer(&opts)
	if err != nil {
		return Preset{}, err
	}
	if len(opts.Hosts) == 0 {
		opts.Hosts = []string{"www.okx.com"}
	}
	if opts.Account == nil {
		opts.Account = func(r *http.Request) string { return r.Header.Get("OK-ACCESS-KEY") }
	}
	account := opts.Account
	charges := func(r *http.Request, body []byte) ([]limiter.Charge, error) {
		method := r.Method
		if method == "" {
			method = http.MethodGet
		}
		ep := method + " " + r.URL.Path
		return pr.price(ep, account(r), func(batch bool) []okxInst { return okxInstruments(r.URL.Query(), body, batch) }), nil
	}
	rule := middleware.Rule{
		Hosts:      opts.Hosts,
		PathPrefix: "/api/v5/",
		Quota:      pr.holdOnly,
		Charges:    charges,
		Usage:      []middleware.UsageParser{{Parse: okxUsage{orders: pr.orders.Name}.ParseUsage}},
		PeekBody:   maxErrorBody,
	}
	return Preset{Exchange: "okx", Quotas: []limiter.Quota{pr.orders}, Rules: []middleware.Rule{rule}, Options: opts.Middleware}, nil
}

// okxPricer prices OKX requests, REST or WebSocket, on the same quotas.
type okxPricer struct {
	table    map[string]okxEndpoint
	limits   map[string]limiter.Limit // each endpoint's, padded
	ip, uid  string                   // the quotas' names
	group    string
	orders   limiter.Quota // the sub-account's
	holdOnly limiter.Quota // for what OKX does not count: its holds only
}

// newOKXPricer builds the limits of opts (setting its Quota's default).
func newOKXPricer(opts *OKXOptions) (okxPricer, error) {
	if err := checkScale(opts.timeScale); err != nil {
		return okxPricer{}, err
	}
	if opts.Quota == "" {
		opts.Quota = "okx"
	}
	g := opts.Quota
	table := make(map[string]okxEndpoint, len(okxEndpoints))
	shortest := scale(2*time.Second, opts.timeScale)
	for k, e := range okxEndpoints {
		e.period = scale(e.period, opts.timeScale)
		table[k] = e
	}
	for k, l := range opts.Limits {
		k = strings.Join(strings.Fields(k), " ")
		e, ok := table[k]
		if !ok {
			e.custom = true
		}
		e.n, e.period = l.Rate, scale(l.Period, opts.timeScale)
		table[k] = e
		if e.period > 0 {
			shortest = min(shortest, e.period)
		}
	}
	sub := opts.SubAccount
	if sub == (limiter.Limit{}) {
		sub = limiter.Limit{Rate: okxSubAccountOrders, Period: 2 * time.Second}
	}
	sub.Period = scale(sub.Period, opts.timeScale)
	guard := slidingGuard(opts.Guard, min(shortest, max(sub.Period, 1)))
	orders := limiter.Quota{Name: opts.Quota + "-orders", Group: g, Limits: []limiter.NamedLimit{{Name: "orders", Limit: sliding(sub, guard)}}}
	if err := orders.Validate(); err != nil {
		return okxPricer{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	limits := make(map[string]limiter.Limit, len(table))
	for k, e := range table {
		l := sliding(limiter.Limit{Rate: e.n, Period: e.period}, guard)
		if err := limiter.Key(k, l).Validate(); err != nil {
			return okxPricer{}, fmt.Errorf("%w: OKX limit %q: %w", ErrInvalid, k, err)
		}
		limits[k] = l
	}
	return okxPricer{
		table: table, limits: limits, ip: opts.Quota, uid: opts.Quota + "-uid", group: g,
		orders: orders, holdOnly: limiter.Quota{Name: opts.Quota, Group: g},
	}, nil
}

// price returns the charges of a request to endpoint ep ("METHOD /path") by
// UID id ("" for none), whose instruments insts reads.
func (p okxPricer) price(ep, id string, insts func(batch bool) []okxInst) []limiter.Charge {
	e, known := p.table[ep]
	if !known {
		return []limiter.Charge{{Quota: p.holdOnly.For(ep)}}
	}
	scope := e.scope
	if e.custom && id != "" {
		scope = okxUID
	}
	if scope >= okxUID && id == "" {
		return []limiter.Charge{{Quota: p.holdOnly.For(ep)}}
	}
	ins := insts(e.batch)
	if e.batch && len(ins) == 1 && ins[0].n == 1 && e.single != "" {
		ep, e = e.single, p.table[e.single]
	}
	endpoint := func(name, key string, n int) limiter.Charge {
		q := limiter.Quota{Name: name, Group: p.group, Limits: []limiter.NamedLimit{{Name: "requests", Limit: p.limits[ep]}}}.For(key)
		return limiter.Charge{Quota: q, Cost: limiter.Cost{"requests": n}}
	}
	var cs []limiter.Charge
	total := 0
	for _, in := range ins {
		total += in.n
		switch scope {
		case okxIP:
			cs = append(cs, endpoint(p.ip, ep, 1))
		case okxIPInst:
			cs = append(cs, endpoint(p.ip, ep+" "+in.id, in.n))
		case okxIPType:
			cs = append(cs, endpoint(p.ip, ep+" "+in.typ, in.n))
		case okxUID:
			cs = append(cs, endpoint(p.uid, id+" "+ep, 1))
		default:
			cs = append(cs, endpoint(p.uid, id+" "+ep+" "+in.id, in.n))
		}
		if scope == okxIP || scope == okxUID {
			break // counted once, whatever the instruments
		}
	}
	if e.orders {
		cs = append(cs, limiter.Charge{Quota: p.orders.For(id), Cost: limiter.Cost{"orders": max(total, 1)}})
	}
	return cs
}

// okxInst is one instrument of a request and how many of its orders it
// carries.
type okxInst struct {
	id, typ string
	n       int
}

// okxInstruments reads a request's instruments: instId and instType from
// the query string q (nil for none) or a JSON object body, or, for a batch, each order of a
// JSON array, grouped by instrument. Options count by instrument family
// (instId BTC-USD-250328-60000-C → BTC-USD). A request naming none is one
// instrument "".
func okxInstruments(q url.Values, body []byte, batch bool) []okxInst {
	type order struct {
		InstID   string `json:"instId"`
		InstType string `json:"instType"`
	}
	var os []order
	if len(body) > 0 && len(body) <= maxBody {
		b := bytes.TrimSpace(body)
		if batch && len(b) > 0 && b[0] == '[' {
			_ = json.Unmarshal(b, &os)
		} else {
			var o order
			if json.Unmarshal(b, &o) == nil {
				os = append(os, o)
			}
		}
	}
	if len(os) == 0 {
		os = append(os, order{})
	}
	var out []okxInst
	seen := map[string]int{}
	for _, o := range os {
		if v := q.Get("instId"); v != "" && !batch {
			o.InstID = v
		}
		if v := q.Get("instType"); v != "" {
			o.InstType = v
		}
		id := okxFamily(o.InstID)
		if i, ok := seen[id]; ok {
			out[i].n++
			continue
		}
		seen[id] = len(out)
		out = append(out, okxInst{id: id, typ: strings.ToUpper(o.InstType), n: 1})
	}
	return out
}

// okxFamily is the instrument an order's limit counts by: an option's family
// (its first two parts: BTC-USD-250328-60000-C → BTC-USD), else instId.
func okxFamily(instID string) string {
	parts := strings.Split(instID, "-")
	if len(parts) == 5 && (parts[4] == "C" || parts[4] == "P") {
		return parts[0] + "-" + parts[1]
	}
	return instID
}

// okxUsage reads OKX's refusals from an answer's body: 50011 fills the
// endpoint's window (the first charge), 50061 the sub-account's.
type okxUsage struct {
	orders string // the sub-account quota's name
}

func (o okxUsage) ParseUsage(a *middleware.Answer) ([]middleware.Usage, error) {
	var body struct {
		Code string `json:"code"`
	}
	if len(a.Charges) == 0 || json.Unmarshal(a.Body, &body) != nil {
		return nil, nil
	}
	switch body.Code {
	case okxTooMany:
		first := a.Charges[0].Quota
		if _, ok := findLimit(first, "requests"); !ok {
			return nil, nil // a hold-only charge: the 429 holds it
		}
		return []middleware.Usage{{Quota: first.Name, Limit: "requests", Used: math.MaxInt, Refused: true}}, nil
	case okxSubAccountLimit:
		return []middleware.Usage{{Quota: o.orders, Limit: "orders", Used: math.MaxInt, Refused: true}}, nil
	}
	return nil, nil
}

// okxWSOps are the WebSocket trading operations and the REST endpoints
// whose limits they share ("Rate limits are shared across the REST and
// WebSocket channels", "Rate Limits", "Trading-related APIs").
var okxWSOps = map[string]string{
	"order":               "POST /api/v5/trade/order",
	"batch-orders":        "POST /api/v5/trade/batch-orders",
	"amend-order":         "POST /api/v5/trade/amend-order",
	"batch-amend-orders":  "POST /api/v5/trade/amend-batch-orders",
	"cancel-order":        "POST /api/v5/trade/cancel-order",
	"batch-cancel-orders": "POST /api/v5/trade/cancel-batch-orders",
}

// OKXWebSocket returns the wsguard options for OKX's v5 WebSocket
// connections from one IP (/ws/v5/public, /private, /business), built from
// the same options as the REST preset OKX:
//
//   - each connection attempt is charged to the quota <Quota>-ws-connections,
//     at most 3 in any second ("Connection limit: 3 requests per second
//     (based on IP)"), a sliding window padded by Guard like the
//     REST limits; a handshake answered 429 holds it (the
//     guard's handling);
//   - trading operations (order, batch-orders, amend-order,
//     batch-amend-orders, cancel-order, batch-cancel-orders) are charged as
//     their REST endpoints, on the same quotas (one count in Redis for both
//     channels), to the UID of the last login message sent through the
//     guard (its first apiKey; use one guard per account); an answer with
//     code 50011, or an order in it with sCode 50011, holds what that request
//     was charged for the guard's FallbackHold;
//   - an error event with code 60014 ("Requests too frequent") holds the
//     connection quota for FallbackHold: the documentation does not say which
//     limit 60014 reports, so the fleet's next attempts wait rather than guess.
//
// Not enforced: the 480 subscribe, unsubscribe and login requests per
// connection per hour (wsguard's per-connection limit, MessageRate, counts
// every message, pings and orders included: set it yourself on a connection
// that only subscribes).
func OKXWebSocket(opts OKXOptions) (wsguard.Options, error) {
	pr, err := newOKXPricer(&opts)
	if err != nil {
		return wsguard.Options{}, err
	}
	period := scale(time.Second, opts.timeScale)
	l := sliding(limiter.Limit{Rate: 3, Period: period}, slidingGuard(opts.Guard, period))
	q := limiter.Quota{Name: opts.Quota + "-ws-connections", Group: opts.Quota, Limits: []limiter.NamedLimit{{Name: "connections", Limit: l}}}
	if err := q.Validate(); err != nil {
		return wsguard.Options{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var mu sync.Mutex
	var account string // the apiKey of the last login sent
	return wsguard.Options{
		Name:    opts.Quota + "-ws",
		Connect: []limiter.Charge{{Quota: q, Cost: limiter.Cost{"connections": 1}}},
		Charges: func(msg []byte) (string, []limiter.Charge, error) {
			var req struct {
				ID   string            `json:"id"`
				Op   string            `json:"op"`
				Args []json.RawMessage `json:"args"`
			}
			if json.Unmarshal(msg, &req) != nil {
				return "", nil, nil // "ping", not a request
			}
			if req.Op == "login" {
				var a []struct {
					APIKey string `json:"apiKey"`
				}
				_ = json.Unmarshal(okxArgs(req.Args), &a)
				if len(a) > 0 && a[0].APIKey != "" {
					mu.Lock()
					account = a[0].APIKey
					mu.Unlock()
				}
				return "", nil, nil
			}
			ep, ok := okxWSOps[req.Op]
			if !ok {
				return "", nil, nil
			}
			mu.Lock()
			id := account
			mu.Unlock()
			cs := pr.price(ep, id, func(bool) []okxInst { return okxInstruments(nil, okxArgs(req.Args), true) })
			return req.ID, cs, nil
		},
		Refusals: func(s wsguard.Signal) []wsguard.Refusal {
			var ev struct {
				ID    string `json:"id"`
				Event string `json:"event"`
				Code  string `json:"code"`
				Data  []struct {
					SCode string `json:"sCode"`
				} `json:"data"`
			}
			if s.Message == nil || json.Unmarshal(s.Message, &ev) != nil {
				return nil
			}
			if ev.Event == "error" && ev.Code == "60014" {
				return []wsguard.Refusal{{Quota: q.Name}}
			}
			if ev.ID == "" {
				return nil
			}
			limited := ev.Code == okxTooMany
			for _, d := range ev.Data {
				limited = limited || d.SCode == okxTooMany
			}
			if limited {
				return []wsguard.Refusal{{ID: ev.ID}}
			}
			return nil
		},
		FallbackHold: opts.Middleware.FallbackHold,
		MaxHold:      opts.Middleware.MaxHold,
		Telemetry:    opts.Middleware.Telemetry,
	}, nil
}

// okxArgs joins a WebSocket request's args into a JSON array.
func okxArgs(args []json.RawMessage) []byte {
	b, _ := json.Marshal(args)
	return b
}
