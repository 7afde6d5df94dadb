package exchanges

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// KrakenTier is a Kraken account's verification tier, which sets its limits.
type KrakenTier uint8

const (
	// KrakenStarter is the Starter tier, the strictest. The default.
	KrakenStarter KrakenTier = iota
	// KrakenIntermediate is the Intermediate tier.
	KrakenIntermediate
	// KrakenPro is the Pro tier.
	KrakenPro
)

// String names the tier.
func (t KrakenTier) String() string {
	switch t {
	case KrakenStarter:
		return "starter"
	case KrakenIntermediate:
		return "intermediate"
	case KrakenPro:
		return "pro"
	}
	return "tier(" + strconv.Itoa(int(t)) + ")"
}

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
	krakenCounter = map[KrakenTier]limiter.Limit{
		KrakenStarter:      {Rate: 33, Period: 100 * time.Second, Burst: 15},
		KrakenIntermediate: {Rate: 50, Period: 100 * time.Second, Burst: 20},
		KrakenPro:          {Rate: 100, Period: 100 * time.Second, Burst: 20},
	}
	krakenTrading = map[KrakenTier]limiter.Limit{
		KrakenStarter:      {Rate: 100, Period: 100 * time.Second, Burst: 60},
		KrakenIntermediate: {Rate: 234, Period: 100 * time.Second, Burst: 125},
		KrakenPro:          {Rate: 375, Period: 100 * time.Second, Burst: 180},
	}
)

// KrakenCallCounter returns tier's per-API-key call counter as a GCRA limit.
func KrakenCallCounter(tier KrakenTier) (limiter.Limit, bool) {
	l, ok := krakenCounter[tier]
	return l, ok
}

// KrakenTradingCounter returns tier's per-pair trading counter as a GCRA limit.
func KrakenTradingCounter(tier KrakenTier) (limiter.Limit, bool) {
	l, ok := krakenTrading[tier]
	return l, ok
}

// krakenTwo are the private endpoints that add 2 to the call counter:
// "Ledger/trade history calls increase the counter by 2"
// (https://docs.kraken.com/exchange/guides/rest/ratelimits).
var krakenTwo = map[string]bool{"Ledgers": true, "QueryLedgers": true, "TradesHistory": true, "QueryTrades": true}

// krakenTrade are the trading endpoints, which do not touch the call counter
// ("except AddOrder, CancelOrder which operate on a different limiter", same
// page). Those with a cost here are charged to the pair's trading counter; the
// batch and cancel-all endpoints pass uncharged (their pairs and counts are not
// known from the request).
var krakenTrade = map[string]bool{
	"AddOrder": true, "CancelOrder": true, "EditOrder": true, "AmendOrder": true,
	"AddOrderBatch": true, "CancelOrderBatch": true, "CancelAll": true, "CancelAllOrdersAfter": true,
}

// Defaults of KrakenOptions.
const (
	// DefaultKrakenCancelCost is what a cancel adds to the pair's trading
	// counter when its order's age is not known: the most it can add, 8, for an
	// order cancelled within 5 seconds (https://support.kraken.com/hc/en-us/articles/360045239571-Trading-rate-limits,
	// "Rate Limit Details": +8 under 5 s, +6 under 10 s, +5 under 15 s, +4
	// under 45 s, +2 under 90 s, +1 under 300 s).
	DefaultKrakenCancelCost = 8
	// DefaultKrakenEditCost is the most an edit or amend adds, 6, for an order
	// edited within 5 seconds (same page).
	DefaultKrakenEditCost = 6
	// DefaultKrakenLimitedHold is how long a "Rate limit exceeded" answer holds
	// the quota: "additional calls will be restricted for a few seconds"
	// (https://docs.kraken.com/exchange/guides/rest/ratelimits).
	DefaultKrakenLimitedHold = 5 * time.Second
	// KrakenPairHeader names the pair of a request that carries none in its
	// body (CancelOrder takes a txid): set it to charge the right pair's
	// trading counter. It is removed before the request is sent.
	KrakenPairHeader = "X-Redquota-Kraken-Pair"
)

