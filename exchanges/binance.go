package exchanges

import (
	"encoding/json"
	"fmt"
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
	// binanceTypeWeight is the IP's request weight: every endpoint costs its weight.
	binanceTypeWeight = "REQUEST_WEIGHT"
	// binanceTypeRaw is the IP's count of requests, whatever their weight.
	binanceTypeRaw = "RAW_REQUESTS"
	// binanceTypeOrders is the account's count of orders placed (unfilled order count).
	binanceTypeOrders = "ORDERS"
)

// defaultBinanceRateLimits are Binance spot's limits when nothing overrides them.
//
//   - REQUEST_WEIGHT 6000 per minute per IP: https://developers.binance.com/docs/binance-spot-api-docs/enums
//     ("Rate limiters (rateLimitType)"), the figure GET /api/v3/exchangeInfo
//     serves; https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits
//     defers to it.
//   - RAW_REQUESTS 300000 per 5 minutes per IP since 2026-04-02: CHANGELOG.md
//     of github.com/binance/binance-spot-api-docs, entry of 2026-03-27
//     ("RAW_REQUESTS rate limit increases to 300,000 per 5 minutes", from
//     2026-04-02 07:00 UTC; checked 2026-12-06). The enums page still says
//     61000: exchangeInfo is the source of truth (BinanceFromExchangeInfo).
//   - ORDERS 100 per 10 seconds and 200000 per day per account: the figures
//     api.binance.com/api/v3/exchangeInfo serves to a default account. The
//     limits page gives no figure (the unfilled order count depends on the
//     account: https://developers.binance.com/docs/binance-spot-api-docs/faqs/order_count_decrement),
//     so load yours with BinanceFromExchangeInfo when they differ.
//
// Binance counts each in windows aligned to the clock (a request at 00:01:23.456
// counts toward the 00:01:00 minute), which is limiter.FixedWindow:
// https://developers.binance.com/docs/binance-spot-api-docs/websocket-api/rate-limits
// ("How to interpret rate limits").
func defaultBinanceRateLimits() []BinanceRateLimit {
	return []BinanceRateLimit{
		{RateLimitType: binanceTypeWeight, Interval: "MINUTE", IntervalNum: 1, Limit: 6000},
		{RateLimitType: binanceTypeRaw, Interval: "MINUTE", IntervalNum: 5, Limit: 300000},
		{RateLimitType: binanceTypeOrders, Interval: "SECOND", IntervalNum: 10, Limit: 100},
		{RateLimitType: binanceTypeOrders, Interval: "DAY", IntervalNum: 1, Limit: 200000},
	}
}

// Defaults of BinanceOptions.
const (
	// defaultBinanceQuota names the IP's quota of a Binance preset.
	defaultBinanceQuota = "binance"
	// defaultBinanceOrderQuota names the accounts' order quota of a Binance
	// preset.
	defaultBinanceOrderQuota = "binance-orders"
	// defaultBinanceWindowGuard is the default middleware.Options.WindowGuard of
	// a Binance preset: the one-way latency to Binance plus the difference
	// between Redis's clock and Binance's, generously. A request granted this
	// close to the end of its minute is charged again in the next minute.
	defaultBinanceWindowGuard = 250 * time.Millisecond
	// defaultBinanceBanHold is how long a 418 without Retry-After holds the
	// quota: Binance's shortest IP ban, 2 minutes ("IP bans are tracked and
	// scale in duration for repeat offenders, from 2 minutes to 3 days":
	// https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits).
	defaultBinanceBanHold = 2 * time.Minute
	// binanceWAFHold is how long an HTTP 403 without Retry-After holds the
	// IP's quota. rest-api.md (binance-spot-api-docs, changed 2025-12-09 in
	// 63ee25b; web-socket-api.md "Status codes" likewise): "HTTP 403 return
	// code is used when a WAF (Web Application Firewall) rule has been
	// violated. This can indicate a rate limit violation or a security
	// block", pointing to Binance's FAQ
	// https://www.binance.com/en/support/faq/detail/360004492232 (last
	// updated 2024-11-15, read 2026-12-07): "if you receive an HTTP 403
	// error, you have broken a rule. Most likely, it will be a result of
	// excessive requests within a duration of 5 minutes", "Web Application
	// Firewall limitations will only be applied by IP. Usually, a WAF ban
	// will have a duration of 5 minutes", "You must wait until the ban is
	// over". Requests sent during it only prolong it.
	binanceWAFHold = 5 * time.Minute
)

