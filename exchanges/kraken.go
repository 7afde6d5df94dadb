package exchanges

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// krakenCounter and krakenTrading are Kraken's decaying counters per tier, as
// GCRA limits: the counter's maximum is the burst, its decay the rate (per 100
// s, so that 0.33/s and 2.34/s are whole numbers).
//
// Call counter: Starter max 15, decay 0.33/s; Intermediate 20, 0.5/s; Pro 20,
// 1/s (https://docs.kraken.com/exchange/guides/rest/ratelimits, "REST
// Specific Limits"; formerly docs.kraken.com/api/docs/guides/spot-rest-ratelimits).
//
// Trading (per pair) counter: Starter threshold 60, decay 1/s; Intermediate
// 125, 2.34/s; Pro 180, 3.75/s (https://support.kraken.com/hc/en-us/articles/360045239571-Trading-rate-limits,
// "Rate Limit Details"; the Starter figures from Kraken's trading engine
// limits page, https://docs.kraken.com/exchange/guides/general/ratelimits).
var (
	krakenCounter = map[string]limiter.Limit{
		"starter":      {Rate: 33, Period: 100 * time.Second, Burst: 15},
		"intermediate": {Rate: 50, Period: 100 * time.Second, Burst: 20},
		"pro":          {Rate: 100, Period: 100 * time.Second, Burst: 20},
	}
	krakenTrading = map[string]limiter.Limit{
		"starter":      {Rate: 100, Period: 100 * time.Second, Burst: 60},
		"intermediate": {Rate: 234, Period: 100 * time.Second, Burst: 125},
		"pro":          {Rate: 375, Period: 100 * time.Second, Burst: 180},
	}
)

// krakenTwo are the private endpoints that add 2 to the call counter:
// "Ledger/trade history calls increase the counter by 2"
// (https://docs.kraken.com/exchange/guides/rest/ratelimits).
var krakenTwo = map[string]bool{"Ledgers": true, "QueryLedgers": true, "TradesHistory": true, "QueryTrades": true}

// krakenTrade are the trading endpoints, charged to the pair's trading
// counter and not to the call counter. Kraken documents only AddOrder and
// CancelOrder as outside the call counter ("All other API calls increase this
// counter by 1 (except AddOrder, CancelOrder which operate on a different
// limiter)": https://docs.kraken.com/exchange/guides/rest/ratelimits, "REST
// Specific Limits", checked 2026-12-06), so CancelAll and
// CancelAllOrdersAfter are not here: they add 1 to the call counter like any
// other private call. EditOrder, AmendOrder and the batch endpoints stay here
// (the page names none of them); the batch endpoints are charged as
// krakenBatchCost says.
var krakenTrade = map[string]bool{
	"AddOrder": true, "CancelOrder": true, "EditOrder": true, "AmendOrder": true,
	"AddOrderBatch": true, "CancelOrderBatch": true,
}

// defaultKrakenPublic is KrakenOptions.Public's default: "Calling the
// public endpoints at a frequency of 1 per second (or less) would remain
// within the rate limits" (https://support.kraken.com/articles/206548367-what-are-the-api-rate-limits-,
// checked 2026-12-06; Kraken publishes no other figure for them, and
// https://docs.kraken.com/exchange/guides/rest/ratelimits covers private
// calls only). A burst of 1: Kraken gives none.
var defaultKrakenPublic = limiter.Limit{Rate: 1, Period: time.Second, Burst: 1}

// krakenPerPair are the public endpoints Kraken counts per IP and pair, each
// pair apart from the IP's other public calls: "rate limited by IP address
// and currency pair for calls to Trades and OHLC, and by IP address only for
// calls to all other public endpoints" (the support article above, checked
// 2026-12-06). Whether Trades and OHLC of one pair share a count is not
// said: the preset counts them together, which cannot overrun either.
var krakenPerPair = map[string]bool{"Trades": true, "OHLC": true}

// krakenAmendCost is the most an AmendOrder adds to the trading counter
// (see defaultKrakenEditCost).
const krakenAmendCost = 4

