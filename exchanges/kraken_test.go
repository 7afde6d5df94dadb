package exchanges_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/bestof"
	"github.com/redquota/redquota/internal/holdtest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// counter is a counter that decays continuously at decay per second and
// refuses an increment that would take it above max, as Kraken documents its
// call counter and trading counter.
type counter struct {
	max, decay float64
	value      float64
	last       time.Time
}

func (c *counter) add(now time.Time, n float64) bool {
	if !c.last.IsZero() {
		c.value = math.Max(0, c.value-now.Sub(c.last).Seconds()*c.decay)
	}
	c.last = now
	if c.value+n > c.max {
		return false
	}
	c.value += n
	return true
}

// krakenSim enforces Kraken spot's documented REST limits for the Pro tier,
// with time scaled by scale:
//
//   - a call counter per API key, max 20, decaying 1/s: +2 for ledger and
//     trade history, +1 for other private calls (CancelAll and
//     CancelAllOrdersAfter included), nothing for AddOrder and CancelOrder
//     (https://docs.kraken.com/exchange/guides/rest/ratelimits, checked
//     2026-12-06: "All other API calls increase this counter by 1 (except
//     AddOrder, CancelOrder ...)");
//
//   - a trading counter per pair, max 180, decaying 3.75/s: +1 per AddOrder,
//     and per CancelOrder a penalty by the order's age: +8 under 5 s, +6 under
//     10 s, +5 under 15 s, +4 under 45 s, +2 under 90 s, +1 under 300 s
//     (https://support.kraken.com/hc/en-us/articles/360045239571-Trading-rate-limits).
//
//   - public calls (/0/public/) per IP, and for Trades and OHLC per IP and
//     pair, not in the IP's count ("rate limited by IP address and currency
//     pair for calls to Trades and OHLC, and by IP address only for calls to
//     all other public endpoints"; "a frequency of 1 per second (or less)
//     would remain within the rate limits":
//     https://support.kraken.com/articles/206548367-what-are-the-api-rate-limits-,
//     checked 2026-12-06): a counter per bucket decaying 1 per second
//     (scaled), +1 a call, that refuses a call taking it above publicMax
//     (see there). Trades and OHLC of one pair share a bucket (Kraken does
//     not say whether they do: the stricter reading). Other paths are not
//     counted (the tests warm connections with them).
//
// A call over a limit is answered as Kraken does, HTTP 200 with
// {"error":["EAPI:Rate limit exceeded"]} (EOrder: for trading,
// EGeneral:Too many requests for public calls); the log records it with
// status 429 so the test can count them.
type krakenSim struct {
	scale float64
	// tradeMax and tradeDecay are each pair's trading counter: Pro's by
	// default (180, 3.75/s, scaled).
	tradeMax, tradeDecay float64
	// publicMax is each public bucket's counter maximum: 1 (a call a second,
	// what Kraken documents as safe) plus a slack for the time requests take
	// to reach it, which varies: a client calling exactly once a second sees
	// its calls arrive closer together than that now and then, and Kraken
	// says such a client stays within its limits, so its counter tolerates
	// that much. With slack s, two calls may arrive s intervals closer than
	// their grants were, no more; a steady rate above 1 per interval is
	// refused whatever s. Default 1.5 (newKrakenSim).
	publicMax float64

	mu      sync.Mutex
	calls   map[string]*counter
	trading map[string]*counter
	public  map[string]*counter
	// publicPeak is the highest each public bucket's counter reached.
	publicPeak map[string]float64
	orders     map[string]order
	seq        int
	hits       []simHit
	srv        *httptest.Server
}

type order struct {
	pair   string
	placed time.Time
}

func newKrakenSim(t *testing.T, scale float64) *krakenSim {
	s := &krakenSim{scale: scale, tradeMax: 180, tradeDecay: 3.75 / scale, publicMax: 1.5,
		calls: map[string]*counter{}, trading: map[string]*counter{}, orders: map[string]order{},
		public: map[string]*counter{}, publicPeak: map[string]float64{}}
	s.srv = httptest.NewServer(s)
	t.Cleanup(s.srv.Close)
	return s
}

// krakenPenalties are what a transaction adds to its pair's trading counter
// by the age of its order (the fixed count first, then the decaying count
// under 5, 10, 15, 45, 90 and 300 s): "Spot Trading Limits",
// https://docs.kraken.com/exchange/guides/general/ratelimits ("Incrementing
// the rate counter", checked 2026-12-06).
var krakenPenalties = map[string][7]float64{
	"AmendOrder":  {1, 3, 2, 1, 0, 0, 0},
	"EditOrder":   {1, 6, 5, 4, 2, 1, 0},
	"CancelOrder": {0, 8, 6, 5, 4, 2, 1},
}

// tradeAdd adds cost to pair's trading counter at now, unless that would
// take it above its maximum (s.mu held).
func (s *krakenSim) tradeAdd(pair string, now time.Time, cost float64) bool {
	c := s.trading[pair]
	if c == nil {
		c = &counter{max: s.tradeMax, decay: s.tradeDecay}
		s.trading[pair] = c
	}
	return c.add(now, cost)
}

// penalty is what ep adds for an order of age (scaled).
func (s *krakenSim) penalty(ep string, age time.Duration) float64 {
	a := time.Duration(float64(age) / s.scale)
	p := krakenPenalties[ep]
	for i, under := range []time.Duration{5 * time.Second, 10 * time.Second, 15 * time.Second, 45 * time.Second, 90 * time.Second, 300 * time.Second} {
		if a < under {
			return p[0] + p[1+i]
		}
	}
	return p[0]
}