// binanceHosts are the spot REST hosts a Binance preset matches:
// https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-api-information
// (the base endpoint and its clusters) and the market-data-only host
// (https://developers.binance.com/docs/binance-spot-api-docs/faqs/market_data_only).
var binanceHosts = []string{
	"api.binance.com", "api-gcp.binance.com",
	"api1.binance.com", "api2.binance.com", "api3.binance.com", "api4.binance.com",
	"data-api.binance.vision",
}

// binanceTestnetHosts are the spot test network's REST hosts, which a
// preset with the default BinanceOptions.Hosts charges to quotas of their
// own (the test network counts apart, with the limits of its own
// exchangeInfo: testnet/rest-api.md, "LIMITS", of binance-spot-api-docs at
// a5e0bc3, checked 2026-12-06; the preset gives them RateLimits):
// https://developers.binance.com/docs/binance-spot-api-docs/testnet/general-info
// ("REST API": testnet.binance.vision and api1.testnet.binance.vision). Its
// WebSocket API (ws-api.testnet.binance.vision) and streams
// (stream.testnet.binance.vision) are not HTTP requests a Transport sees.
var binanceTestnetHosts = []string{"testnet.binance.vision", "api1.testnet.binance.vision"}

// binanceDemoHosts are Demo Mode's REST hosts, which a preset with the
// default BinanceOptions.Hosts charges to quotas of their own, as the test
// network's: demo-mode/general-info.md of binance-spot-api-docs at a5e0bc3
// (Demo Mode since CHANGELOG.md 2026-01-29; checked 2026-12-07): REST API
// "https://demo-api.binance.com/api" for api.binance.com and its clusters,
// and "IP Limits, Unfilled Order Count, Exchange Filters are exactly the
// same as the live exchange", so the same RateLimits. That Demo Mode counts
// apart from the live exchange is this preset's reading: it is another
// exchange (its own balances, prices and order books, same page), and the
// page says nothing of shared counts. Its WebSocket API
// (demo-ws-api.binance.com) is not an HTTP request a Transport sees.
var binanceDemoHosts = []string{"demo-api.binance.com"}

