package exchanges

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// Binance spot rate-limit types, as exchangeInfo's rateLimitType names them.
const (
	// BinanceRequestWeight is the IP's request weight: every endpoint costs its weight.
	BinanceRequestWeight = "REQUEST_WEIGHT"
	// BinanceRawRequests is the IP's count of requests, whatever their weight.
	BinanceRawRequests = "RAW_REQUESTS"
	// BinanceOrders is the account's count of orders placed (unfilled order count).
	BinanceOrders = "ORDERS"
)

// DefaultBinanceRateLimits are Binance spot's limits when nothing overrides them.
//
//   - REQUEST_WEIGHT 6000 per minute per IP and RAW_REQUESTS 61000 per 5
//     minutes per IP: https://developers.binance.com/docs/binance-spot-api-docs/enums
//     ("Rate limiters (rateLimitType)"), the figures GET /api/v3/exchangeInfo
//     serves; https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits
//     defers to them.
//   - ORDERS 100 per 10 seconds and 200000 per day per account: the figures
//     api.binance.com/api/v3/exchangeInfo serves to a default account. The
//     limits page gives no figure (the unfilled order count depends on the
//     account: https://developers.binance.com/docs/binance-spot-api-docs/faqs/order_count_decrement),
//     so load yours with ParseBinanceExchangeInfo when they differ.
//
// Binance counts each in windows aligned to the clock (a request at 00:01:23.456
// counts toward the 00:01:00 minute), which is limiter.FixedWindow:
// https://developers.binance.com/docs/binance-spot-api-docs/websocket-api/rate-limits
// ("How to interpret rate limits").
func DefaultBinanceRateLimits() []BinanceRateLimit {
	return []BinanceRateLimit{
		{RateLimitType: BinanceRequestWeight, Interval: "MINUTE", IntervalNum: 1, Limit: 6000},
		{RateLimitType: BinanceRawRequests, Interval: "MINUTE", IntervalNum: 5, Limit: 61000},
		{RateLimitType: BinanceOrders, Interval: "SECOND", IntervalNum: 10, Limit: 100},
		{RateLimitType: BinanceOrders, Interval: "DAY", IntervalNum: 1, Limit: 200000},
	}
}

// Defaults of BinanceOptions.
const (
	// DefaultBinanceQuota names the quota of a Binance preset.
	DefaultBinanceQuota = "binance"
	// DefaultBinanceWindowGuard is the default middleware.Options.WindowGuard of
	// a Binance preset: the one-way latency to Binance plus the difference
	// between Redis's clock and Binance's, generously. A request granted this
	// close to the end of its minute is charged again in the next minute.
	DefaultBinanceWindowGuard = 250 * time.Millisecond
	// DefaultBinanceBanHold is how long a 418 without Retry-After holds the
	// quota: Binance's shortest IP ban, 2 minutes ("IP bans are tracked and
	// scale in duration for repeat offenders, from 2 minutes to 3 days":
	// https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits).
	DefaultBinanceBanHold = 2 * time.Minute
)

// DefaultBinanceHosts are the spot REST hosts a Binance preset matches:
// https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-api-information
// (the base endpoint and its clusters) and the market-data-only host
// (https://developers.binance.com/docs/binance-spot-api-docs/faqs/market_data_only).
var DefaultBinanceHosts = []string{
	"api.binance.com", "api-gcp.binance.com",
	"api1.binance.com", "api2.binance.com", "api3.binance.com", "api4.binance.com",
	"data-api.binance.vision",
}