func (s *krakenSim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	ep, private := strings.CutPrefix(r.URL.Path, "/0/private/")
	pub, public := strings.CutPrefix(r.URL.Path, "/0/public/")
	s.mu.Lock()
	defer s.mu.Unlock()
	// The clock is read under the lock, so that requests are counted in the
	// order of their times: a time earlier than the last would undo decay.
	now := time.Now()
	reply := map[string]any{"error": []string{}, "result": map[string]any{}}
	hit := simHit{at: now, status: http.StatusOK, cost: map[string]int{}}
	switch {
	case public:
		// The bucket: "public" for the IP (every caller here is on
		// 127.0.0.1), "public-<pair>" for Trades and OHLC.
		bucket := "public"
		if pub == "Trades" || pub == "OHLC" {
			pair := r.URL.Query().Get("pair")
			if pair == "" {
				pair = form.Get("pair")
			}
			bucket += "-" + pair
		}
		c := s.public[bucket]
		if c == nil {
			c = &counter{max: s.publicMax, decay: 1 / s.scale}
			s.public[bucket] = c
		}
		hit.account = bucket
		if !c.add(now, 1) {
			reply["error"], hit.status = []string{"EGeneral:Too many requests"}, http.StatusTooManyRequests
			break
		}
		s.publicPeak[bucket] = max(s.publicPeak[bucket], c.value)
		hit.cost[bucket] = 1
	case !private:
	case ep == "AddOrder" || ep == "CancelOrder" || ep == "EditOrder" || ep == "AmendOrder":
		pair, cost := form.Get("pair"), 1.0
		if ep != "AddOrder" {
			o, ok := s.orders[form.Get("txid")]
			if !ok {
				reply["error"] = []string{"EOrder:Unknown order"}
				break
			}
			pair, cost = o.pair, s.penalty(ep, now.Sub(o.placed))
		}
		if !s.tradeAdd(pair, now, cost) {
			reply["error"], hit.status = []string{"EOrder:Rate limit exceeded"}, http.StatusTooManyRequests
			break
		}
		hit.cost["trade-"+pair] = int(cost)
		// What the preset charged: it cannot know an order's age, so a
		// cancel costs the worst case (DefaultKrakenCancelCost).
		hit.cost["charged-"+pair] = map[string]int{"AddOrder": 1, "CancelOrder": exchanges.DefaultKrakenCancelCost,
			"EditOrder": exchanges.DefaultKrakenEditCost, "AmendOrder": 4}[ep]
		switch ep {
		case "EditOrder", "AmendOrder":
			// The order rests on, its age counted from now ("since the order
			// was created or amended").
			s.orders[form.Get("txid")] = order{pair: pair, placed: now}
		case "AddOrder":
			s.seq++
			txid := fmt.Sprintf("O%d", s.seq)
			s.orders[txid] = order{pair: pair, placed: now}
			reply["result"] = map[string]any{"txid": []string{txid}}
		default:
			delete(s.orders, form.Get("txid"))
		}
	case ep == "AddOrderBatch" || ep == "CancelOrderBatch":
		// A batch add is n/2 for n orders (Kraken's SDK krakenfx/kraken-api-sdk
		// 0f71397, rust/src/api/trade/executors.rs: "Batch add costs n/2 on
		// the trading counter"; transcriptions of Kraken's "Spot Trading
		// Limits": "Batch Add | +(n/2)"), unrounded; a batch cancel each
		// order's cancel by its age ("Batch Cancel | +(8×n) … +(1×n)").
		var b struct {
			Pair   string            `json:"pair"`
			Orders []json.RawMessage `json:"orders"`
		}
		_ = json.Unmarshal(body, &b)
		pair, cost, ids := b.Pair, 0.0, []string{}
		if ep == "AddOrderBatch" {
			cost = float64(len(b.Orders)) / 2
		} else {
			for _, o := range b.Orders {
				var id string
				_ = json.Unmarshal(o, &id)
				if ord, ok := s.orders[id]; ok {
					pair, cost = ord.pair, cost+s.penalty("CancelOrder", now.Sub(ord.placed))
					ids = append(ids, id)
				}
			}
		}
		if !s.tradeAdd(pair, now, cost) {
			reply["error"], hit.status = []string{"EOrder:Rate limit exceeded"}, http.StatusTooManyRequests
			break
		}
		hit.cost["trade-"+pair] = int(cost)
		if ep == "CancelOrderBatch" {
			for _, id := range ids {
				delete(s.orders, id)
			}
			reply["result"] = map[string]any{"count": len(ids)}
			break
		}
		var placed []map[string]string
		for range b.Orders {
			s.seq++
			txid := fmt.Sprintf("O%d", s.seq)
			s.orders[txid] = order{pair: pair, placed: now}
			placed = append(placed, map[string]string{"txid": txid})
		}
		reply["result"] = map[string]any{"orders": placed}
	default:
		key, cost := r.Header.Get("API-Key"), 1.0
		if ep == "Ledgers" || ep == "QueryLedgers" || ep == "TradesHistory" || ep == "QueryTrades" {
			cost = 2
		}
		c := s.calls[key]
		if c == nil {
			c = &counter{max: 20, decay: 1 / s.scale}
			s.calls[key] = c
		}
		if !c.add(now, cost) {
			reply["error"], hit.status = []string{"EAPI:Rate limit exceeded"}, http.StatusTooManyRequests
			break
		}
		hit.cost["calls"] = int(cost)
	}
	s.hits = append(s.hits, hit)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(reply)
}

func (s *krakenSim) log() []simHit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]simHit(nil), s.hits...)
}

