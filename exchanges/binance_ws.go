package exchanges

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/wsguard"
)

// Binance's WebSocket figures, read in the binance/binance-spot-api-docs
// repository (commit a5e0bc3 of 2026-07-21; web-socket-api.md and
// web-socket-streams.md last changed 2026-06-09):
//
//   - "There is a limit of 300 connections per attempt every 5 minutes per
//     IP" (web-socket-streams.md, "WebSocket Limits"; web-socket-api.md,
//     "Connection limits": "The connection is per IP address"). The WebSocket
//     API states it in exchangeInfo as its CONNECTIONS rate limit (CHANGELOG.md,
//     2023-08-25). Binance counts its limits in clock-aligned windows
//     (web-socket-api.md, "How to interpret rate limits"): a fixed window.
//   - "Connecting to WebSocket API costs 2 weight" (web-socket-api.md, "IP
//     limits"), REQUEST_WEIGHT being "shared by all connections from that
//     address"; the WebSocket API "is subject to the same Filter and Rate
//     Limit rules as REST API" (CHANGELOG.md, 2022-12-15) and its weights are
//     REST's (CHANGELOG.md, 2023-08-25: "The REQUEST_WEIGHT rate limit for
//     both REST and WebSocket API"); it has no RAW_REQUESTS limit (same
//     entry: "removed RAW REQUESTS rate limit ... replaced it with
//     CONNECTIONS").
//   - Stream connections: "a limit of 5 incoming messages per second. A
//     message is considered: A PING frame, A PONG frame, A JSON controlled
//     message (e.g. subscribe, unsubscribe)"; "A single connection can listen
//     to a maximum of 1024 streams" (web-socket-streams.md, "WebSocket
//     Limits").
//   - Refusals: status 429 ("exceeded API request rate limit") and 418
//     ("auto-banned") in the answer's status field, with error.data.retryAfter,
//     the time (ms) the ban or back-off ends, beside error.data.serverTime
//     (web-socket-api.md, "Status codes" and "IP limits"); ORDERS refusals are
//     429 with code -1015 and the account's ORDERS counts ("Unfilled Order
//     Count": "maintained per account").
//
// Not found in those documents: a close code. A stream connection "that goes
// beyond the limit will be disconnected"; BinanceWebSocket treats a close with
// 1008 (policy violation, RFC 6455 §7.4.1) as that and holds the connection
// quota for the guard's FallbackHold before any reconnect.
const (
	binanceWSConnections    = 300
	binanceWSConnectPeriod  = 5 * time.Minute
	binanceWSConnectWeight  = 2
	binanceStreamMaxStreams = 1024
	// binanceStreamMessages leaves one of the documented 5 per second to the
	// pong frames the WebSocket library answers the server's pings with.
	binanceStreamMessages = 4
	closePolicyViolation  = 1008
)