// BinanceOptions configure a Binance spot preset. The zero value gives
// Binance's documented limits; each field documents its default.
type BinanceOptions struct {
	// Quota names the quota, and so the Redis state every process shares. Use
	// one name per IP and account: Binance counts weight per IP and orders per
	// account, and a request costs both, so they are one quota charged all or
	// nothing. Default DefaultBinanceQuota.
	Quota string
	// Hosts are the hosts whose /api/ requests are charged. Default
	// DefaultBinanceHosts.
	Hosts []string
	// RateLimits are the limits, in exchangeInfo's terms. Default
	// DefaultBinanceRateLimits(); ParseBinanceExchangeInfo reads the exchange's own.
	RateLimits []BinanceRateLimit
	// Weights set or override endpoint weights, keyed "METHOD /path", e.g.
	// "GET /api/v3/klines". They replace the built-in table's entry, including
	// a weight that depends on parameters (the order book's). Default: the
	// table of BinanceWeight.
	Weights map[string]int
	// UnknownWeight is the weight of an /api/ endpoint neither the table nor
	// Weights know. The X-MBX-USED-WEIGHT headers correct an underestimate after
	// the fact. Default 1.
	UnknownWeight int
	// TimeScale multiplies every period (and the ban hold): 1.0/60 turns
	// Binance's minute into a second, for tests against a simulator. Default 1.
	TimeScale float64
	// Middleware is the base of the Transport's options. The preset sets
	// WindowGuard (DefaultBinanceWindowGuard, at most a quarter of the shortest
	// window) and BanHold (DefaultBinanceBanHold, scaled) where they are zero.
	Middleware middleware.Options
}

// binanceWeights is Binance spot's weight per endpoint. Sources:
// https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-endpoints,
// .../rest-api/market-data-endpoints, .../rest-api/trading-endpoints and
// .../rest-api/account-endpoints ("Weight:" of each endpoint). q holds the
// request's parameters: its query string and, for other methods than GET, a
// form body.
var binanceWeights = map[string]func(q queryer) int{
	"GET /api/v3/ping":         fixed(1),
	"GET /api/v3/time":         fixed(1),
	"GET /api/v3/exchangeInfo": fixed(20),
	// Order book: 1-100 → 5, 101-500 → 25, 501-1000 → 50, 1001-5000 → 250;
	// limit defaults to 100 (market-data-endpoints, "Order book").
	"GET /api/v3/depth":            depthWeight,
	"GET /api/v3/trades":           fixed(25),
	"GET /api/v3/historicalTrades": fixed(25),
	"GET /api/v3/aggTrades":        fixed(4),
	"GET /api/v3/klines":           fixed(2),
	"GET /api/v3/uiKlines":         fixed(2),
	"GET /api/v3/avgPrice":         fixed(2),
	// 24hr ticker: one symbol 2; symbols 1-20 → 2, 21-100 → 40, 101+ or all → 80.
	"GET /api/v3/ticker/24hr": func(q queryer) int {
		return symbolsWeight(q, 2, func(n int) int {
			switch {
			case n <= 20:
				return 2
			case n <= 100:
				return 40
			}
			return 80
		}, 80)
	},
	// Price and book tickers: one symbol 2; several or all 4.
	"GET /api/v3/ticker/price":      func(q queryer) int { return symbolsWeight(q, 2, func(int) int { return 4 }, 4) },
	"GET /api/v3/ticker/bookTicker": func(q queryer) int { return symbolsWeight(q, 2, func(int) int { return 4 }, 4) },
	// Rolling window and trading day tickers: 4 per symbol, capped at 200 (more
	// than 50 symbols). One of symbol and symbols is mandatory: a request with
	// neither is charged the cap.
	"GET /api/v3/ticker":            perSymbolWeight,
	"GET /api/v3/ticker/tradingDay": perSymbolWeight,
	"POST /api/v3/order":            fixed(1),
	// Test orders (plain and SOR): 1, or 20 with computeCommissionRates=true.
	"POST /api/v3/order/test":          commissionWeight,
	"POST /api/v3/sor/order":           fixed(1),
	"POST /api/v3/sor/order/test":      commissionWeight,
	"POST /api/v3/order/oco":           fixed(1), // deprecated for orderList/oco
	"GET /api/v3/order":                fixed(4),
	"DELETE /api/v3/order":             fixed(1),
	"POST /api/v3/order/cancelReplace": fixed(1),
	"DELETE /api/v3/openOrders":        fixed(1),
	// Open orders: one symbol 6, all 80.
	"GET /api/v3/openOrders":       func(q queryer) int { return pick(q.Get("symbol") != "", 6, 80) },
	"GET /api/v3/allOrders":        fixed(20),
	"POST /api/v3/orderList/oco":   fixed(1),
	"POST /api/v3/orderList/oto":   fixed(1),
	"POST /api/v3/orderList/otoco": fixed(1),
	"GET /api/v3/account":          fixed(20),
	"GET /api/v3/myTrades":         fixed(20),
	"GET /api/v3/rateLimit/order":  fixed(40),
}