// BinanceOptions configure a Binance spot preset. The zero value gives
// Binance's documented limits; each field documents its default.
type BinanceOptions struct {
	// Quota names the IPs' quota (REQUEST_WEIGHT and RAW_REQUESTS), applied
	// to IP, and the Redis Cluster slot (limiter.Quota.Group) of every IP and
	// account of the fleet: one request's IP and account charges are then one
	// decision, all or nothing, whichever IP an account trades from. Use one
	// name per fleet of accounts that share IPs. Default "binance".
	Quota string
	// IP names the address this preset's requests leave from (its address or
	// any stable name, e.g. "nat-eu-1"). Binance counts REQUEST_WEIGHT and
	// RAW_REQUESTS per IP and ORDERS per account
	// (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits,
	// checked 2026-12-06), so the preset charges the weight to the IP's
	// instance of Quota and the orders to the account's instance of
	// OrderQuota, wherever it trades from:
	//
	//   - three accounts behind one IP: IP "ip-1" in each of their processes
	//     (or one process using their three API keys);
	//   - one account trading from two IPs: IP "ip-1" in its process on the
	//     first, IP "ip-2" on the second.
	//
	// Default "": the IP is Quota itself (one IP per Quota name).
	IP string
	// OrderQuota names the accounts' quota (ORDERS), applied to each
	// account (see Account). Default "binance-orders".
	OrderQuota string
	// Headroom is the most of the IP's weight per window, as a share (at most
	// 0.9), kept free for clients outside the fleet on the
	// same IP (a script, another tool): the limiter learns from the
	// X-MBX-USED-WEIGHT headers how much of each window they spend and keeps
	// that much free in the next, decaying when they stop
	// (limiter.Quota.Headroom). Without it, a fleet that takes a whole window
	// at its start leaves them the 429s, and Binance bans the IP for all.
	// Default 0: none.
	Headroom float64
	// Account names the account a request's orders count against. Default:
	// its X-MBX-APIKEY header (one account per API key). An order request
	// without one charges no account (Binance refuses it).
	Account func(*http.Request) string
	// Hosts are the hosts whose /api/ requests are charged, each a host or
	// host:port (see middleware.Rule.Hosts); one that is neither makes
	// Preset.Transport fail. Default: the spot REST hosts (api.binance.com,
	// api-gcp.binance.com, api1-4.binance.com, data-api.binance.vision), and
	// the spot test network's (testnet.binance.vision,
	// api1.testnet.binance.vision) charged to quotas of their own, named
	// Quota and OrderQuota with "-testnet" appended (the test network counts
	// apart), and Demo Mode's (demo-api.binance.com) likewise, with "-demo"
	// appended.
	Hosts []string
	// RateLimits are the limits, in exchangeInfo's terms. Default Binance
	// spot's documented ones: REQUEST_WEIGHT 6000 per minute, RAW_REQUESTS
	// 300000 per 5 minutes, ORDERS 100 per 10 seconds and 200000 per day
	// (sources in defaultBinanceRateLimits' comment); BinanceFromExchangeInfo
	// reads the exchange's own. Set, they replace the defaults whole: a type
	// left out is not counted (RateLimits with REQUEST_WEIGHT alone leaves
	// RAW_REQUESTS and ORDERS unlimited, and Preset.Quotas without the
	// accounts' quota).
	RateLimits []BinanceRateLimit
	// ExchangeInfo, when set, is a GET /api/v3/exchangeInfo document (GET
	// /fapi/v1/exchangeInfo for BinanceFutures) whose rateLimits replace
	// RateLimits: the exchange's own figures, the source of truth. Its
	// entries of a rateLimitType the preset does not model are skipped
	// (Binance may add types); malformed JSON, no rateLimits, a missing
	// field, an unknown interval, a limit or intervalNum that is not a
	// positive integer, values beyond the limiter's maxima, or duplicates
	// fail with an error wrapping ErrInvalid naming the entry and field.
	// Default nil.
	ExchangeInfo []byte
	// Weights set or override endpoint weights, keyed "METHOD /path", e.g.
	// "GET /api/v3/klines". They replace the built-in table's entry, including
	// a weight that depends on parameters (the order book's); a /sapi/
	// endpoint's in the window(s) it is documented to count against. Default: the
	// built-in table of the documented weights (binanceWeights' comment gives
	// the sources).
	Weights map[string]int
	// UnknownWeight is the weight of an /api/ or /sapi/ endpoint neither the
	// tables nor Weights know (an unknown /sapi/ endpoint is charged it in
	// both its IP's and its account's window). The X-MBX-USED-WEIGHT headers correct an underestimate after
	// the fact. Default 1.
	UnknownWeight int
	// raiseOnly keeps the ORDERS counts from going down when the headers
	// say orders filled (tests compare with it; set by export_test.go's
	// RaiseOnly). Default false.
	raiseOnly bool
	// timeScale multiplies every period (and the ban hold): 1.0/60 turns
	// Binance's minute into a second, for tests against a simulator (set by
	// export_test.go's Scaled). Default 1.
	timeScale float64
	// Middleware is the base of the Transport's options. The preset sets
	// WindowGuard (250 ms, at most a quarter of the shortest window: the
	// one-way latency to Binance plus the clock difference, generously) and
	// BanHold (2 minutes, Binance's shortest IP ban) where they are zero.
	Middleware middleware.Options
}