// Defaults of KrakenOptions.
const (
	// defaultKrakenCancelCost is what a cancel adds to the pair's trading
	// counter when its order's age is not known: the most it can add, 8, for an
	// order cancelled within 5 seconds (https://support.kraken.com/hc/en-us/articles/360045239571-Trading-rate-limits,
	// "Rate Limit Details": +8 under 5 s, +6 under 10 s, +5 under 15 s, +4
	// under 45 s, +2 under 90 s, +1 under 300 s).
	defaultKrakenCancelCost = 8
	// defaultKrakenEditCost is the most an edit adds, 7, for an order edited
	// within 5 seconds: +1 fixed and +6 decaying (+5 under 10 s, +4 under
	// 15 s, +2 under 45 s, +1 under 90 s), "Spot Trading Limits",
	// https://docs.kraken.com/exchange/guides/general/ratelimits
	// ("Incrementing the rate counter", checked 2026-12-06). An amend adds
	// at most 4 there (+1 fixed, +3 under 5 s, +2 under 10 s, +1 under
	// 15 s): AmendOrder is charged the lesser of EditCost and 4.
	defaultKrakenEditCost = 7
	// defaultKrakenLimitedHold is how long a "Rate limit exceeded" answer holds
	// the quota: "additional calls will be restricted for a few seconds"
	// (https://docs.kraken.com/exchange/guides/rest/ratelimits).
	defaultKrakenLimitedHold = 5 * time.Second
	// KrakenPairHeader names the pair of a request that carries none in its
	// body (CancelOrder takes a txid): set it to charge the right pair's
	// trading counter. It is removed before the request is sent.
	KrakenPairHeader = "X-Redquota-Kraken-Pair"
)

// KrakenOptions configure a Kraken spot preset. The zero value gives the
// Starter tier's documented limits; each field documents its default.
type KrakenOptions struct {
	// Tier is the account's verification tier, which sets its limits:
	// "starter" (the strictest), "intermediate" or "pro"; another value makes
	// Kraken fail with ErrInvalid. Default "": starter.
	Tier string
	// Quota names the call counter's quota (one per API key, as Kraken
	// counts); the trading counter is the quota <Quota>-trade applied to each
	// pair (one per account and pair); public calls are counted in
	// <Quota>-public and <Quota>-public-pair, per IP (see Public). Default
	// "kraken".
	Quota string
	// Hosts are the hosts whose /0/private/ and /0/public/ requests are
	// charged. Default api.kraken.com.
	Hosts []string
	// Counter and Trading override the tier's call counter and per-pair
	// trading counter; zero values keep the
	// tier's.
	Counter, Trading limiter.Limit
	// Public is the limit of each bucket public calls are counted in: the
	// IP's (every public endpoint but Trades and OHLC: the quota
	// <Quota>-public) and each pair's (Trades and OHLC: the quota
	// <Quota>-public-pair applied to the pair), its burst less BurstReserve
	// (never below 1). Default (zero value): 1 per second, burst 1, the
	// frequency Kraken says stays within its limits (see
	// defaultKrakenPublic). A negative Rate turns these limits off:
	// public calls are then charged nothing and only wait out the holds
	// that EGeneral:Too many requests answers set (LimitedHold), in the same
	// buckets.
	Public limiter.Limit
	// BurstReserve is how many units of each counter's maximum the limiter
	// keeps back, as CoinbaseOptions.BurstReserve; it also covers Kraken
	// decaying its counter in steps ("every couple of seconds") rather than
	// continuously. Default 1; negative for none.
	BurstReserve int
	// CancelCost and EditCost are what CancelOrder and EditOrder add to the
	// trading counter for an order of unknown age (AmendOrder the lesser of
	// EditCost and 4). Default 8 and 7, the worst case (an order cancelled
	// or edited within 5 seconds; sources in defaultKrakenCancelCost's and
	// defaultKrakenEditCost's comments). An order this preset saw placed
	// (its AddOrder, EditOrder or AmendOrder answer, in this process) is
	// charged by its age as Kraken charges it, counted from when that answer
	// came back; the last 65 536 such orders are remembered.
	CancelCost, EditCost int
	// LimitedHold is how long an answer with EAPI:Rate limit exceeded,
	// EOrder:Rate limit exceeded or EGeneral:Too many requests holds its
	// quota. Default 5 s ("additional calls will be restricted for a few
	// seconds": https://docs.kraken.com/exchange/guides/rest/ratelimits).
	LimitedHold time.Duration
	// timeScale multiplies every period and hold, for tests (export_test.go's
	// Scaled). Default 1.
	timeScale float64
	// Middleware is the Transport's options; the preset adds KrakenPairHeader
	// to StripHeaders.
	Middleware middleware.Options
}