// binanceWSMethods maps a WebSocket API method to the REST endpoint it
// mirrors, whose weight and order count it has (web-socket-api.md, each
// method's "Weight" and "Unfilled Order Count"; CHANGELOG.md 2022-12-15:
// "WebSocket API and REST API are functionally equivalent").
//
// Checked method by method against web-socket-api.md of binance-spot-api-docs
// at a5e0bc3 (2026-07-21) on 2026-12-07: the methods from
// "executionRules" down were missing, so they were charged UnknownWeight and
// no order. Each is there with its REST twin's weight and orders:
// executionRules, referencePrice, referencePrice.calculation (CHANGELOG.md,
// 2026-03-09), blockTrades.historical 25 (2026-05-06),
// order.amend.keepPriority 4 (2025-04-25; still 4 when it succeeds,
// 2026-04-02), orderList.place.opo 2 orders and .opoco 3 (2025-12-02),
// orderList.cancel 0 when it succeeds (2026-03-27), myFilters 40
// (2025-09-29), and the queries of order lists, prevented matches,
// allocations, commission rates and amendments. The deprecated OCO, orderList.place, says "Unfilled Order
// Count: 1" on web-socket-api.md while its REST twin POST /api/v3/order/oco
// says 2 on rest-api.md: an OCO places two orders, so it is charged 2 (the
// larger; never under Binance's count).
var binanceWSMethods = map[string]string{
	"ping":                       "GET /api/v3/ping",
	"time":                       "GET /api/v3/time",
	"exchangeInfo":               "GET /api/v3/exchangeInfo",
	"depth":                      "GET /api/v3/depth",
	"trades.recent":              "GET /api/v3/trades",
	"trades.historical":          "GET /api/v3/historicalTrades",
	"trades.aggregate":           "GET /api/v3/aggTrades",
	"klines":                     "GET /api/v3/klines",
	"uiKlines":                   "GET /api/v3/uiKlines",
	"avgPrice":                   "GET /api/v3/avgPrice",
	"ticker.24hr":                "GET /api/v3/ticker/24hr",
	"ticker.tradingDay":          "GET /api/v3/ticker/tradingDay",
	"ticker":                     "GET /api/v3/ticker",
	"ticker.price":               "GET /api/v3/ticker/price",
	"ticker.book":                "GET /api/v3/ticker/bookTicker",
	"order.place":                "POST /api/v3/order",
	"order.test":                 "POST /api/v3/order/test",
	"order.status":               "GET /api/v3/order",
	"order.cancel":               "DELETE /api/v3/order",
	"order.cancelReplace":        "POST /api/v3/order/cancelReplace",
	"openOrders.status":          "GET /api/v3/openOrders",
	"openOrders.cancelAll":       "DELETE /api/v3/openOrders",
	"orderList.place.oco":        "POST /api/v3/orderList/oco",
	"orderList.place.oto":        "POST /api/v3/orderList/oto",
	"orderList.place.otoco":      "POST /api/v3/orderList/otoco",
	"sor.order.place":            "POST /api/v3/sor/order",
	"sor.order.test":             "POST /api/v3/sor/order/test",
	"allOrders":                  "GET /api/v3/allOrders",
	"account.status":             "GET /api/v3/account",
	"myTrades":                   "GET /api/v3/myTrades",
	"account.rateLimits.orders":  "GET /api/v3/rateLimit/order",
	"executionRules":             "GET /api/v3/executionRules",
	"referencePrice":             "GET /api/v3/referencePrice",
	"referencePrice.calculation": "GET /api/v3/referencePrice/calculation",
	"blockTrades.historical":     "GET /api/v3/historicalBlockTrades",
	"order.amend.keepPriority":   "PUT /api/v3/order/amend/keepPriority",
	"orderList.place":            "POST /api/v3/order/oco",
	"orderList.place.opo":        "POST /api/v3/orderList/opo",
	"orderList.place.opoco":      "POST /api/v3/orderList/opoco",
	"orderList.cancel":           "DELETE /api/v3/orderList",
	"orderList.status":           "GET /api/v3/orderList",
	"openOrderLists.status":      "GET /api/v3/openOrderList",
	"allOrderLists":              "GET /api/v3/allOrderList",
	"myPreventedMatches":         "GET /api/v3/myPreventedMatches",
	"myAllocations":              "GET /api/v3/myAllocations",
	"account.commission":         "GET /api/v3/account/commission",
	"order.amendments":           "GET /api/v3/order/amendments",
	"myFilters":                  "GET /api/v3/myFilters",
}

// binanceWSOnly are the WebSocket API methods without a REST twin, and their
// weight: session.logon, session.status and session.logout 2 each
// ("Session Authentication" requests), and the User Data Stream
// subscriptions, userDataStream.subscribe, .subscribe.signature,
// .unsubscribe and session.subscriptions, 2 each (web-socket-api.md at
// a5e0bc3, each method's "Weight"; the last three since CHANGELOG.md
// 2025-08-12). userDataStream.start, .ping and .stop are gone since
// 2026-02-20 (CHANGELOG.md, 2026-01-21): UnknownWeight, like any method not
// listed. Checked 2026-12-07.
var binanceWSOnly = map[string]int{
	"session.logon":                      2,
	"session.status":                     2,
	"session.logout":                     2,
	"userDataStream.subscribe":           2,
	"userDataStream.subscribe.signature": 2,
	"userDataStream.unsubscribe":         2,
	"session.subscriptions":              2,
}