// binanceWeights is Binance spot's weight per endpoint. Sources:
// https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-endpoints,
// .../rest-api/market-data-endpoints, .../rest-api/trading-endpoints and
// .../rest-api/account-endpoints ("Weight:" of each endpoint), the same text as
// rest-api.md of github.com/binance/binance-spot-api-docs (last changed
// 2026-06-01; checked 2026-12-06), and that repository's CHANGELOG.md where
// it says more (dated below). q holds the request's parameters: its query
// string and, for other methods than GET, a form body.
//
// Order placement and cancellation weigh 0 since 2026-04-02 when they
// succeed (CHANGELOG.md, entry of 2026-03-27: "Request weights for the
// following endpoints and methods become 0 when the request is successful.
// Failed requests are still charged the documented weight"; rest-api.md
// still gives 1). They are charged 0: a failed one (charged 1 by Binance)
// is corrected after the fact by the X-MBX-USED-WEIGHT headers of its answer.
// Amending with keepPriority stays 4 unless the amendment makes the order
// expire (CHANGELOG.md, entry of 2026-04-02), so it is charged 4.
var binanceWeights = map[string]func(q queryer) int{
	"GET /api/v3/ping":         fixed(1),
	"GET /api/v3/time":         fixed(1),
	"GET /api/v3/exchangeInfo": fixed(20),
	// Execution rules: 2 a symbol, capped at 40; 40 for symbolStatus or no
	// filter (CHANGELOG.md, entry of 2026-03-09; rest-api.md "Query Execution
	// Rules").
	"GET /api/v3/executionRules": func(q queryer) int {
		if q.Get("symbolStatus") != "" {
			return 40
		}
		return symbolsWeight(q, 2, func(n int) int { return min(2*n, 40) }, 40)
	},
	"GET /api/v3/referencePrice":             fixed(2),
	"GET /api/v3/referencePrice/calculation": fixed(2),
	// Order book: 1-100 → 5, 101-500 → 25, 501-1000 → 50, 1001-5000 → 250;
	// limit defaults to 100 (market-data-endpoints, "Order book").
	"GET /api/v3/depth":            depthWeight,
	"GET /api/v3/trades":           fixed(25),
	"GET /api/v3/historicalTrades": fixed(25),
	// Block trades: 25 (CHANGELOG.md, entry of 2026-05-06; rest-api.md
	// "Historical Block Trades").
	"GET /api/v3/historicalBlockTrades": fixed(25),
	"GET /api/v3/aggTrades":             fixed(4),
	"GET /api/v3/klines":                fixed(2),
	"GET /api/v3/uiKlines":              fixed(2),
	"GET /api/v3/avgPrice":              fixed(2),
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
	// Placement and cancellation: 0 when successful (see above).
	"POST /api/v3/order": fixed(0),
	// Test orders (plain and SOR): 1, or 20 with computeCommissionRates=true.
	"POST /api/v3/order/test":              commissionWeight,
	"POST /api/v3/sor/order":               fixed(0),
	"POST /api/v3/sor/order/test":          commissionWeight,
	"POST /api/v3/order/oco":               fixed(0), // deprecated for orderList/oco
	"GET /api/v3/order":                    fixed(4),
	"DELETE /api/v3/order":                 fixed(0),
	"POST /api/v3/order/cancelReplace":     fixed(0),
	"PUT /api/v3/order/amend/keepPriority": fixed(4),
	"DELETE /api/v3/openOrders":            fixed(0),
	// Open orders: one symbol 6, all 80.
	"GET /api/v3/openOrders":       func(q queryer) int { return pick(q.Get("symbol") != "", 6, 80) },
	"GET /api/v3/allOrders":        fixed(20),
	"POST /api/v3/orderList/oco":   fixed(0),
	"POST /api/v3/orderList/oto":   fixed(0),
	"POST /api/v3/orderList/otoco": fixed(0),
	"POST /api/v3/orderList/opo":   fixed(0),
	"POST /api/v3/orderList/opoco": fixed(0),
	"DELETE /api/v3/orderList":     fixed(0),
	"GET /api/v3/orderList":        fixed(4),
	"GET /api/v3/allOrderList":     fixed(20),
	"GET /api/v3/openOrderList":    fixed(6),
	"GET /api/v3/account":          fixed(20),
	// Trades: 5 with orderId, else 20 (CHANGELOG.md, entry of 2025-04-07).
	"GET /api/v3/myTrades":        func(q queryer) int { return pick(q.Get("orderId") != "", 5, 20) },
	"GET /api/v3/rateLimit/order": fixed(40),
	// Prevented matches: 2 by preventedMatchId, 20 by orderId.
	"GET /api/v3/myPreventedMatches": func(q queryer) int { return pick(q.Get("preventedMatchId") != "", 2, 20) },
	"GET /api/v3/myAllocations":      fixed(20),
	"GET /api/v3/account/commission": fixed(20),
	"GET /api/v3/order/amendments":   fixed(4),
	"GET /api/v3/myFilters":          fixed(40),
}