// krakenPost sends a private call as p with a form body.
func krakenPost(ctx context.Context, p *proc, base, endpoint string, form url.Values, pair string) (map[string]any, error) {
	form.Set("nonce", fmt.Sprint(time.Now().UnixNano()))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/0/private/"+endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("API-Key", "key-1")
	if pair != "" {
		req.Header.Set(exchanges.KrakenPairHeader, pair)
	}
	return krakenSend(p, req, endpoint)
}

// krakenSend sends req as p and reads Kraken's answer: an error when its
// "error" list is not empty.
func krakenSend(p *proc, req *http.Request, endpoint string) (map[string]any, error) {
	_, b, err := p.do(req)
	if err != nil {
		return nil, err
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", endpoint, err, b)
	}
	if e, _ := v["error"].([]any); len(e) > 0 {
		return v, fmt.Errorf("%s: %v", endpoint, e)
	}
	return v, nil
}

// krakenPostJSON sends a private call as p with a JSON body (the batch calls).
func krakenPostJSON(ctx context.Context, p *proc, base, endpoint string, body map[string]any) (map[string]any, error) {
	body["nonce"] = fmt.Sprint(time.Now().UnixNano())
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/0/private/"+endpoint, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("API-Key", "key-1")
	return krakenSend(p, req, endpoint)
}

// Eight processes share one Kraken Pro API key for four seconds, time scaled
// by 1/4 (the call counter decays 4 per second, the trading counters 15):
// 24 senders make
// private calls (balance, open orders, ledgers and trade history at +2) and 8
// traders place and at once cancel orders on two pairs. Both counters are
// asked for more than they allow. No call may be refused, and each counter
// must serve at least 95% of what it can allow over the run: its maximum plus
// its decay over the time from the first to the last call it counted.
//
// Connections are opened before the run: the preset keeps one unit of each
// counter back (BurstReserve), which absorbs one unit of difference between
// how fast the first burst's calls reach the simulator (250 ms for the call
// counter at this scale, 67 ms for a trading counter at 15 per second), and
// a cold connection under -race can take
// longer. At 1/10 a trading unit was 27 ms, and the first grant was seen to
// reach the simulator 40 to 60 ms late (a refusal 0.3 to 0.6 s into the run,
// the counter 0.2 to 0.5 over), and at load 15 a cancel more than the 80 ms
// that 3 units were then: while the counters fill, the simulator's decays
// from later than the limiter's, so it counts up to that delay × the decay
// rate more. Unscaled a unit is 267 ms and the default reserve suffices; at
// this scale the test holds back 3 units (200 ms). The simulator
// reads its clock under its lock: a request handled
// after another but timed before it would otherwise undo decay, refusing calls
// Kraken would accept. A cancel is charged the worst case, 8 (its order's age is not
// known); the simulator charges it 8 too, as these orders live under 1.25 s
// (5 s unscaled). What a trading counter leaves unused is structural (about
// 10 of 290 units at 1/10, 2 of 235 charged at 1/4): the unit held back, and
// the up to 8 units of room too small
// for the cancel that comes next (first come first served: nothing smaller
// can jump ahead of it).
func TestKrakenFleet(t *testing.T) {
	const scale = 1.0 / 4
	p, err := exchanges.Kraken(exchanges.Scaled(exchanges.KrakenOptions{
		Tier: exchanges.KrakenPro, Hosts: []string{"127.0.0.1"},
		// Pro's trading counter with 2 more units held back (3 with the
		// reserve): see above.
		Trading: limiter.Limit{Rate: 375, Period: 100 * time.Second, Burst: 178},
	}, scale))
	if err != nil {
		t.Fatal(err)
	}
	bestof.Run(t, func(t *testing.T, use *bestof.Usage) {
		sim := newKrakenSim(t, scale)
		fleet := newFleet(t, p)
		warm(t, fleet, p, sim.srv.URL+"/warm", 4) // as many per process as it has senders
		stop := time.Now().Add(4 * time.Second)
		calls := []string{"Balance", "OpenOrders", "Ledgers", "TradesHistory"}
		drive(t, fleet, 4, stop, func(ctx context.Context, pr *proc, g int) error {
			if g < 3 {
				_, err := krakenPost(ctx, pr, sim.srv.URL, calls[(pr.id+g)%len(calls)], url.Values{}, "")
				return err
			}
			pair := []string{"XBTUSD", "ETHUSD"}[pr.id%2]
			v, err := krakenPost(ctx, pr, sim.srv.URL, "AddOrder", url.Values{"pair": {pair}, "type": {"buy"}, "ordertype": {"limit"}}, "")
			if err != nil {
				return err
			}
			txid := v["result"].(map[string]any)["txid"].([]any)[0].(string)
			// The cancel names no pair: the header tells the preset which counter.
			_, err = krakenPost(context.WithoutCancel(ctx), pr, sim.srv.URL, "CancelOrder", url.Values{"txid": {txid}}, pair)
			return err
		})

		hits := sim.log()
		if n := countStatus(hits, http.StatusTooManyRequests); n > 0 {
			t.Fatalf("simulator refused %d calls for rate limits", n)
		}
		// share is the part of what a counter allows over the run (its maximum
		// plus its decay from the first to the last call it counted) that the
		// units named kind took, up to the end of the run: cancels queued by then
		// still go out after it, but no new orders, so the counter is no longer
		// asked for more than it allows.
		share := func(kind string, max, decay float64) (used int, allowed float64, span time.Duration) {
			var first, last time.Time
			for _, h := range hits {
				if h.cost[kind] == 0 || h.at.After(stop) {
					continue
				}
				if first.IsZero() {
					first = h.at
				}
				last, used = h.at, used+h.cost[kind]
			}
			return used, max + math.Floor(last.Sub(first).Seconds()*decay), last.Sub(first).Round(time.Millisecond)
		}
		used, allowed, span := share("calls", 20, 1/scale)
		t.Logf("Kraken call counter: %d units of %.0f allowed over %s (%.1f%%), 0 refused", used, allowed, span, 100*float64(used)/allowed)
		if float64(used) < 0.95*allowed {
			use.Errorf("call counter: used %.1f%% of the allowed units, want ≥ 95%%", 100*float64(used)/allowed)
		}
		// A trading counter is judged by what the preset charged: a cancel whose
		// turn comes more than 1.25 s (5 s unscaled) after its order was placed
		// costs Kraken 6, not 8, and the difference is the price of not knowing
		// the order's age (KrakenOptions.CancelCost); the exchange's own count is
		// logged.
		for _, pair := range []string{"XBTUSD", "ETHUSD"} {
			charged, allowed, span := share("charged-"+pair, 180, 3.75/scale)
			counted, _, _ := share("trade-"+pair, 180, 3.75/scale)
			t.Logf("Kraken %s trading counter: charged %d units of %.0f allowed over %s (%.1f%%); Kraken counted %d (%.1f%%); 0 refused",
				pair, charged, allowed, span, 100*float64(charged)/allowed, counted, 100*float64(counted)/allowed)
			if float64(charged) < 0.95*allowed {
				use.Errorf("%s: charged %.1f%% of the allowed units, want ≥ 95%%", pair, 100*float64(charged)/allowed)
			}
		}
	})
}