// KrakenOptions configure a Kraken spot preset. The zero value gives the
// Starter tier's documented limits; each field documents its default.
type KrakenOptions struct {
	// Tier is the account's tier. Default KrakenStarter.
	Tier KrakenTier
	// Quota names the call counter's quota (one per API key, as Kraken counts);
	// a pair's trading counter is the quota <Quota>-trade-<pair> (one per
	// account and pair). Default "kraken".
	Quota string
	// Hosts are the hosts whose /0/private/ requests are charged. Public
	// endpoints are not charged: Kraken publishes no figure for them. Default
	// api.kraken.com.
	Hosts []string
	// Counter and Trading override the tier's call counter and per-pair
	// trading counter (their periods are scaled too); zero values keep the
	// tier's.
	Counter, Trading limiter.Limit
	// BurstReserve is how many units of each counter's maximum the limiter
	// keeps back, as CoinbaseOptions.BurstReserve; it also covers Kraken
	// decaying its counter in steps ("every couple of seconds") rather than
	// continuously. Default DefaultBurstReserve; negative for none.
	BurstReserve int
	// CancelCost and EditCost are what CancelOrder and EditOrder (or
	// AmendOrder) add to the trading counter. Default DefaultKrakenCancelCost
	// and DefaultKrakenEditCost (the worst case: orders of unknown age).
	CancelCost, EditCost int
	// LimitedHold is how long an answer with EAPI:Rate limit exceeded (or
	// EOrder:Rate limit exceeded) holds its quota. Default
	// DefaultKrakenLimitedHold, scaled.
	LimitedHold time.Duration
	// TimeScale multiplies every period and hold, for tests. Default 1.
	TimeScale float64
	// Middleware is the Transports' options, used as they are.
	Middleware middleware.Options
}

type krakenConfig struct {
	KrakenOptions
	counter, trading limiter.Quota
	rule             middleware.Rule // the call counter's
	host             func(*http.Request) bool
}