// binanceOrders is how many orders an endpoint places (the ORDERS limits),
// its "Unfilled Order Count" in
// https://developers.binance.com/docs/binance-spot-api-docs/rest-api/trading-endpoints
// (rest-api.md, checked 2026-12-06): an order list places each of its orders
// (the deprecated POST /api/v3/order/oco, like orderList/oco, OTO and OPO,
// two; OTOCO and OPOCO three); a cancel-replace and an SOR order place one.
// Test orders and keepPriority amendments place none.
var binanceOrders = map[string]int{
	"POST /api/v3/order":               1,
	"POST /api/v3/order/cancelReplace": 1,
	"POST /api/v3/sor/order":           1,
	"POST /api/v3/order/oco":           2,
	"POST /api/v3/orderList/oco":       2,
	"POST /api/v3/orderList/oto":       2,
	"POST /api/v3/orderList/otoco":     3,
	"POST /api/v3/orderList/opo":       2,
	"POST /api/v3/orderList/opoco":     3,
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

// binanceWeight returns the request weight Binance spot charges for method
// and path with query q (nil for none), from the built-in table, and whether
// the table knows the endpoint.
func binanceWeight(method, path string, q map[string][]string) (int, bool) {
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

// binanceParams are a request's parameters as Binance reads them: the query
// string, then (for any method but GET) a form body
// (application/x-www-form-urlencoded); a parameter in both is taken from the
// query string (rest-api/general-api-information, "General information on
// endpoints"). body is the copy of the request's body the middleware gives a
// rule's Charges.
type binanceParams struct {
	r       *http.Request
	query   url.Values
	body    []byte
	form    url.Values
	loaded  bool
	unknown bool
}

func (p *binanceParams) Get(k string) string {
	if vs := p.query[k]; len(vs) > 0 {
		return vs[0]
	}
	p.load()
	return p.form.Get(k)
}

func (p *binanceParams) Unknown() bool {
	p.load()
	return p.unknown
}

// load parses the form body once. A body the middleware cut (longer than
// maxBody) or a malformed one makes the parameters unknown.
func (p *binanceParams) load() {
	if p.loaded {
		return
	}
	p.loaded = true
	r := p.r
	if r.Method == http.MethodGet || r.Method == "" || p.body == nil {
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/x-www-form-urlencoded" {
			return // Binance reads parameters from form bodies only
		}
	}
	if len(p.body) > maxBody {
		p.unknown = true
		return
	}
	var err error
	if p.form, err = url.ParseQuery(string(p.body)); err != nil {
		p.unknown = true
	}
}

// Binance returns the preset for Binance spot's REST API (/api/ on
// opts.Hosts; and /sapi/, where Binance counts each endpoint apart, 12 000
// weight a minute per IP or 180 000 per account as the endpoint is
// documented "Weight(IP)" or "Weight(UID)", each request charged its
// documented weight in that window only (an endpoint the preset does not
// know: in both, opts.Weights' weight or UnknownWeight), in the quotas
// opts.Quota+"-sapi" and opts.Quota+"-sapi-uid" (and "-sapi-uid-1s" for
// the one endpoint counted by the second), corrected by the
// X-SAPI-USED-*-WEIGHT-* headers; see binance_sapi.go), with Binance's two scopes of limits: REQUEST_WEIGHT and
// RAW_REQUESTS count per IP (the quota opts.Quota, applied to opts.IP),
// ORDERS count per account (the quota opts.OrderQuota, applied to each
// request's API key). Each request is charged, in one decision, its weight
// and one raw request to the IP's quota and, for an endpoint that places
// orders, its orders to its account's; several accounts behind one IP
// therefore share the IP's weight and count their orders apart, and an
// account trading from several IPs counts its orders once. Parameters are read from the query string
// and a form body (see binanceParams). Every window is a fixed window aligned
// to the clock, guarded by Middleware.WindowGuard. The X-MBX-USED-WEIGHT-*
// and X-MBX-ORDER-COUNT-* headers are synced into the quota that counts them,
// and 429/418 with Retry-After hold the IP's quota (the middleware's
// handling); a 403, the Web Application Firewall's ban of the IP, holds the
// IP's quota for its Retry-After, else 5 minutes (see binanceWAFHold).
//
// An order rejected for an ORDERS limit is answered 429 with error code
// -1015, "Too many new orders; current limit is 100 orders per 10 SECOND."
// (errors.md, "-1015 TOO_MANY_ORDERS"), and with Retry-After since 2025-12-17
// (rest-api.md, "Unfilled Order Count": "If you have exceeded this, you will
// receive a 429 error with the Retry-After header", changed from "without"
// in binance-spot-api-docs commit f83a5bf of 2025-12-17; checked 2026-12-06).
// The preset then fills the limit the message names (the shortest ORDERS
// limit when it names none it knows) of that account only, in every process,
// for the rest of the window the order was charged in (the limiter decides,
// on Redis's clock), and the 429's Retry-After (FallbackHold when it has
// none) holds that account's orders only: the IP's market-data reads go on.
//
// Orders and cancellations weigh 0 when they succeed (see binanceWeights): a
// failed one, which Binance charges its documented weight, is counted when
// the next answer's X-MBX-USED-WEIGHT header is synced.
//
// Binance lowers an account's unfilled order count when its orders fill
// (see spot's comment), so the ORDERS limits are limiter.Limit.Lowers: the
// X-MBX-ORDER-COUNT header of an order's answer may lower the account's
// count to Binance's, plus every other order of the fleet that may still
// reach Binance after that one (booked before its answer came back, or
// after it); a trader whose orders fill keeps placing orders.
func Binance(opts BinanceOptions) (Preset, error) {
	if err := opts.loadExchangeInfo(); err != nil {
		return Preset{}, err
	}
	if err := checkScale(opts.timeScale); err != nil {
		return Preset{}, err
	}
	if opts.Quota == "" {
		opts.Quota = defaultBinanceQuota
	}
	if opts.OrderQuota == "" {
		opts.OrderQuota = defaultBinanceOrderQuota
	}
	testnet := len(opts.Hosts) == 0 // the default hosts: production, test network and Demo Mode
	if testnet {
		opts.Hosts = binanceHosts
	}
	if opts.RateLimits == nil {
		opts.RateLimits = defaultBinanceRateLimits()
	}
	if opts.UnknownWeight <= 0 {
		opts.UnknownWeight = 1
	}
	if opts.Account == nil {
		opts.Account = func(r *http.Request) string { return r.Header.Get("X-MBX-APIKEY") }
	}
	p, err := binancePreset("binance", opts, spot, testnet)
	if err != nil {
		return Preset{}, err
	}
	sr, sq := binanceSAPIRule(opts)
	p.Rules, p.Quotas = append(p.Rules, sr), append(p.Quotas, sq...)
	return p, nil
}

// binancePreset is the preset of opts (whose defaults are set) on venue v,
// with the spot test network's and Demo Mode's rules too when testnet.
func binancePreset(exchange string, opts BinanceOptions, v binanceVenue, testnet bool) (Preset, error) {
	if err := validateBinanceRateLimits(opts.RateLimits); err != nil {
		return Preset{}, err
	}
	rule, quotas, err := binanceRule(opts, v)
	if err != nil {
		return Preset{}, err
	}
	rules := []middleware.Rule{rule}
	if testnet {
		for _, apart := range []struct {
			suffix string
			hosts  []string
		}{{"-testnet", binanceTestnetHosts}, {"-demo", binanceDemoHosts}} {
			t := opts
			t.Quota, t.OrderQuota, t.Hosts = opts.Quota+apart.suffix, opts.OrderQuota+apart.suffix, apart.hosts
			tr, tq, err := binanceRule(t, v)
			if err != nil {
				return Preset{}, err
			}
			rules, quotas = append(rules, tr), append(quotas, tq...)
		}
	}
	mo := opts.Middleware
	if mo.WindowGuard == 0 {
		// A guard as long as a window would charge every request twice.
		shortest := quotas[0].Limits[0].Limit.Period
		for _, q := range quotas {
			for _, nl := range q.Limits {
				shortest = min(shortest, nl.Limit.Period)
			}
		}
		mo.WindowGuard = min(defaultBinanceWindowGuard, shortest/4)
	}
	if mo.BanHold == 0 {
		mo.BanHold = scale(defaultBinanceBanHold, opts.timeScale)
	}
	return Preset{Exchange: exchange, Quotas: quotas, Rules: rules, Options: mo}, nil
}

// binanceVenue is what differs between Binance's REST APIs: the path the
// rule matches, each endpoint's weight and the orders it places.
type binanceVenue struct {
	prefix  string
	weights map[string]func(queryer) int
	orders  map[string]int
	// ordersSecond, where an endpoint has an entry, is its count on the
	// ORDERS limits of an interval of seconds, in place of orders' (futures'
	// batch orders: 5 on the 10-second limit, 1 on the minute's).
	ordersSecond map[string]int
	// fills: the ORDERS counts go down when orders fill (limiter.Limit.Lowers).
	fills bool
}

// spot is Binance spot's REST API. Its ORDERS limits count unfilled orders:
// "When an order is filled for the first time (partially or fully), your
// unfilled order count is decremented by one order for all intervals of the
// ORDERS rate limit" (more for a maker's first fill), never below 0, and a
// fill lowers the current interval's count whenever the order was placed
// (faqs/order_count_decrement.md of github.com/binance/binance-spot-api-docs,
// in force since 2023-10 (commit ff3390f of 2023-10-03), last changed
// 2024-08-26 (3c7f298), reformatted 2026-05-28 (1d8439f); checked
// 2026-12-06). Each accepted order's answer carries the counts
// (X-MBX-ORDER-COUNT-<interval>, rest-api.md "Unfilled Order Count").
var spot = binanceVenue{prefix: "/api/", weights: binanceWeights, orders: binanceOrders, fills: true}

// binanceRule is the rule of opts.Hosts on venue v, charging opts.Quota
// (applied to opts.IP) and opts.OrderQuota, and the quotas it charges: the
// IP's, then the accounts' template when there are ORDERS limits.
func binanceRule(opts BinanceOptions, v binanceVenue) (middleware.Rule, []limiter.Quota, error) {
	// One Group: every IP's quota and every account's sit in one Redis
	// Cluster slot, so a request's two charges are one atomic decision,
	// whichever IP the account trades from.
	ip := limiter.Quota{Name: opts.Quota, Group: opts.Quota, Headroom: opts.Headroom}
	acct := limiter.Quota{Name: opts.OrderQuota, Group: opts.Quota}
	usage := binanceUsage{Weight: map[string]string{}, Orders: map[string]string{}}
	var weight, raw, orders []string
	var orderLimits []BinanceRateLimit
	var perSecond []bool // orders[i] is a limit of an interval of seconds
	for _, rl := range opts.RateLimits {
		p := scale(rl.period(), opts.timeScale)
		nl := limiter.NamedLimit{Name: rl.name(), Limit: limiter.Limit{Rate: rl.Limit, Period: p, Algorithm: limiter.FixedWindow}}
		switch rl.RateLimitType {
		case binanceTypeWeight:
			ip.Limits = append(ip.Limits, nl)
			weight = append(weight, nl.Name)
			usage.Weight[rl.header()] = nl.Name
		case binanceTypeRaw:
			ip.Limits = append(ip.Limits, nl)
			raw = append(raw, nl.Name)
		case binanceTypeOrders:
			nl.Limit.Lowers = v.fills && !opts.raiseOnly
			acct.Limits = append(acct.Limits, nl)
			orders = append(orders, nl.Name)
			perSecond = append(perSecond, rl.Interval == "SECOND")
			orderLimits = append(orderLimits, rl)
			usage.Orders[rl.header()] = nl.Name
		}
	}
	quotas := []limiter.Quota{ip}
	if len(acct.Limits) > 0 {
		quotas = append(quotas, acct)
	}
	for _, q := range quotas {
		if err := q.Validate(); err != nil {
			return middleware.Rule{}, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if opts.IP != "" {
		if err := ip.For(opts.IP).Validate(); err != nil {
			return middleware.Rule{}, nil, fmt.Errorf("%w: IP: %w", ErrInvalid, err)
		}
		ip = ip.For(opts.IP)
		quotas[0] = ip
	}
	if len(ip.Limits) == 0 {
		return middleware.Rule{}, nil, fmt.Errorf("%w: no REQUEST_WEIGHT or RAW_REQUESTS limit", ErrInvalid)
	}
	// The IP's quota without limits: charged nothing, its hold still waited out.
	holdOnly := limiter.Quota{Name: ip.Name, Group: ip.Group}
	if opts.IP != "" {
		holdOnly = holdOnly.For(opts.IP)
	}
	overrides := maps.Clone(opts.Weights)
	unknown := opts.UnknownWeight
	account := opts.Account
	charges := func(r *http.Request, body []byte) ([]limiter.Charge, error) {
		method := r.Method
		if method == "" {
			method = http.MethodGet
		}
		key := method + " " + r.URL.Path
		w, ok := overrides[key]
		if !ok {
			if f, found := v.weights[key]; found {
				w = f(&binanceParams{r: r, query: r.URL.Query(), body: body})
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
		cs := []limiter.Charge{{Quota: ip, Cost: c}}
		if w == 0 && len(raw) == 0 {
			// Nothing of the IP's to charge (an order, without a
			// RAW_REQUESTS limit): its hold is still waited out.
			cs[0] = limiter.Charge{Quota: holdOnly}
		}
		k := v.orders[key]
		if k == 0 || len(orders) == 0 {
			return cs, nil
		}
		id := account(r)
		if id == "" {
			// Binance refuses an order without an API key, and counts none.
			return cs, nil
		}
		oc := limiter.Cost{}
		for i, n := range orders {
			oc[n] = k
			if ks, ok := v.ordersSecond[key]; ok && perSecond[i] {
				oc[n] = ks
			}
		}
		return append(cs, limiter.Charge{Quota: acct.For(id), Cost: oc}), nil
	}
	parsers := []middleware.UsageParser{{Parse: usage.ParseUsage}, binanceWAF(ip.Name, opts.timeScale)}
	if len(orderLimits) > 0 {
		parsers = append(parsers, middleware.UsageParser{Parse: binanceRefusal{quota: acct.Name, orders: orderLimits}.ParseUsage})
	}
	rule := middleware.Rule{
		Hosts:      opts.Hosts,
		PathPrefix: v.prefix,
		Quota:      ip,
		Charges:    charges,
		Usage:      parsers,
		PeekBody:   maxErrorBody,
	}
	return rule, quotas, nil
}

// binanceWAF is the parser of Binance's HTTP 403, a ban of the IP by its
// Web Application Firewall: it holds the IP's quota, named quota, for the
// answer's Retry-After (seconds) when it has one, else binanceWAFHold
// (scaled), whatever the body (see binanceWAFHold).
func binanceWAF(quota string, timeScale float64) middleware.UsageParser {
	return middleware.UsageParser{Parse: func(a *middleware.Answer) ([]middleware.Usage, error) {
		if a.StatusCode != http.StatusForbidden {
			return nil, nil
		}
		hold := scale(binanceWAFHold, timeScale)
		if n, err := strconv.Atoi(strings.TrimSpace(a.Header.Get("Retry-After"))); err == nil && n > 0 {
			hold = time.Duration(n) * time.Second
		}
		return []middleware.Usage{{Quota: quota, Hold: hold}}, nil
	}}
}

// maxErrorBody is the most of an answer's body read for its error code.
const maxErrorBody = 4 << 10

// binanceTooManyOrders matches -1015's message: "... current limit is 100 orders per 10 SECOND."
var binanceTooManyOrders = regexp.MustCompile(`per (\d+) (SECOND|MINUTE|HOUR|DAY)`)

// binanceRefusal reads a 429 with error code -1015 (an ORDERS limit
// reached): it fills that limit of the account's quota and claims the
// refusal for that quota (middleware.Usage.Refused).
type binanceRefusal struct {
	quota  string             // the account quota's name
	orders []BinanceRateLimit // its ORDERS limits
}

func (b binanceRefusal) ParseUsage(a *middleware.Answer) ([]middleware.Usage, error) {
	if a.StatusCode != http.StatusTooManyRequests {
		return nil, nil
	}
	var e struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	}
	if json.Unmarshal(a.Body, &e) != nil || e.Code != -1015 {
		return nil, nil
	}
	rl := b.orders[0]
	for _, o := range b.orders[1:] {
		if o.period() < rl.period() {
			rl = o
		}
	}
	if m := binanceTooManyOrders.FindStringSubmatch(e.Msg); m != nil {
		for _, o := range b.orders {
			if strconv.Itoa(o.IntervalNum) == m[1] && o.Interval == m[2] {
				rl = o
			}
		}
	}
	return []middleware.Usage{{Quota: b.quota, Limit: rl.name(), Used: rl.Limit, Refused: true}}, nil
}