// A rate-limit error in the body (Kraken answers them with HTTP 200) holds the
// quota in Redis for LimitedHold, in every process; EService:Throttled holds
// until the time it gives.
func TestKrakenErrorBodyHolds(t *testing.T) {
	_, rdb := newMiniLimiterClient(t)
	lim := limiter.New(rdb, limiter.Options{Timeout: testTimeout})
	answer := `{"error":["EAPI:Rate limit exceeded"]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, answer) }))
	defer srv.Close()
	p, err := exchanges.Kraken(exchanges.KrakenOptions{Hosts: []string{"127.0.0.1"}, LimitedHold: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Client(lim, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Post(srv.URL+"/0/private/Balance", "application/x-www-form-urlencoded", strings.NewReader("nonce=1"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != answer {
		t.Errorf("body %q: the caller must still read the answer", b)
	}
	if d, err := holdtest.Left(context.Background(), lim, p.Quotas[0].Name, ""); err != nil || d < 6*time.Second || d > 7*time.Second {
		t.Errorf("held %s, %v; want 7s", d, err)
	}
	// An order refused for the pair's counter holds that pair's quota only.
	answer = `{"error":["EOrder:Rate limit exceeded"]}`
	resp, err = c.Post(srv.URL+"/0/private/AddOrder", "application/x-www-form-urlencoded", strings.NewReader("nonce=2&pair=XBTUSD"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d, _ := holdtest.Left(context.Background(), lim, p.Quotas[1].Name, "XBTUSD"); d < 6*time.Second {
		t.Errorf("pair hold %s, want 7s", d)
	}
	if d, _ := holdtest.Left(context.Background(), lim, p.Quotas[1].Name, "ETHUSD"); d != 0 {
		t.Errorf("another pair held %s", d)
	}
}

// Trading calls that cost nothing are still watched for rate-limit errors;
// KrakenPairHeader never reaches Kraken; "EService: Throttled" (with a space)
// holds like "EService:Throttled"; every hold is capped by MaxHold; and a
// pair that is not a pair name fails, unsent.
func TestKrakenWatchEdges(t *testing.T) {
	m, rdb := newMiniLimiterClient(t)
	now := time.Date(2025, 1, 15, 12, 0, 30, 0, time.UTC)
	m.SetTime(now)
	lim := limiter.New(rdb, limiter.Options{Timeout: testTimeout})
	var mu sync.Mutex
	var answer string
	var leaked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if v := r.Header.Get(exchanges.KrakenPairHeader); v != "" {
			leaked = append(leaked, r.URL.Path)
		}
		_, _ = io.WriteString(w, answer)
	}))
	defer srv.Close()
	p, err := exchanges.Kraken(exchanges.KrakenOptions{Hosts: []string{"127.0.0.1"}, LimitedHold: 7 * time.Second,
		Middleware: middleware.Options{MaxHold: 20 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Client(lim, nil)
	if err != nil {
		t.Fatal(err)
	}
	post := func(endpoint, body, pair, ans string) error {
		mu.Lock()
		answer = ans
		mu.Unlock()
		req, _ := http.NewRequest("POST", srv.URL+"/0/private/"+endpoint, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if pair != "" {
			req.Header.Set(exchanges.KrakenPairHeader, pair)
		}
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	held := func(q limiter.Quota, key string) time.Duration {
		d, err := holdtest.Left(context.Background(), lim, q.Name, key)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if err := post("AddOrderBatch", "nonce=1", "XBTUSD", `{"error":["EOrder:Rate limit exceeded"]}`); err != nil {
		t.Fatal(err)
	}
	if d := held(p.Quotas[1], "XBTUSD"); d < 6*time.Second {
		t.Errorf("AddOrderBatch's error held the pair %s, want 7s", d)
	}
	until := time.Now().Add(time.Hour).Unix() // beyond MaxHold (Kraken's time is the local clock's)
	if err := post("Balance", "nonce=2", "XBTUSD", fmt.Sprintf(`{"error":["EService: Throttled: %d"]}`, until)); err != nil {
		t.Fatal(err)
	}
	if d := held(p.Quotas[0], ""); d < 19*time.Second || d > 20*time.Second {
		t.Errorf("EService: Throttled held %s, want MaxHold's 20s", d)
	}
	if err := post("AddOrder", "nonce=3", "ETHUSD", `{"error":[]}`); err != nil {
		t.Fatal(err)
	}
	if len(leaked) > 0 {
		t.Errorf("%s sent to Kraken on %v", exchanges.KrakenPairHeader, leaked)
	}
	for _, pair := range []string{"XBT USD", strings.Repeat("X", 64), "a{b}"} {
		if err := post("AddOrder", "nonce=4", pair, `{"error":[]}`); !errors.Is(err, exchanges.ErrInvalid) {
			t.Errorf("pair %q: %v", pair, err)
		}
	}
}

// The tier's figures, as GCRA: the counter's maximum is the burst (less the
// reserve), its decay the rate.
func TestKrakenTiers(t *testing.T) {
	for _, tc := range []struct {
		tier       string
		max        int
		decay      float64
		tradeMax   int
		tradeDecay float64
	}{
		{exchanges.KrakenStarter, 15, 0.33, 60, 1},
		{exchanges.KrakenIntermediate, 20, 0.5, 125, 2.34},
		{exchanges.KrakenPro, 20, 1, 180, 3.75},
	} {
		c, _ := exchanges.KrakenCallCounter(tc.tier)
		tr, _ := exchanges.KrakenTradingCounter(tc.tier)
		rate := func(l limiter.Limit) float64 { return float64(l.Rate) / l.Period.Seconds() }
		if c.Burst != tc.max || math.Abs(rate(c)-tc.decay) > 1e-9 || tr.Burst != tc.tradeMax || math.Abs(rate(tr)-tc.tradeDecay) > 1e-9 {
			t.Errorf("%s: calls %+v, trading %+v", tc.tier, c, tr)
		}
		p, err := exchanges.Kraken(exchanges.KrakenOptions{Tier: tc.tier})
		if err != nil {
			t.Fatal(err)
		}
		if l, _ := testFind(p.Quotas[0], "calls"); l.Burst != tc.max-1 || l.Rate != c.Rate {
			t.Errorf("%s: quota limit %+v", tc.tier, l)
		}
	}
	if _, err := exchanges.Kraken(exchanges.KrakenOptions{Tier: "gold"}); !errors.Is(err, exchanges.ErrInvalid) {
		t.Errorf("unknown tier: %v", err)
	}
	p, _ := exchanges.Kraken(exchanges.KrakenOptions{})
	trade, calls := p.Rules[0], p.Rules[1]
	for path, want := range map[string]int{"/0/private/Balance": 1, "/0/private/Ledgers": 2, "/0/private/TradesHistory": 2} {
		req, _ := http.NewRequest("POST", "https://api.kraken.com"+path, nil)
		cs, err := calls.Charges(req, nil)
		if err != nil || trade.Match(req) || len(cs) != 1 || cs[0].Quota.Name != "kraken" || cs[0].Cost["calls"] != want {
			t.Errorf("%s: charges %+v, %v; want %d calls", path, cs, err, want)
		}
	}
	req, _ := http.NewRequest("POST", "https://api.kraken.com/0/private/AddOrder", nil)
	if !trade.Match(req) {
		t.Error("AddOrder is not a trading call")
	}
}

// A batch call (AddOrderBatch, whose form body it cannot count, charged the
// counter's maximum) is not sent during the pair's hold either: with a
// deadline the hold outlasts, it fails, typed, as AddOrder does. And the pair header never reaches Kraken, public calls
// included.
func TestKrakenFreeCallsHonourHold(t *testing.T) {
	_, rdb := newMiniLimiterClient(t)
	lim := limiter.New(rdb, limiter.Options{Timeout: testTimeout})
	var hits atomic.Int64
	var hdr atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		hdr.Store(r.Header.Get(exchanges.KrakenPairHeader))
		_, _ = io.WriteString(w, `{"error":[]}`)
	}))
	defer srv.Close()
	p, err := exchanges.Kraken(exchanges.KrakenOptions{Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Client(lim, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lim.Hold(context.Background(), p.Quotas[1].For("XBTUSD"), 30*time.Second, ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, ep := range []string{"AddOrder", "AddOrderBatch"} {
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/0/private/"+ep, strings.NewReader("nonce=1&pair=XBTUSD"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := c.Do(req)
		if resp != nil {
			resp.Body.Close()
		}
		var le *middleware.LimitedError
		if !errors.As(err, &le) || le.DeniedBy != limiter.HoldName {
			t.Fatalf("%s during a 30 s pair hold: %v", ep, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("%d calls reached Kraken during the hold", n)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/0/public/Ticker?pair=XBTUSD", nil)
	req.Header.Set(exchanges.KrakenPairHeader, "XBTUSD")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if h, _ := hdr.Load().(string); h != "" {
		t.Fatalf("public call: %s header reached Kraken: %q", exchanges.KrakenPairHeader, h)
	}
}

// Fifty pairs through one Transport: the preset's Transport is one
// middleware.Transport whatever the pairs, and each pair's orders are charged
// to that pair's trading counter (the trading quota applied to the pair).
// Eight processes place orders on 50 pairs for 1.5 s through counters that
// are small (at most 6, decaying 5 a second; the preset keeps one back);
// no order may be refused, every pair must be traded, and together the pairs
// must place far more than one counter allows over the run: each pair is
// counted apart. The simulator's counters hold 8: were the pairs counted
// together, or not at all, the fleet would still overrun them many times
// over, while two units more than the preset's (400 ms at 5 a second) keep
// a loaded machine's late arrivals from being counted as the preset's
// overshoot (with one unit, 200 ms, four other test suites beside this one
// drew 3 refusals).
func TestKrakenFiftyPairsOneTransport(t *testing.T) {
	const pairs = 50
	p, err := exchanges.Kraken(exchanges.KrakenOptions{Hosts: []string{"127.0.0.1"},
		Trading: limiter.Limit{Rate: 5, Period: time.Second, Burst: 6}, CancelCost: 1, EditCost: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, rdb := newMiniLimiterClient(t)
	tr, err := p.Transport(limiter.New(rdb, limiter.Options{Timeout: testTimeout}), nil)
	if err != nil || tr == nil {
		t.Fatalf("Transport: %v", err)
	}
	// Best of three: a loaded machine only lowers how many orders the
	// senders place (a run at load 20 placed none: every sender's first
	// order was still on its way at the 1.5 s stop), never raises it; a
	// refusal still fails the first run.
	bestof.Run(t, func(t *testing.T, use *bestof.Usage) {
		sim := newKrakenSim(t, 1)
		sim.tradeMax, sim.tradeDecay = 8, 5
		fleet := newFleet(t, p)
		stop := time.Now().Add(1500 * time.Millisecond)
		var next atomic.Int64
		drive(t, fleet, 4, stop, func(ctx context.Context, pr *proc, g int) error {
			pair := fmt.Sprintf("PAIR%02d", next.Add(1)%pairs)
			_, err := krakenPost(ctx, pr, sim.srv.URL, "AddOrder", url.Values{"pair": {pair}, "type": {"buy"}, "ordertype": {"limit"}}, "")
			return err
		})
		hits := sim.log()
		if n := countStatus(hits, http.StatusTooManyRequests); n > 0 {
			t.Fatalf("simulator refused %d orders for rate limits", n)
		}
		per := map[string]int{}
		total := 0
		for _, h := range hits {
			for k, c := range h.cost {
				if strings.HasPrefix(k, "trade-") {
					per[k] += c
					total += c
				}
			}
		}
		oneCounter := 6 + 5*1.5 // what a single counter allows over the run
		use.Logf("Kraken: %d orders on %d pairs through one Transport per process, 0 refused; one counter allows %.1f over the run", total, len(per), oneCounter)
		if len(per) != pairs {
			use.Errorf("%d pairs traded, want %d", len(per), pairs)
		}
		if float64(total) < 10*oneCounter {
			use.Errorf("%d orders in all: the pairs are not counted apart", total)
		}
	})
}

// CancelAll and CancelAllOrdersAfter add 1 to the call counter (Kraken
// excludes only AddOrder and CancelOrder from it: REST rate limits page,
// checked 2026-12-06). Eight processes share one Pro key for 2 s, time scaled
// by 1/4 (at 1/10 a unit decays in 100 ms, and a loaded machine's late
// arrival by more than that, load average 18, drew a refusal), calling Balance, CancelAll and CancelAllOrdersAfter without pause;
// the simulator counts the cancel-alls as Kraken documents. Charging them
// nothing, as the preset did, let the fleet overrun the counter; now no call
// is refused and the counter is used to at least 90% of what it allows.
func TestKrakenCancelAllCountsCalls(t *testing.T) {
	const scale = 1.0 / 4
	p, err := exchanges.Kraken(exchanges.Scaled(exchanges.KrakenOptions{Tier: exchanges.KrakenPro, Hosts: []string{"127.0.0.1"}}, scale))
	if err != nil {
		t.Fatal(err)
	}
	bestof.Run(t, func(t *testing.T, use *bestof.Usage) {
		sim := newKrakenSim(t, scale)
		fleet := newFleet(t, p)
		// Warm connections, one per sender, as TestKrakenFleet does: a cold
		// connection under -race can carry the first burst's calls later than
		// the one unit the preset holds back (250 ms at this scale) absorbs,
		// and the simulator's counter then decays from later than the
		// limiter's (a refusal at 1/4 in a run at load ~8).
		warm(t, fleet, p, sim.srv.URL+"/warm", 3)
		stop := time.Now().Add(2 * time.Second)
		calls := []string{"Balance", "CancelAll", "CancelAllOrdersAfter"}
		drive(t, fleet, 3, stop, func(ctx context.Context, pr *proc, g int) error {
			_, err := krakenPost(ctx, pr, sim.srv.URL, calls[(pr.id+g)%len(calls)], url.Values{"timeout": {"60"}}, "")
			return err
		})
		hits := sim.log()
		if n := countStatus(hits, http.StatusTooManyRequests); n > 0 {
			t.Fatalf("simulator refused %d calls for rate limits", n)
		}
		var first, last time.Time
		used := 0
		for _, h := range hits {
			if h.cost["calls"] == 0 || h.at.After(stop) {
				continue
			}
			if first.IsZero() {
				first = h.at
			}
			last, used = h.at, used+h.cost["calls"]
		}
		allowed := 20 + math.Floor(last.Sub(first).Seconds()/scale)
		t.Logf("Kraken call counter: %d units of %.0f allowed over %s, 0 refused", used, allowed, last.Sub(first).Round(time.Millisecond))
		if float64(used) < 0.9*allowed {
			use.Errorf("used %d of %.0f allowed units, want ≥ 90%%", used, allowed)
		}
	})
}

// EditOrder and AmendOrder are charged the most Kraken adds for them, 7 and
// 4 (their orders' age is not known), which the simulator charges for an
// order edited or amended within 5 seconds. A pair's trading counter of 12
// takes an order (1), its edit (7) and its amend (4) exactly: the next order
// must then be refused by the preset (FailFast), unsent, and the simulator
// must have refused nothing. Charged 6 for the edit, as before, the fourth
// order went out and the simulator refused it.
func TestKrakenEditAmendCosts(t *testing.T) {
	p, err := exchanges.Kraken(exchanges.KrakenOptions{
		Tier: exchanges.KrakenPro, Hosts: []string{"127.0.0.1"}, BurstReserve: -1,
		Trading:    limiter.Limit{Rate: 1, Period: 100 * time.Second, Burst: 12},
		Middleware: middleware.Options{FailFast: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	sim := newKrakenSim(t, 1)
	sim.tradeMax, sim.tradeDecay = 12, 0.01
	pr := newFleetOf(t, p)[0]
	ctx := context.Background()
	v, err := krakenPost(ctx, pr, sim.srv.URL, "AddOrder", url.Values{"pair": {"XBTUSD"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	txid := v["result"].(map[string]any)["txid"].([]any)[0].(string)
	for _, ep := range []string{"EditOrder", "AmendOrder"} {
		if _, err := krakenPost(ctx, pr, sim.srv.URL, ep, url.Values{"txid": {txid}}, "XBTUSD"); err != nil {
			t.Fatalf("%s: %v", ep, err)
		}
	}
	if _, err := krakenPost(ctx, pr, sim.srv.URL, "AddOrder", url.Values{"pair": {"XBTUSD"}}, ""); !errors.Is(err, middleware.ErrRateLimited) {
		t.Errorf("fourth order: %v, want ErrRateLimited (the counter is full)", err)
	}
	hits := sim.log()
	if n := countStatus(hits, http.StatusTooManyRequests); n != 0 || len(hits) != 3 {
		t.Fatalf("simulator saw %d calls, refused %d; want 3 and 0", len(hits), n)
	}
	for i, h := range hits {
		if h.cost["trade-XBTUSD"] != h.cost["charged-XBTUSD"] {
			t.Errorf("call %d: Kraken charged %d, the preset %d", i, h.cost["trade-XBTUSD"], h.cost["charged-XBTUSD"])
		}
	}
}

// A cancel costs what Kraken charges by the order's age when the preset saw
// the order placed, and the worst case when it did not. Time is scaled by
// 1/20 (an order rests 1.2 s: 24 s unscaled, which Kraken charges 4 to
// cancel, "under 45 s"; the bucket is from 0.75 s to 2.25 s, so a loaded
// machine has a second of slack). A pair's trading counter of 12 that hardly
// decays then takes: the order (1), its cancel (4), and exactly 7 more
// orders, the next refused by the preset (FailFast) and never sent; the
// simulator refuses nothing. The same order cancelled through a preset of
// another process (which did not see it placed) is charged 8: 3 more orders.
func TestKrakenCancelByAge(t *testing.T) {
	for _, sameProcess := range []bool{true, false} {
		t.Run(fmt.Sprintf("placed in this process=%v", sameProcess), func(t *testing.T) {
			preset := func() exchanges.Preset {
				p, err := exchanges.Kraken(exchanges.Scaled(exchanges.KrakenOptions{
					Tier: exchanges.KrakenPro, Hosts: []string{"127.0.0.1"}, BurstReserve: -1,
					Trading:    limiter.Limit{Rate: 1, Period: 10000 * time.Second, Burst: 12},
					Middleware: middleware.Options{FailFast: true},
				}, 1.0/20))
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			sim := newKrakenSim(t, 1.0/20)
			sim.tradeMax, sim.tradeDecay = 12, 0.0001
			fleet := newFleetOf(t, preset(), preset())
			placer, canceller := fleet[0], fleet[0]
			if !sameProcess {
				canceller = fleet[1]
			}
			ctx := context.Background()
			v, err := krakenPost(ctx, placer, sim.srv.URL, "AddOrder", url.Values{"pair": {"XBTUSD"}}, "")
			if err != nil {
				t.Fatal(err)
			}
			txid := v["result"].(map[string]any)["txid"].([]any)[0].(string)
			time.Sleep(1200 * time.Millisecond)
			if _, err := krakenPost(ctx, canceller, sim.srv.URL, "CancelOrder", url.Values{"txid": {txid}}, "XBTUSD"); err != nil {
				t.Fatal(err)
			}
			if c := sim.log()[1].cost["trade-XBTUSD"]; c != 4 {
				t.Fatalf("Kraken charged the cancel %d, want 4 (the order rested longer than the test allows for?)", c)
			}
			orders := 0
			for ; orders < 20; orders++ {
				_, err := krakenPost(ctx, placer, sim.srv.URL, "AddOrder", url.Values{"pair": {"XBTUSD"}}, "")
				if errors.Is(err, middleware.ErrRateLimited) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			want := 7 // 12 - 1 - 4
			if !sameProcess {
				want = 3 // 12 - 1 - 8: the age was not known here
			}
			if orders != want {
				t.Errorf("%d orders went out after the cancel, want %d", orders, want)
			}
			if n := countStatus(sim.log(), http.StatusTooManyRequests); n != 0 {
				t.Errorf("simulator refused %d calls", n)
			}
		})
	}
}

// testFind returns the limit of q named name.
func testFind(q limiter.Quota, name string) (limiter.Limit, bool) {
	for _, nl := range q.Limits {
		if nl.Name == name {
			return nl.Limit, true
		}
	}
	return limiter.Limit{}, false
}

// Batches through the preset against a simulator that charges a batch add
// n/2 and a batch cancel each order's cancel by its age (see krakenSim): 5
// orders placed in one AddOrderBatch (Kraken +2.5, charged 3), rested 1.2 s
// (24 s at scale 1/20: +4 each to cancel), cancelled in one CancelOrderBatch
// (+20, ages learnt from the batch's answer), then single orders fit until
// the counter of 30 is full: 7 of them (5 when a batch add was charged an
// order each, before 2026-12-07), none refused.
func TestKrakenBatchByAge(t *testing.T) {
	p, err := exchanges.Kraken(exchanges.Scaled(exchanges.KrakenOptions{
		Tier: exchanges.KrakenPro, Hosts: []string{"127.0.0.1"}, BurstReserve: -1,
		Trading:    limiter.Limit{Rate: 1, Period: 10000 * time.Second, Burst: 30},
		Middleware: middleware.Options{FailFast: true},
	}, 1.0/20))
	require.NoError(t, err)
	sim := newKrakenSim(t, 1.0/20)
	sim.tradeMax, sim.tradeDecay = 30, 0.0001
	proc := newFleetOf(t, p)[0]
	ctx := context.Background()
	orders := make([]map[string]any, 5)
	for i := range orders {
		orders[i] = map[string]any{"ordertype": "limit", "type": "buy", "volume": "1", "price": "1"}
	}
	v, err := krakenPostJSON(ctx, proc, sim.srv.URL, "AddOrderBatch", map[string]any{"pair": "XBTUSD", "orders": orders})
	require.NoError(t, err)
	var txids []string
	for _, o := range v["result"].(map[string]any)["orders"].([]any) {
		txids = append(txids, o.(map[string]any)["txid"].(string))
	}
	require.Len(t, txids, 5)
	time.Sleep(1200 * time.Millisecond)
	_, err = krakenPostJSON(ctx, proc, sim.srv.URL, "CancelOrderBatch", map[string]any{"pair": "XBTUSD", "orders": txids})
	require.NoError(t, err)
	require.Equal(t, 20, sim.log()[1].cost["trade-XBTUSD"], "the simulator charged the batch cancel 5 × 4 (the orders rested longer than the test allows for?)")
	n := 0
	for ; n < 40; n++ {
		_, err := krakenPost(ctx, proc, sim.srv.URL, "AddOrder", url.Values{"pair": {"XBTUSD"}}, "")
		if errors.Is(err, middleware.ErrRateLimited) {
			break
		}
		require.NoError(t, err)
	}
	require.Equal(t, 7, n, "orders after the batches: 30 - 3 - 20")
	require.Zero(t, countStatus(sim.log(), http.StatusTooManyRequests), "refused by the simulator")
}

// Eight processes × 2 senders place batches of 14 orders on one pair for
// three seconds, time scaled by 1/10 (Pro's trading counter: 180, decaying
// 37.5 a second), against the simulator charging a batch add n/2, 7 (see
// krakenSim). The preset charges each batch 7 too: no batch may be refused,
// and the batches must take at least 90 % of what the counter allows over
// the run (its maximum plus its decay from the first to the last batch it
// counted; the units held back, 3 as in TestKrakenFleet, and up to 6 units
// of room too small for a batch are structural). Charged an order each (14),
// as before 2026-12-07, the batches took about half.
func TestKrakenBatchAddFleet(t *testing.T) {
	const scale = 1.0 / 10
	p, err := exchanges.Kraken(exchanges.Scaled(exchanges.KrakenOptions{
		Tier: exchanges.KrakenPro, Hosts: []string{"127.0.0.1"},
		Trading: limiter.Limit{Rate: 375, Period: 100 * time.Second, Burst: 178},
	}, scale))
	require.NoError(t, err)
	orders := make([]map[string]any, 14)
	for i := range orders {
		orders[i] = map[string]any{"ordertype": "limit", "type": "buy", "volume": "1", "price": "1"}
	}
	bestof.Run(t, func(t *testing.T, use *bestof.Usage) {
		sim := newKrakenSim(t, scale)
		fleet := newFleet(t, p)
		warm(t, fleet, p, sim.srv.URL+"/warm", 2) // as many per process as it has senders
		stop := time.Now().Add(3 * time.Second)
		drive(t, fleet, 2, stop, func(ctx context.Context, pr *proc, g int) error {
			_, err := krakenPostJSON(ctx, pr, sim.srv.URL, "AddOrderBatch", map[string]any{"pair": "XBTUSD", "orders": orders})
			return err
		})
		hits := sim.log()
		require.Zero(t, countStatus(hits, http.StatusTooManyRequests), "batches refused by the simulator")
		var first, last time.Time
		counted := 0
		for _, h := range hits {
			if h.cost["trade-XBTUSD"] == 0 || h.at.After(stop) {
				continue
			}
			if first.IsZero() {
				first = h.at
			}
			last, counted = h.at, counted+h.cost["trade-XBTUSD"]
		}
		allowed := 180 + math.Floor(last.Sub(first).Seconds()*3.75/scale)
		use.Logf("Kraken XBTUSD trading counter: batches counted %d units of %.0f allowed over %s (%.1f%%), 0 refused",
			counted, allowed, last.Sub(first).Round(time.Millisecond), 100*float64(counted)/allowed)
		if float64(counted) < 0.9*allowed {
			use.Errorf("batches took %.1f%% of the counter, want ≥ 90%%", 100*float64(counted)/allowed)
		}
	})
}