// binanceOrders is how many orders an endpoint places (the ORDERS limits),
// its "Unfilled Order Count" in
// https://developers.binance.com/docs/binance-spot-api-docs/rest-api/trading-endpoints:
// an order list places each of its orders (the deprecated POST
// /api/v3/order/oco, like orderList/oco, two); a cancel-replace and an SOR
// order place one. Test orders place none.
var binanceOrders = map[string]int{
	"POST /api/v3/order":               1,
	"POST /api/v3/order/cancelReplace": 1,
	"POST /api/v3/sor/order":           1,
	"POST /api/v3/order/oco":           2,
	"POST /api/v3/orderList/oco":       2,
	"POST /api/v3/orderList/oto":       2,
	"POST /api/v3/orderList/otoco":     3,
}

// queryer gives a weight function the request's parameters.
type queryer interface {
	// Get returns the first value of parameter k, "" when absent.
	Get(k string) string
	// Unknown reports that some parameters could not be read (a form body that
	// cannot be read again): a weight that depends on an absent one must
	// assume the dearest value.
	Unknown() bool
}

func pick(c bool, a, b int) int {
	if c {
		return a
	}
	return b
}

func fixed(w int) func(queryer) int { return func(queryer) int { return w } }

// commissionWeight is a test order's weight: 20 with computeCommissionRates=true, else 1.
func commissionWeight(q queryer) int {
	v := q.Get("computeCommissionRates")
	return pick(v == "true" || v == "" && q.Unknown(), 20, 1)
}

// perSymbolWeight is 4 per symbol, at most 200.
func perSymbolWeight(q queryer) int {
	return symbolsWeight(q, 4, func(n int) int { return min(4*n, 200) }, 200)
}

func depthWeight(q queryer) int {
	n := 100
	if s := q.Get("limit"); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v > 0 {
			n = v
		}
	}
	switch {
	case n <= 100:
		return 5
	case n <= 500:
		return 25
	case n <= 1000:
		return 50
	}
	return 250
}

// symbolsWeight is the weight of a ticker endpoint: one for a symbol, many(n)
// for n symbols (a JSON array in "symbols"), all without either.
func symbolsWeight(q queryer, one int, many func(int) int, all int) int {
	if q.Get("symbol") != "" {
		return one
	}
	if s := q.Get("symbols"); s != "" {
		return many(strings.Count(s, ",") + 1)
	}
	return all
}

// BinanceWeight returns the request weight Binance spot charges for method
// and path with query q (nil for none), from the built-in table, and whether
// the table knows the endpoint.
func BinanceWeight(method, path string, q map[string][]string) (int, bool) {
	f, ok := binanceWeights[method+" "+path]
	if !ok {
		return 0, false
	}
	return f(values(q)), true
}

type values map[string][]string

func (v values) Get(k string) string {
	if vs := v[k]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func (values) Unknown() bool { return false }

// maxFormBody is the largest form body a Binance cost reads: an order's
// parameters take a few hundred bytes.
const maxFormBody = 64 << 10

// binanceParams are a request's parameters as Binance reads them: the query
// string, then (for any method but GET) a form body
// (application/x-www-form-urlencoded); a parameter in both is taken from the
// query string (rest-api/general-api-information, "General information on
// endpoints"). The body is read only when a weight asks for a parameter the
// query lacks, from a copy (Request.GetBody), so the body sent is untouched.
type binanceParams struct {
	r       *http.Request
	query   url.Values
	body    url.Values
	loaded  bool
	unknown bool
}

func (p *binanceParams) Get(k string) string {
	if vs := p.query[k]; len(vs) > 0 {
		return vs[0]
	}
	p.load()
	return p.body.Get(k)
}

func (p *binanceParams) Unknown() bool {
	p.load()
	return p.unknown
}

// load reads the form body once. A body it cannot read without consuming
// it (no GetBody), larger than maxFormBody, or malformed makes the
// parameters unknown.
func (p *binanceParams) load() {
	if p.loaded {
		return
	}
	p.loaded = true
	r := p.r
	if r.Method == http.MethodGet || r.Method == "" || r.Body == nil || r.Body == http.NoBody {
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/x-www-form-urlencoded" {
			return // Binance reads parameters from form bodies only
		}
	}
	if r.GetBody == nil {
		p.unknown = true
		return
	}
	rc, err := r.GetBody()
	if err != nil {
		p.unknown = true
		return
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxFormBody+1))
	if err != nil || len(b) > maxFormBody {
		p.unknown = true
		return
	}
	p.body, err = url.ParseQuery(string(b))
	if err != nil {
		p.unknown = true
	}
}