// Kraken returns the preset for Kraken spot's REST API. Two counters decay
// at a tier-dependent rate, which GCRA models exactly (the counter's maximum is
// the burst, its decay the rate):
//
//   - the call counter, per API key: +1 for each private call, +2 for ledger
//     and trade history, none for trading calls;
//   - the trading counter, per pair: +1 for AddOrder, and CancelCost or
//     EditCost for CancelOrder and EditOrder. The pair comes from the
//     request's form or JSON body ("pair") or KrakenPairHeader (which is
//     never sent to Kraken). A request whose pair is unknown is charged to
//     the pair "unknown"; one whose pair is not a plausible name, or a new
//     pair past MaxKrakenPairs, fails with ErrInvalidPair, unsent. Trading
//     calls that cost nothing (AddOrderBatch, CancelAll…) are not charged.
//
// Kraken reports a limit reached in the answer's body, with HTTP 200
// (EAPI:Rate limit exceeded, EOrder:Rate limit exceeded, EService:Throttled:
// <unix time>, also spelt "EService: Throttled"); the preset's Transport reads
// it from every private call's answer and holds the quota (the pair's
// counter for a trading call), in every process, for LimitedHold (or until
// the time given), at most Middleware.MaxHold. These holds are not counted in
// the Transport's Stats; a hold Redis refuses goes to Middleware.OnError.
func Kraken(opts KrakenOptions) (Preset, error) {
	if err := checkScale(opts.TimeScale); err != nil {
		return Preset{}, err
	}
	counter, ok1 := krakenCounter[opts.Tier]
	trading, ok2 := krakenTrading[opts.Tier]
	if !ok1 || !ok2 {
		return Preset{}, fmt.Errorf("%w: Kraken tier %s", ErrInvalidOption, opts.Tier)
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
		opts.BurstReserve = DefaultBurstReserve
	}
	if opts.CancelCost <= 0 {
		opts.CancelCost = DefaultKrakenCancelCost
	}
	if opts.EditCost <= 0 {
		opts.EditCost = DefaultKrakenEditCost
	}
	if opts.LimitedHold <= 0 {
		opts.LimitedHold = scale(DefaultKrakenLimitedHold, opts.TimeScale)
	}
	counter.Period = scale(counter.Period, opts.TimeScale)
	trading.Period = scale(trading.Period, opts.TimeScale)
	cfg := &krakenConfig{KrakenOptions: opts, host: hostMatcher(opts.Hosts)}
	cfg.counter = limiter.Quota{Name: opts.Quota, Limits: []limiter.NamedLimit{{Name: "calls", Limit: reserve(counter, opts.BurstReserve)}}}
	cfg.trading = limiter.Quota{Name: opts.Quota + "-trade", Limits: []limiter.NamedLimit{{Name: "orders", Limit: reserve(trading, opts.BurstReserve)}}}
	for _, q := range []limiter.Quota{cfg.counter, cfg.trading} {
		if err := q.Validate(); err != nil {
			return Preset{}, fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
	}
	for _, c := range []int{opts.CancelCost, opts.EditCost} {
		if c > cfg.trading.Limits[0].Limit.Max() {
			return Preset{}, fmt.Errorf("%w: trading cost %d above the counter's maximum %d", ErrInvalidOption, c, cfg.trading.Limits[0].Limit.Max())
		}
	}
	rule := middleware.Rule{
		PathPrefix: "/0/private/",
		Match: func(r *http.Request) bool {
			return cfg.host(r) && !krakenTrade[strings.TrimPrefix(r.URL.Path, "/0/private/")]
		},
		Quota: cfg.counter,
		CostFunc: func(r *http.Request) (limiter.Cost, error) {
			if krakenTwo[strings.TrimPrefix(r.URL.Path, "/0/private/")] {
				return limiter.Cost{"calls": 2}, nil
			}
			return limiter.Cost{"calls": 1}, nil
		},
	}
	cfg.rule = rule
	return Preset{
		Exchange: "kraken",
		Quotas:   []limiter.Quota{cfg.counter},
		Rules:    []middleware.Rule{rule},
		Options:  opts.Middleware,
		build:    cfg.transport,
	}, nil
}

// tradeCost is what a trading endpoint adds to its pair's counter (0: none).
func (c *krakenConfig) tradeCost(endpoint string) int {
	switch endpoint {
	case "AddOrder":
		return 1
	case "CancelOrder":
		return c.CancelCost
	case "EditOrder", "AmendOrder":
		return c.EditCost
	}
	return 0
}

func (c *krakenConfig) transport(lim *limiter.Limiter, next http.RoundTripper) (http.RoundTripper, error) {
	k := &krakenTransport{cfg: c, lim: lim, next: next}
	calls := middleware.NewTransportWithOptions(k.watch(c.counter.Name), lim, c.Middleware, c.rule)
	if err := calls.Err(); err != nil {
		return nil, fmt.Errorf("exchanges: kraken: %w", err)
	}
	k.calls = calls
	return k, nil
}

// krakenTransport sends trading calls through one middleware Transport per
// pair (its own quota: the trading counter is per pair) and every other
// private call through the call counter's Transport.
type krakenTransport struct {
	cfg    *krakenConfig
	lim    *limiter.Limiter
	next   http.RoundTripper
	calls  http.RoundTripper
	pairs  sync.Map // pair → http.RoundTripper
	npairs atomic.Int64
}

// maxKrakenBody is the most of a trading request's body read to find its pair.
const maxKrakenBody = 64 << 10

func (k *krakenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ep, private := strings.CutPrefix(req.URL.Path, "/0/private/")
	if !private || !k.cfg.host(req) {
		return k.next.RoundTrip(stripPair(req))
	}
	if !krakenTrade[ep] {
		return k.calls.RoundTrip(stripPair(req))
	}
	cost := k.cfg.tradeCost(ep)
	out := req.Clone(req.Context())
	pair := req.Header.Get(KrakenPairHeader)
	out.Header.Del(KrakenPairHeader)
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(req.Body, maxKrakenBody+1))
		_ = req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("exchanges: kraken: read request body: %w", err)
		}
		if len(b) > maxKrakenBody {
			return nil, fmt.Errorf("exchanges: kraken: request body above %d bytes", maxKrakenBody)
		}
		out.Body = io.NopCloser(bytes.NewReader(b))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		out.ContentLength = int64(len(b))
		if pair == "" {
			pair = bodyPair(req.Header.Get("Content-Type"), b)
		}
	}
	if pair == "" {
		pair = "unknown"
	}
	if !krakenPairName.MatchString(pair) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidPair, truncate(pair, 40))
	}
	if cost == 0 {
		// Not charged (AddOrderBatch, CancelAll…), but never sent during the
		// pair's hold, and a rate-limit error in its answer still holds the
		// pair's counter.
		quota := k.cfg.trading.Name + "-" + pair
		if err := k.waitHold(out.Context(), quota); err != nil {
			var le *middleware.LimitedError
			if !errors.As(err, &le) && out.Context().Err() == nil {
				// Redis unreachable: the call is free, so it goes out as it
				// did before holds were checked; the error is reported.
				if f := k.cfg.Middleware.OnError; f != nil {
					f(req, err)
				}
			} else {
				return nil, err
			}
		}
		return k.watch(quota).RoundTrip(out)
	}
	t, err := k.pair(pair)
	if err != nil {
		return nil, err
	}
	return t.RoundTrip(out.WithContext(context.WithValue(out.Context(), tradeCostKey{}, cost)))
}

type tradeCostKey struct{}

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

// stripPair returns req, or a copy without KrakenPairHeader when it has one:
// the header is for the preset, never for Kraken.
func stripPair(req *http.Request) *http.Request {
	if _, ok := req.Header[KrakenPairHeader]; !ok {
		return req
	}
	out := req.Clone(req.Context())
	out.Header.Del(KrakenPairHeader)
	return out
}