// Kraken returns the preset for Kraken spot's REST API: one Transport, two
// counters that decay at a tier-dependent rate, which GCRA models exactly
// (the counter's maximum is the burst, its decay the rate):
//
//   - the call counter, per API key (the quota Quota): +1 for each private
//     call (CancelAll and CancelAllOrdersAfter included), +2 for ledger and
//     trade history, none for trading calls;
//   - the trading counter, per pair (the quota Quota+"-trade" applied to the
//     pair with limiter.Quota.For): +1 for AddOrder, and for CancelOrder,
//     EditOrder and AmendOrder what Kraken adds by the order's age when this
//     preset saw it placed, else CancelCost or EditCost; AddOrderBatch half
//     its orders, rounded up, and CancelOrderBatch what its orders would
//     cost one by one, at most the counter's maximum (krakenBatchCost). The pair comes from the
//     request's form or JSON body ("pair") or KrakenPairHeader (which is
//     never sent to Kraken). A request whose pair is unknown is charged to
//     the pair "unknown"; one whose pair is not a plausible name fails with
//     an error wrapping ErrInvalid, unsent. A trading call that costs nothing (a
//     cancel of an order older than 300 s) still waits out its pair's hold.
//
// Public calls (/0/public/) are counted as Kraken counts them, per IP
// (sources in defaultKrakenPublic's and krakenPerPair's comments), each
// bucket limited to Public (1 per second, burst 1):
//
//   - Trades and OHLC in their pair's bucket only (the quota
//     Quota+"-public-pair" applied to the pair). The pair comes from the
//     query string ("?pair=XBTUSD") or a POST's form or JSON body; a call
//     without one is charged to the pair "unknown", one whose pair is not a
//     plausible name fails with an error wrapping ErrInvalid, unsent;
//   - every other public call in the IP's bucket (the quota
//     Quota+"-public").
//
// One Quota name is one IP's buckets: give each IP of a fleet its own. The
// quotas are Preset.Quotas[2] and [3], unless Public turns them off.
//
// Kraken reports a limit reached in the answer's body, with HTTP 200
// (EAPI:Rate limit exceeded, EOrder:Rate limit exceeded, EService:Throttled:
// <unix time>, also spelt "EService: Throttled", and for public calls
// EGeneral:Too many requests, the answer issue 21 reports for public
// endpoints, "rate limited by IP address and currency pair for calls to
// Trades and OHLC, and by IP address only for calls to all other public
// endpoints ... additional calls would be restricted for a few seconds":
// https://support.kraken.com/articles/206548367-what-are-the-api-rate-limits-,
// checked 2026-12-06); the preset reads it from every call's answer, before
// the caller does, and holds the quota the call was charged to (the pair's
// for a trading call, its bucket for a public call: the IP's, or the pair's
// for Trades and OHLC), in every process, for LimitedHold (or until the
// time given), at most Middleware.MaxHold.
func Kraken(opts KrakenOptions) (Preset, error) {
	if err := checkScale(opts.timeScale); err != nil {
		return Preset{}, err
	}
	tier := opts.Tier
	if tier == "" {
		tier = "starter"
	}
	counter, ok1 := krakenCounter[tier]
	trading, ok2 := krakenTrading[tier]
	if !ok1 || !ok2 {
		return Preset{}, fmt.Errorf("%w: Kraken tier %q", ErrInvalid, opts.Tier)
	}
	if opts.Counter != (limiter.Limit{}) {
		counter = opts.Counter
	}
	if opts.Trading != (limiter.Limit{}) {
		trading = opts.Trading
	}
	if opts.Quota == "" {
		opts.Quota = "kraken"
	}
	if len(opts.Hosts) == 0 {
		opts.Hosts = []string{"api.kraken.com"}
	}
	if opts.BurstReserve == 0 {
		opts.BurstReserve = defaultBurstReserve
	}
	if opts.CancelCost <= 0 {
		opts.CancelCost = defaultKrakenCancelCost
	}
	if opts.EditCost <= 0 {
		opts.EditCost = defaultKrakenEditCost
	}
	if opts.LimitedHold <= 0 {
		opts.LimitedHold = scale(defaultKrakenLimitedHold, opts.timeScale)
	}
	counter.Period = scale(counter.Period, opts.timeScale)
	trading.Period = scale(trading.Period, opts.timeScale)
	calls := limiter.Quota{Name: opts.Quota, Limits: []limiter.NamedLimit{{Name: "calls", Limit: reserve(counter, opts.BurstReserve)}}}
	trade := limiter.Quota{Name: opts.Quota + "-trade", Limits: []limiter.NamedLimit{{Name: "orders", Limit: reserve(trading, opts.BurstReserve)}}}
	for _, q := range []limiter.Quota{calls, trade} {
		if err := q.Validate(); err != nil {
			return Preset{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	for _, c := range []int{opts.CancelCost, opts.EditCost} {
		if m := most(trade.Limits[0].Limit); c > m {
			return Preset{}, fmt.Errorf("%w: trading cost %d above the counter's maximum %d", ErrInvalid, c, m)
		}
	}
	// A trading call free of charge waits out its pair's hold all the same:
	// it charges the trading template's hold alone.
	holdOnly := limiter.Quota{Name: trade.Name}
	// Public calls: the IP's bucket, and each pair's for Trades and OHLC;
	// hold-only when Public turns them off.
	public := limiter.Quota{Name: opts.Quota + "-public"}
	publicPair := limiter.Quota{Name: opts.Quota + "-public-pair"}
	var publicCost limiter.Cost // nil: hold-only
	if opts.Public.Rate >= 0 {
		pub := defaultKrakenPublic
		if opts.Public != (limiter.Limit{}) {
			pub = opts.Public
		}
		pub.Period = scale(pub.Period, opts.timeScale)
		limits := []limiter.NamedLimit{{Name: "calls", Limit: reserve(pub, opts.BurstReserve)}}
		public.Limits, publicPair.Limits, publicCost = limits, limits, limiter.Cost{"calls": 1}
		if err := public.Validate(); err != nil {
			return Preset{}, fmt.Errorf("%w: public: %w", ErrInvalid, err)
		}
	}
	book := newKrakenBook()
	tradeMost := most(trade.Limits[0].Limit)
	tradeCost := func(endpoint string, r *http.Request, body []byte) int {
		switch endpoint {
		case "AddOrder":
			return 1
		case "AddOrderBatch", "CancelOrderBatch":
			return krakenBatchCost(endpoint, r.Header.Get("Content-Type"), body, book, opts, tradeMost)
		case "CancelOrder", "EditOrder", "AmendOrder":
			if age, ok := book.age(bodyTxid(r.Header.Get("Content-Type"), body)); ok {
				return krakenAgeCost(endpoint, age, opts.timeScale)
			}
		}
		switch endpoint {
		case "CancelOrder":
			return opts.CancelCost
		case "EditOrder":
			return opts.EditCost
		case "AmendOrder":
			return min(opts.EditCost, krakenAmendCost)
		}
		return 0
	}
	watch := krakenUsage{hold: opts.LimitedHold}
	mo := opts.Middleware
	mo.StripHeaders = append(append([]string(nil), mo.StripHeaders...), KrakenPairHeader)
	rules := []middleware.Rule{{
		Hosts:      opts.Hosts,
		PathPrefix: "/0/private/",
		Match:      func(r *http.Request) bool { return krakenTrade[strings.TrimPrefix(r.URL.Path, "/0/private/")] },
		Quota:      trade,
		Charges: func(r *http.Request, body []byte) ([]limiter.Charge, error) {
			pair, err := requestPair(r.Header.Get(KrakenPairHeader), r, body)
			if err != nil {
				return nil, err
			}
			if c := tradeCost(strings.TrimPrefix(r.URL.Path, "/0/private/"), r, body); c > 0 {
				return []limiter.Charge{{Quota: trade.For(pair), Cost: limiter.Cost{"orders": c}}}, nil
			}
			return []limiter.Charge{{Quota: holdOnly.For(pair)}}, nil
		},
		Usage:    []middleware.UsageParser{{Parse: watch.ParseUsage}, {Parse: book.ParseUsage}},
		PeekBody: maxKrakenPeek,
	}, {
		Hosts:      opts.Hosts,
		PathPrefix: "/0/private/",
		Quota:      calls,
		Charges: func(r *http.Request, _ []byte) ([]limiter.Charge, error) {
			if krakenTwo[strings.TrimPrefix(r.URL.Path, "/0/private/")] {
				return []limiter.Charge{{Quota: calls, Cost: limiter.Cost{"calls": 2}}}, nil
			}
			return []limiter.Charge{{Quota: calls, Cost: limiter.Cost{"calls": 1}}}, nil
		},
		Usage:    []middleware.UsageParser{{Parse: watch.ParseUsage}},
		PeekBody: maxKrakenPeek,
	}, {
		Hosts:      opts.Hosts,
		PathPrefix: "/0/public/",
		Quota:      public,
		Charges: func(r *http.Request, body []byte) ([]limiter.Charge, error) {
			if !krakenPerPair[strings.TrimPrefix(r.URL.Path, "/0/public/")] {
				return []limiter.Charge{{Quota: public, Cost: publicCost}}, nil
			}
			q, _ := url.ParseQuery(r.URL.RawQuery)
			pair, err := requestPair(q.Get("pair"), r, body)
			if err != nil {
				return nil, err
			}
			return []limiter.Charge{{Quota: publicPair.For(pair), Cost: publicCost}}, nil
		},
		Usage:    []middleware.UsageParser{{Parse: watch.ParseUsage}},
		PeekBody: maxKrakenPeek,
	}}
	quotas := []limiter.Quota{calls, trade}
	if public.Limits != nil {
		quotas = append(quotas, public, publicPair)
	}
	return Preset{Exchange: "kraken", Quotas: quotas, Rules: rules, Options: mo}, nil
}

// maxKrakenPeek is how much of an answer's body the preset reads for its
// errors: Kraken puts "error" first, and a rate-limit answer is short.
const maxKrakenPeek = 4 << 10

// requestPair is the pair a request is charged to: named, else its body's
// "pair", else "unknown"; an error wrapping ErrInvalid when that is not a
// plausible pair name or the body was cut (len(body) > maxBody).
func requestPair(named string, r *http.Request, body []byte) (string, error) {
	pair := named
	if pair == "" && body != nil {
		if len(body) > maxBody {
			return "", fmt.Errorf("%w: request body above %d bytes", errInvalidPair, maxBody)
		}
		pair = bodyPair(r.Header.Get("Content-Type"), body)
	}
	if pair == "" {
		pair = "unknown"
	}
	if !krakenPairName.MatchString(pair) {
		return "", fmt.Errorf("%w: %q", errInvalidPair, truncate(pair, 40))
	}
	return pair, nil
}

// bodyPair reads "pair" from a form or JSON body.
func bodyPair(contentType string, b []byte) string {
	if strings.HasPrefix(strings.TrimSpace(contentType), "application/json") {
		var v struct {
			Pair string `json:"pair"`
		}
		_ = json.Unmarshal(b, &v)
		return v.Pair
	}
	f, _ := url.ParseQuery(string(b))
	return f.Get("pair")
}

// krakenPairName is what a pair name may be: Kraken's are letters and digits,
// some with a slash ("XBT/USD") or a dot ("ETH2.S").
var krakenPairName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9./_-]{0,31}$`)

// errInvalidPair is ErrInvalid for a Kraken trading, Trades or OHLC request
// whose pair (from its body, its query string or KrakenPairHeader) is not a
// plausible pair name. The request is not sent.
var errInvalidPair = fmt.Errorf("%w: kraken: pair", ErrInvalid)

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// krakenUsage reads Kraken's answers for the errors that say a limit was
// reached (Kraken answers them with HTTP 200): a hold of every quota the call
// was charged to.
type krakenUsage struct{ hold time.Duration }

func (k krakenUsage) ParseUsage(a *middleware.Answer) ([]middleware.Usage, error) {
	if d := krakenHold(a.Body, k.hold, time.Now()); d > 0 {
		return []middleware.Usage{{Hold: d}}, nil
	}
	return nil, nil
}

// krakenHold is how long body's errors say to hold: hold for a rate limit
// exceeded, until the time given for EService:Throttled. body may be cut
// short: only its "error" member, which Kraken sends first, is read.
func krakenHold(body []byte, hold time.Duration, now time.Time) time.Duration {
	errs := krakenErrors(body)
	var d time.Duration
	for _, e := range errs {
		switch {
		case strings.HasSuffix(e, ":Rate limit exceeded"), strings.HasPrefix(e, "EGeneral:Too many requests"):
			d = max(d, hold)
		case strings.HasPrefix(e, "EService:Throttled"), strings.HasPrefix(e, "EService: Throttled"):
			s := strings.TrimSpace(e[strings.LastIndex(e, ":")+1:])
			if ts, err := strconv.ParseInt(s, 10, 64); err == nil {
				d = max(d, time.Unix(ts, 0).Sub(now))
			} else {
				d = max(d, hold)
			}
		}
	}
	return d
}

// krakenErrors reads the "error" array of a Kraken answer, reading no
// further than it, so that an answer cut after it still gives it.
func krakenErrors(body []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil
		}
		if k == "error" {
			var errs []string
			if dec.Decode(&errs) != nil {
				return nil
			}
			return errs
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return nil
		}
	}
	return nil
}

// krakenBatchCost is what a batch call is charged on its pair's trading
// counter, at most the counter's maximum most: AddOrderBatch n/2 for n
// orders, rounded up; CancelOrderBatch, for each order cancelled, its age's
// cost when this preset saw it placed, else cancelCost. A body this cannot
// read (not JSON, no orders) is charged the maximum. Batches hold 2 to 15
// orders to add and up to 50 to cancel (Kraken's API reference).
//
// Sources (read 2026-12-07). Kraken's table of what a batch adds ("Spot
// Trading Limits", https://docs.kraken.com/exchange/guides/general/ratelimits
// and docs.kraken.com/api/docs/guides/spot-ratelimits) is cut at
// "Batch Add | +(" in every copy the stores hold. Kraken's own SDK,
// github.com/krakenfx/kraken-api-sdk at 0f71397 (v0.1.0, 2026-08-14),
// rust/src/api/trade/executors.rs, charges a batch add "n/2 on the trading
// counter" (cost = orders / 2, REST and WebSocket alike), and two
// third-party transcriptions of Kraken's page read "Batch Add | +(n/2)"
// (one: "rounded up") and "Batch Cancel" +(8×n) … +(1×n) by resting time.
// The add charge is n/2 rounded up (the counter here counts whole units; up
// never charges less than Kraken); before 2026-12-07 it was n. The cancel
// charge is the transcription's (each order's own age cost), which Kraken's
// SDK does not contradict (it cancels a batch as single CancelOrder calls).
func krakenBatchCost(endpoint, contentType string, body []byte, book *krakenBook, opts KrakenOptions, most int) int {
	var v struct {
		Orders   []json.RawMessage `json:"orders"`
		ClOrdIDs []string          `json:"cl_ord_ids"`
	}
	if !strings.HasPrefix(strings.TrimSpace(contentType), "application/json") || json.Unmarshal(body, &v) != nil || len(v.Orders)+len(v.ClOrdIDs) == 0 {
		return most
	}
	cost := 0
	if endpoint == "AddOrderBatch" {
		cost = (len(v.Orders) + 1) / 2
	} else {
		for _, o := range v.Orders {
			var txid string
			if json.Unmarshal(o, &txid) == nil {
				if age, ok := book.age(txid); ok {
					cost += krakenAgeCost("CancelOrder", age, opts.timeScale)
					continue
				}
			}
			cost += opts.CancelCost // a userref, or an order of unknown age
		}
		cost += len(v.ClOrdIDs) * opts.CancelCost
	}
	return min(cost, most)
}