// Binance returns the preset for Binance spot's REST API (/api/ on
// opts.Hosts): one quota of every rate limit, fixed windows aligned to the
// clock, a cost per request in each (weight, one raw request, orders placed;
// parameters are read from the query string and a form body, see
// binanceParams),
// the X-MBX-USED-WEIGHT-* and X-MBX-ORDER-COUNT-* headers synced into the
// quota, and 429/418 with Retry-After holding it (the middleware's handling).
//
// An order rejected for the ORDERS limit is answered 429 without Retry-After
// and error code -1015, "Too many new orders; current limit is 100 orders per
// 10 SECOND." (rest-api/limits, "Unfilled Order Count"; errors, "-1015
// TOO_MANY_ORDERS"). The preset then fills the limit the message names (the
// shortest ORDERS limit when it names none it knows) in every process, until
// its window ends: a hold of FallbackHold alone would let orders out again
// after a second. The Transport's FallbackHold applies as to any 429, IP
// weight included, since the two share the quota.
func Binance(opts BinanceOptions) (Preset, error) {
	if err := checkScale(opts.TimeScale); err != nil {
		return Preset{}, err
	}
	if opts.Quota == "" {
		opts.Quota = DefaultBinanceQuota
	}
	if len(opts.Hosts) == 0 {
		opts.Hosts = DefaultBinanceHosts
	}
	if opts.RateLimits == nil {
		opts.RateLimits = DefaultBinanceRateLimits()
	}
	if opts.UnknownWeight <= 0 {
		opts.UnknownWeight = 1
	}
	if err := ValidateBinanceRateLimits(opts.RateLimits); err != nil {
		return Preset{}, err
	}
	q := limiter.Quota{Name: opts.Quota}
	usage := middleware.BinanceUsage{Weight: map[string]string{}, Orders: map[string]string{}}
	var weight, raw, orders []string
	for _, rl := range opts.RateLimits {
		p := scale(rl.period(), opts.TimeScale)
		lim := limiter.Limit{Rate: rl.Limit, Period: p, Algorithm: limiter.FixedWindow}
		name := rl.Name()
		q.Limits = append(q.Limits, limiter.NamedLimit{Name: name, Limit: lim})
		switch rl.RateLimitType {
		case BinanceRequestWeight:
			weight = append(weight, name)
			usage.Weight[rl.Header()] = name
		case BinanceRawRequests:
			raw = append(raw, name)
		case BinanceOrders:
			orders = append(orders, name)
			usage.Orders[rl.Header()] = name
		}
	}
	if err := q.Validate(); err != nil {
		return Preset{}, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	overrides := maps.Clone(opts.Weights)
	unknown := opts.UnknownWeight
	cost := func(r *http.Request) (limiter.Cost, error) {
		method := r.Method
		if method == "" {
			method = http.MethodGet
		}
		key := method + " " + r.URL.Path
		w, ok := overrides[key]
		if !ok {
			if f, found := binanceWeights[key]; found {
				w = f(&binanceParams{r: r, query: r.URL.Query()})
			} else {
				w = unknown
			}
		}
		c := limiter.Cost{}
		for _, n := range weight {
			c[n] = w
		}
		for _, n := range raw {
			c[n] = 1
		}
		if k := binanceOrders[key]; k > 0 {
			for _, n := range orders {
				c[n] = k
			}
		}
		return c, nil
	}
	mo := opts.Middleware
	if mo.WindowGuard == 0 {
		// A guard as long as a window would charge every request twice.
		shortest := q.Limits[0].Limit.Period
		for _, nl := range q.Limits[1:] {
			shortest = min(shortest, nl.Limit.Period)
		}
		mo.WindowGuard = min(DefaultBinanceWindowGuard, shortest/4)
	}
	if mo.BanHold == 0 {
		mo.BanHold = scale(DefaultBinanceBanHold, opts.TimeScale)
	}
	rule := middleware.Rule{
		PathPrefix: "/api/",
		Match:      hostMatcher(opts.Hosts),
		Quota:      q,
		CostFunc:   cost,
		Usage:      []middleware.UsageParser{usage},
	}
	var orderLimits []BinanceRateLimit
	for _, rl := range opts.RateLimits {
		if rl.RateLimitType == BinanceOrders {
			orderLimits = append(orderLimits, rl)
		}
	}
	p := Preset{Exchange: "binance", Quotas: []limiter.Quota{q}, Rules: []middleware.Rule{rule}, Options: mo}
	p.build = func(lim *limiter.Limiter, next http.RoundTripper) (http.RoundTripper, error) {
		if len(orderLimits) > 0 {
			next = &binanceOrderWatch{next: next, lim: lim, q: q, orders: orderLimits, hosts: rule.Match, onError: mo.OnError}
		}
		t := middleware.NewTransportWithOptions(next, lim, mo, rule)
		if err := t.Err(); err != nil {
			return nil, fmt.Errorf("exchanges: binance: %w", err)
		}
		return t, nil
	}
	return p, nil
}

// binanceOrderWatch reads Binance's answers to the requests the preset
// charges, below the middleware Transport: a 429 with error code -1015 (an
// ORDERS limit reached) fills that limit in Redis with Limiter.Sync.
type binanceOrderWatch struct {
	next    http.RoundTripper
	lim     *limiter.Limiter
	q       limiter.Quota
	orders  []BinanceRateLimit // the quota's ORDERS limits
	hosts   func(*http.Request) bool
	onError func(*http.Request, error)
}

// maxErrorBody is the most of a 429's body read for its error code.
const maxErrorBody = 4 << 10

// clock is time.Now but in tests: the times a -1015 answer's window is
// judged on.
var clock = time.Now

// binanceTooManyOrders matches -1015's message: "... current limit is 100 orders per 10 SECOND."
var binanceTooManyOrders = regexp.MustCompile(`per (\d+) (SECOND|MINUTE|HOUR|DAY)`)

func (w *binanceOrderWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	sent := clock()
	resp, err := w.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests || resp.Body == nil || !w.hosts(req) {
		return resp, err
	}
	b := peekBody(resp, maxErrorBody)
	var e struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	}
	if json.Unmarshal(b, &e) != nil || e.Code != -1015 {
		return resp, nil
	}
	rl := w.orders[0]
	for _, o := range w.orders[1:] {
		if o.period() < rl.period() {
			rl = o
		}
	}
	if m := binanceTooManyOrders.FindStringSubmatch(e.Msg); m != nil {
		for _, o := range w.orders {
			if strconv.Itoa(o.IntervalNum) == m[1] && o.Interval == m[2] {
				rl = o
			}
		}
	}
	// Sync fills the window Redis is in when it runs: only while that is
	// still the window the order was refused in. An answer that crosses a
	// boundary would otherwise fill the next window (for the daily limit, a
	// whole new day). The window is judged on this host's clock, the one the
	// request's times are known on; the 1 s fallback hold still applies.
	if p := rl.period().Microseconds(); p <= 0 || sent.UnixMicro()/p != clock().UnixMicro()/p {
		return resp, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), time.Second)
	defer cancel()
	if _, err := w.lim.Sync(ctx, w.q, rl.Name(), rl.Limit); err != nil && w.onError != nil {
		w.onError(req, fmt.Errorf("exchanges: binance: fill %s after -1015: %w", rl.Name(), err))
	}
	return resp, nil
}