// krakenPairName is what a pair name may be: Kraken's are letters and digits,
// some with a slash ("XBT/USD") or a dot ("ETH2.S").
var krakenPairName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9./_-]{0,31}$`)

// MaxKrakenPairs bounds how many pairs' trading counters one Transport keeps
// (one middleware Transport each, never evicted): Kraken lists about a
// thousand pairs. A request for a pair past the bound fails with
// ErrInvalidPair, unsent.
const MaxKrakenPairs = 4096

// ErrInvalidPair: a Kraken trading request whose pair (from its body or
// KrakenPairHeader) is not a plausible pair name, or a new pair past
// MaxKrakenPairs. The request is not sent.
var ErrInvalidPair = errors.New("exchanges: kraken: invalid pair")

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// watch returns a watcher of Kraken's answers holding quota.
func (k *krakenTransport) watch(quota string) *krakenWatch {
	return &krakenWatch{next: k.next, lim: k.lim, quota: quota, hold: k.cfg.LimitedHold,
		maxHold: k.cfg.Middleware.MaxHold, onError: k.cfg.Middleware.OnError}
}

// waitHold returns once quota has no hold, waiting one out; a hold that
// outlasts ctx's deadline is a *middleware.LimitedError at once, and a Redis
// error is returned as it is.
func (k *krakenTransport) waitHold(ctx context.Context, quota string) error {
	for {
		h, err := k.lim.Held(ctx, limiter.Quota{Name: quota})
		if err != nil {
			return fmt.Errorf("exchanges: kraken: quota %q: %w", quota, err)
		}
		if h <= 0 {
			return nil
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) < h {
			return &middleware.LimitedError{Quota: quota, DeniedBy: limiter.HoldName, RetryAfter: h, Err: limiter.ErrWouldExceedDeadline}
		}
		t := time.NewTimer(h)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// pair returns the Transport of pair's trading counter, made on first use.
func (k *krakenTransport) pair(pair string) (http.RoundTripper, error) {
	if t, ok := k.pairs.Load(pair); ok {
		return t.(http.RoundTripper), nil
	}
	if k.npairs.Add(1) > MaxKrakenPairs {
		k.npairs.Add(-1)
		return nil, fmt.Errorf("%w: more than %d pairs", ErrInvalidPair, MaxKrakenPairs)
	}
	q := k.cfg.trading
	q.Name += "-" + pair
	rule := middleware.Rule{
		Quota: q,
		CostFunc: func(r *http.Request) (limiter.Cost, error) {
			c, _ := r.Context().Value(tradeCostKey{}).(int)
			return limiter.Cost{"orders": max(c, 1)}, nil
		},
	}
	t := middleware.NewTransportWithOptions(k.watch(q.Name), k.lim, k.cfg.Middleware, rule)
	if err := t.Err(); err != nil {
		k.npairs.Add(-1)
		return nil, fmt.Errorf("exchanges: kraken pair %q: %w", pair, err)
	}
	got, loaded := k.pairs.LoadOrStore(pair, t)
	if loaded {
		k.npairs.Add(-1) // another request made it first
	}
	return got.(http.RoundTripper), nil
}

// krakenWatch reads Kraken's answers for the errors that say a limit was
// reached (Kraken answers them with HTTP 200) and holds quota in Redis.
type krakenWatch struct {
	next    http.RoundTripper
	lim     *limiter.Limiter
	quota   string
	hold    time.Duration
	maxHold time.Duration              // Options.MaxHold; ≤ 0: limiter.MaxHold
	onError func(*http.Request, error) // Options.OnError, or nil
}

func (w *krakenWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := w.next.RoundTrip(req)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	b := peekBody(resp, maxKrakenBody)
	d := krakenHold(b, w.hold, time.Now())
	if d > 0 {
		maxHold := limiter.MaxHold
		if w.maxHold > 0 {
			maxHold = min(w.maxHold, maxHold)
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), time.Second)
		defer cancel()
		if _, err := w.lim.Hold(ctx, limiter.Quota{Name: w.quota}, min(d, maxHold)); err != nil && w.onError != nil {
			w.onError(req, fmt.Errorf("exchanges: kraken: hold quota %q for %s: %w", w.quota, min(d, maxHold), err))
		}
	}
	return resp, nil
}

// krakenHold is how long body's errors say to hold: hold for a rate limit
// exceeded, until the time given for EService:Throttled.
func krakenHold(body []byte, hold time.Duration, now time.Time) time.Duration {
	var v struct {
		Error []string `json:"error"`
	}
	if json.Unmarshal(body, &v) != nil {
		return 0
	}
	var d time.Duration
	for _, e := range v.Error {
		switch {
		case strings.HasSuffix(e, ":Rate limit exceeded"):
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