// BinanceWebSocket returns guard options for Binance spot's WebSocket API
// (api) and WebSocket Streams (streams), charged to the same quotas as the
// REST preset Binance(opts) builds: a WebSocket API request is charged its
// REST endpoint's weight to the IP's quota (opts.Quota) and its orders to
// its account's (opts.OrderQuota applied to the request's params.apiKey); a
// method without a REST twin (session.logon, the User Data Stream
// subscriptions) its documented weight, an unknown one opts.UnknownWeight; so
// REST and WebSocket share one count of each in Redis. Build both from the
// same opts.
//
// Connection attempts are charged to a quota of their own per IP,
// opts.Quota+"-ws-connections" for the WebSocket API (plus 2 weight to the
// IP's quota) and opts.Quota+"-stream-connections" for streams, each 300 per
// 5 minutes in fixed windows (the documents do not say whether the two
// endpoints count together; name them alike through opts.Quota to be safe).
// Stream connections send at most 4 messages per second each (Binance allows
// 5, pongs included) and hold at most 1024 streams. An answer with status 429
// holds the quota that refused it (the account's for code -1015, else the
// IP's) until its retryAfter; a 418 holds the IP's quota and the connection
// quota until the ban ends; a close with code 1008 holds the connection
// quota; a 403 (the Web Application Firewall's IP ban) holds the IP's quota
// for its retryAfter, else 5 minutes (see binanceWAFHold), and a handshake
// answered 403 the IP's quota (WebSocket API) or the stream connection
// quota for its Retry-After, else 5 minutes. Holds last at
// most opts.Middleware.MaxHold; the fallback is
// opts.Middleware.FallbackHold (default one second).
//
// A request without params.apiKey (a session logged on with session.logon)
// charges no account: its orders count only in REST's and Binance's books.
func BinanceWebSocket(opts BinanceOptions) (api, streams wsguard.Options, err error) {
	if err := opts.loadExchangeInfo(); err != nil {
		return api, streams, err
	}
	p, err := Binance(opts)
	if err != nil {
		return api, streams, err
	}
	ip := p.Quotas[0]
	ip.Guard = p.Options.WindowGuard
	var acct limiter.Quota
	if len(p.Quotas) > 1 && p.Quotas[1].Name == cmp.Or(opts.OrderQuota, defaultBinanceOrderQuota) {
		acct = p.Quotas[1]
		acct.Guard = p.Options.WindowGuard
	}
	rls := opts.RateLimits
	if rls == nil {
		rls = defaultBinanceRateLimits()
	}
	var weight, orders []string
	for _, rl := range rls {
		switch rl.RateLimitType {
		case binanceTypeWeight:
			weight = append(weight, rl.name())
		case binanceTypeOrders:
			orders = append(orders, rl.name())
		}
	}
	connQuota := func(suffix string) limiter.Quota {
		period := scale(binanceWSConnectPeriod, opts.timeScale)
		q := limiter.Quota{
			Name: ip.Name + suffix, Group: ip.Group, Guard: min(p.Options.WindowGuard, period/4),
			Limits: []limiter.NamedLimit{{Name: "connections-5m", Limit: limiter.Limit{
				Rate: binanceWSConnections, Period: period, Algorithm: limiter.FixedWindow}}},
		}
		if opts.IP != "" {
			q = q.For(opts.IP) // counted per IP, as the weight is
		}
		return q
	}
	weightCost := func(w int) limiter.Cost {
		c := limiter.Cost{}
		for _, n := range weight {
			c[n] = w
		}
		return c
	}
	fallback := opts.Middleware.FallbackHold
	if fallback == 0 {
		fallback = scale(time.Second, opts.timeScale)
	}
	apiConn, streamConn := connQuota("-ws-connections"), connQuota("-stream-connections")
	// A handshake answered 403 is the firewall's ban of the IP (see
	// binanceWAFHold): quota is held for its Retry-After, else 5 minutes.
	waf := scale(binanceWAFHold, opts.timeScale)
	wafHandshake := func(h *wsguard.HandshakeError, quota string) []wsguard.Refusal {
		if h.StatusCode != http.StatusForbidden {
			return nil
		}
		hold := waf
		if n, err := strconv.Atoi(strings.TrimSpace(h.Header.Get("Retry-After"))); err == nil && n > 0 {
			hold = time.Duration(n) * time.Second
		}
		return []wsguard.Refusal{{Quota: quota, Hold: hold}}
	}
	unknown := max(opts.UnknownWeight, 1)
	api = wsguard.Options{
		Name: ip.Name + "-ws-api",
		Connect: []limiter.Charge{
			{Quota: apiConn, Cost: limiter.Cost{"connections-5m": 1}},
			{Quota: ip, Cost: weightCost(binanceWSConnectWeight)},
		},
		Charges: func(msg []byte) (string, []limiter.Charge, error) {
			var req struct {
				ID     json.RawMessage            `json:"id"`
				Method string                     `json:"method"`
				Params map[string]json.RawMessage `json:"params"`
			}
			if err := json.Unmarshal(msg, &req); err != nil {
				return "", nil, fmt.Errorf("exchanges: binance websocket request: %w", err)
			}
			ps := wsParams(req.Params)
			method := strings.TrimPrefix(req.Method, "v3/")
			key := binanceWSMethods[method]
			w, ok := opts.Weights[key]
			if !ok {
				if f, found := binanceWeights[key]; found {
					w = f(ps)
				} else if ws, found := binanceWSOnly[method]; found {
					w = ws
				} else {
					w = unknown
				}
			}
			cs := []limiter.Charge{{Quota: ip, Cost: weightCost(w)}}
			if k := binanceOrders[key]; k > 0 && len(orders) > 0 && ps.Get("apiKey") != "" {
				oc := limiter.Cost{}
				for _, n := range orders {
					oc[n] = k
				}
				cs = append(cs, limiter.Charge{Quota: acct.For(ps.Get("apiKey")), Cost: oc})
			}
			return string(bytes.Trim(req.ID, `"`)), cs, nil
		},
		Refusals: func(s wsguard.Signal) []wsguard.Refusal {
			if s.Close != nil {
				if s.Close.Code == closePolicyViolation {
					return []wsguard.Refusal{{Quota: apiConn.Name}}
				}
				return nil
			}
			if s.Handshake != nil {
				return wafHandshake(s.Handshake, ip.Name) // Connect charges the IP's weight
			}
			return binanceWSRefusal(s.Message, ip.Name, acct.Name, apiConn.Name, waf)
		},
		FallbackHold: fallback,
		MaxHold:      opts.Middleware.MaxHold,
		Telemetry:    opts.Middleware.Telemetry,
	}
	msgRate := rate.Limit(binanceStreamMessages)
	if opts.timeScale > 0 {
		msgRate = rate.Limit(binanceStreamMessages / opts.timeScale)
	}
	streams = wsguard.Options{
		Name:        ip.Name + "-streams",
		Connect:     []limiter.Charge{{Quota: streamConn, Cost: limiter.Cost{"connections-5m": 1}}},
		MessageRate: msgRate,
		MaxStreams:  binanceStreamMaxStreams,
		Refusals: func(s wsguard.Signal) []wsguard.Refusal {
			if s.Close != nil && s.Close.Code == closePolicyViolation {
				return []wsguard.Refusal{{Quota: streamConn.Name}}
			}
			if s.Handshake != nil {
				return wafHandshake(s.Handshake, streamConn.Name)
			}
			return nil
		},
		FallbackHold: fallback,
		MaxHold:      opts.Middleware.MaxHold,
		Telemetry:    opts.Middleware.Telemetry,
	}
	return api, streams, nil
}

// binanceWSRefusal reads a WebSocket API answer with status 429, 418 or 403
// (blocked by the Web Application Firewall: held waf without retryAfter, see
// binanceWAFHold).
func binanceWSRefusal(msg []byte, ip, acct, conn string, waf time.Duration) []wsguard.Refusal {
	if !bytes.Contains(msg, []byte(`"status"`)) {
		return nil // a stream event or user data event
	}
	var a struct {
		ID     json.RawMessage `json:"id"`
		Status int             `json:"status"`
		Error  struct {
			Code int `json:"code"`
			Data struct {
				ServerTime int64 `json:"serverTime"`
				RetryAfter int64 `json:"retryAfter"`
			} `json:"data"`
		} `json:"error"`
	}
	if json.Unmarshal(msg, &a) != nil || a.Status != http.StatusTooManyRequests && a.Status != http.StatusTeapot && a.Status != http.StatusForbidden {
		return nil
	}
	id := string(bytes.Trim(a.ID, `"`))
	var hold time.Duration
	if d := a.Error.Data; d.RetryAfter > 0 {
		// Both times are the server's: their difference needs no clock of ours.
		if d.ServerTime > 0 {
			hold = time.Duration(d.RetryAfter-d.ServerTime) * time.Millisecond
		} else {
			hold = time.Until(time.UnixMilli(d.RetryAfter))
		}
		hold = max(hold, time.Millisecond)
	}
	switch {
	case a.Status == http.StatusForbidden:
		if hold == 0 {
			hold = waf
		}
		return []wsguard.Refusal{{Quota: ip, ID: id, Hold: hold}}
	case a.Status == http.StatusTeapot:
		return []wsguard.Refusal{{Quota: ip, ID: id, Hold: hold}, {Quota: conn, Hold: hold}}
	case a.Error.Code == -1015 && acct != "":
		return []wsguard.Refusal{{Quota: acct, ID: id, Hold: hold}}
	}
	return []wsguard.Refusal{{Quota: ip, ID: id, Hold: hold}}
}

// wsParams are a WebSocket API request's params as a weight function reads
// them: strings as they are, arrays (symbols) joined with commas, other
// values as their JSON text.
type wsParams map[string]json.RawMessage

func (p wsParams) Get(k string) string {
	v, ok := p[k]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	var arr []json.RawMessage
	if json.Unmarshal(v, &arr) == nil {
		parts := make([]string, len(arr))
		for i, e := range arr {
			parts[i] = string(bytes.Trim(e, `"`))
		}
		return strings.Join(parts, ",")
	}
	return string(v)
}

func (wsParams) Unknown() bool { return false }
