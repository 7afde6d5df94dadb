package exchanges_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/bestof"
	"github.com/redquota/redquota/limiter"
)

// okxSim enforces OKX v5's documented REST limits for the endpoints it
// knows (https://www.okx.com/docs-v5/en/, each endpoint's "Rate Limit" and
// "Rate limit rule"; "Rate Limits" overview, crawled 2026-07-04), every
// period multiplied by scale, each counted as a rolling window (OKX does
// not say how it counts; rolling is the strictest reading):
//
//   - GET /api/v5/market/tickers 20 per 2 s per IP, /market/books 40;
//   - POST /api/v5/trade/order 60 per 2 s per UID (OK-ACCESS-KEY) and
//     instrument; /trade/batch-orders 300 orders per 2 s per UID and
//     instrument, a batch of one counting as a single order;
//   - 1000 new orders per 2 s per UID (sub-account), each order of a batch.
//
// Over an endpoint's limit it answers HTTP 429 with code 50011, over the
// sub-account's HTTP 200 with code 50061.
type okxSim struct {
	scale float64
	mu    sync.Mutex
	logs  map[string]*slidingLog
	hits  []windowHit
	srv   *httptest.Server
}

var okxSimLimits = map[string]int{
	"GET /api/v5/market/tickers":      20,
	"GET /api/v5/market/books":        40,
	"POST /api/v5/trade/order":        60,
	"POST /api/v5/trade/batch-orders": 300,
}

func newOKXSim(t *testing.T, scale float64) *okxSim {
	s := &okxSim{scale: scale, logs: map[string]*slidingLog{}}
	s.srv = httptest.NewServer(s)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *okxSim) log2(key string, n int) *slidingLog {
	l := s.logs[key]
	if l == nil {
		l = &slidingLog{n: n, period: time.Duration(float64(2*time.Second) * s.scale)}
		s.logs[key] = l
	}
	return l
}

func (s *okxSim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/warm" {
		return
	}
	body, _ := io.ReadAll(r.Body)
	ep := r.Method + " " + r.URL.Path
	uid := r.Header.Get("OK-ACCESS-KEY")
	// The windows this request counts in, and its cost in each.
	costs := map[string]int{}
	limits := map[string]int{}
	orders := 0
	switch ep {
	case "GET /api/v5/market/tickers", "GET /api/v5/market/books":
		costs[ep], limits[ep] = 1, okxSimLimits[ep]
	case "POST /api/v5/trade/order":
		var o struct{ InstID string }
		_ = json.Unmarshal(body, &o)
		k := uid + " " + ep + " " + o.InstID
		costs[k], limits[k], orders = 1, okxSimLimits[ep], 1
	case "POST /api/v5/trade/batch-orders":
		var os []struct{ InstID string }
		_ = json.Unmarshal(body, &os)
		e := ep
		if len(os) == 1 {
			e = "POST /api/v5/trade/order"
		}
		for _, o := range os {
			k := uid + " " + e + " " + o.InstID
			costs[k]++
			limits[k] = okxSimLimits[e]
		}
		orders = len(os)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	keys := make([]string, 0, len(costs))
	for k := range costs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	refuse := ""
	for _, k := range keys {
		// Check first, count after: OKX refuses a request as a whole.
		probe := *s.log2(k, limits[k])
		if _, ok, _ := probe.take(now, costs[k]); !ok {
			refuse = "50011"
		}
	}
	if orders > 0 && refuse == "" {
		probe := *s.log2(uid+" orders", 1000)
		if _, ok, _ := probe.take(now, orders); !ok {
			refuse = "50061"
		}
	}
	for _, k := range keys {
		if refuse == "" {
			s.log2(k, limits[k]).take(now, costs[k])
		}
		s.hits = append(s.hits, windowHit{at: now, key: k, cost: costs[k], refused: refuse != ""})
	}
	if orders > 0 && refuse == "" {
		s.log2(uid+" orders", 1000).take(now, orders)
	}
	switch refuse {
	case "50011":
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"code":"50011","msg":"Too Many Requests","data":[]}`)
	case "50061":
		fmt.Fprint(w, `{"code":"50061","msg":"You've reached the maximum order rate limit for this account.","data":[]}`)
	default:
		fmt.Fprint(w, `{"code":"0","msg":"","data":[]}`)
	}
}

func (s *okxSim) log() []windowHit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]windowHit(nil), s.hits...)
}

// Eight processes read tickers and order books (per IP) and place orders for
// one UID and instrument (per UID and instrument) for 22 seconds (two
// windows), each sender always asking for more: no 50011, no 50061, and each
// window serves at least 95% of what a rolling window of the documented size
// can over the run. Why the bound holds under load: the preset pads each
// window by a 500 ms guard (for arrival skew, see TestBybitFleetUID), and a
// window's burst reaches the simulator over the time its senders take to
// send it (24 senders per kind: at most three rounds); periods are scaled by
// 10 (20 s) so that both together stay under 5% of a window.
func TestOKXFleet(t *testing.T) {
	const scale = 10
	bestof.Run(t, func(t *testing.T, use *bestof.Usage) {
		sim := newOKXSim(t, scale)
		p, err := exchanges.OKX(exchanges.Scaled(exchanges.OKXOptions{Hosts: []string{"127.0.0.1"}, Guard: 500 * time.Millisecond}, scale))
		if err != nil {
			t.Fatal(err)
		}
		fleet := newFleet(t, p)
		warm(t, fleet, p, sim.srv.URL+"/warm", 9)
		stop := time.Now().Add(22 * time.Second)
		drive(t, fleet, 9, stop, func(ctx context.Context, pr *proc, g int) error {
			var req *http.Request
			var err error
			switch g % 3 {
			case 0:
				req, err = http.NewRequestWithContext(ctx, http.MethodGet, sim.srv.URL+"/api/v5/market/tickers?instType=SPOT", nil)
			case 1:
				req, err = http.NewRequestWithContext(ctx, http.MethodGet, sim.srv.URL+"/api/v5/market/books?instId=BTC-USDT&sz=400", nil)
			default:
				req, err = okxOrder(ctx, sim.srv.URL, "uid-a", `{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"limit","px":"10000","sz":"0.001"}`)
			}
			if err != nil {
				return err
			}
			_, _, err = pr.do(req)
			return err
		})
		hits := sim.log()
		if n := refusals(hits); n != 0 {
			for _, h := range hits {
				if h.refused {
					t.Logf("refused at %s: %s", h.at.Format("15:04:05.000"), h.key)
				}
			}
			t.Fatalf("simulator refused %d requests", n)
		}
		period := scale * 2 * time.Second
		assertUsed(use, hits, "GET /api/v5/market/tickers", 20, period, 0.95)
		assertUsed(use, hits, "GET /api/v5/market/books", 40, period, 0.95)
		assertUsed(use, hits, "uid-a POST /api/v5/trade/order BTC-USDT", 60, period, 0.95)
	})
}

func okxOrder(ctx context.Context, base, uid, body string) (*http.Request, error) {
	path := "/api/v5/trade/order"
	if strings.HasPrefix(body, "[") {
		path = "/api/v5/trade/batch-orders"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("OK-ACCESS-KEY", uid)
	return req, nil
}

// What each request is charged: per IP, per IP and instrument type, per UID
// and instrument (the family for options), a batch by instrument and a batch
// of one as a single order, the sub-account's orders, and a hold-only charge
// for endpoints the preset does not know.
func TestOKXCosts(t *testing.T) {
	p, err := exchanges.OKX(exchanges.OKXOptions{Guard: -1, Limits: map[string]limiter.Limit{
		"GET /api/v5/market/books":   {Rate: 80, Period: 2 * time.Second},
		"GET /api/v5/asset/balances": {Rate: 6, Period: time.Second},
	}})
	if err != nil {
		t.Fatal(err)
	}
	type charge struct {
		quota string
		rate  int
		cost  int
	}
	rule := p.Rules[0]
	for _, c := range []struct {
		method, url, body string
		want              []charge
	}{
		{"GET", "https://www.okx.com/api/v5/market/tickers?instType=SPOT", "", []charge{{"okx/GET /api/v5/market/tickers", 20, 1}}},
		{"GET", "https://www.okx.com/api/v5/market/books?instId=BTC-USDT", "", []charge{{"okx/GET /api/v5/market/books", 80, 1}}},
		{"GET", "https://www.okx.com/api/v5/public/instruments?instType=SWAP", "", []charge{{"okx/GET /api/v5/public/instruments SWAP", 20, 1}}},
		{"GET", "https://www.okx.com/api/v5/public/funding-rate?instId=BTC-USDT-SWAP", "", []charge{{"okx/GET /api/v5/public/funding-rate BTC-USDT-SWAP", 10, 1}}},
		{"POST", "https://www.okx.com/api/v5/trade/order", `{"instId":"BTC-USDT"}`, []charge{{"okx-uid/k POST /api/v5/trade/order BTC-USDT", 60, 1}, {"okx-orders/k", 1000, 1}}},
		{"POST", "https://www.okx.com/api/v5/trade/order", `{"instId":"BTC-USD-250328-60000-C"}`, []charge{{"okx-uid/k POST /api/v5/trade/order BTC-USD", 60, 1}, {"okx-orders/k", 1000, 1}}},
		{"POST", "https://www.okx.com/api/v5/trade/batch-orders", `[{"instId":"BTC-USDT"},{"instId":"ETH-USDT"},{"instId":"BTC-USDT"}]`,
			[]charge{{"okx-uid/k POST /api/v5/trade/batch-orders BTC-USDT", 300, 2}, {"okx-uid/k POST /api/v5/trade/batch-orders ETH-USDT", 300, 1}, {"okx-orders/k", 1000, 3}}},
		{"POST", "https://www.okx.com/api/v5/trade/batch-orders", `[{"instId":"ETH-USDT"}]`, []charge{{"okx-uid/k POST /api/v5/trade/order ETH-USDT", 60, 1}, {"okx-orders/k", 1000, 1}}},
		{"POST", "https://www.okx.com/api/v5/trade/cancel-batch-orders", `[{"instId":"ETH-USDT"},{"instId":"ETH-USDT"}]`, []charge{{"okx-uid/k POST /api/v5/trade/cancel-batch-orders ETH-USDT", 300, 2}}},
		{"GET", "https://www.okx.com/api/v5/account/balance", "", []charge{{"okx-uid/k GET /api/v5/account/balance", 10, 1}}},
		{"GET", "https://www.okx.com/api/v5/asset/balances", "", []charge{{"okx-uid/k GET /api/v5/asset/balances", 6, 1}}},
		{"GET", "https://www.okx.com/api/v5/asset/currencies", "", []charge{{"okx/GET /api/v5/asset/currencies", 0, 0}}},
	} {
		req, _ := http.NewRequest(c.method, c.url, strings.NewReader(c.body))
		if strings.Contains(c.url, "/trade/") || strings.Contains(c.url, "/account/") || strings.Contains(c.url, "/asset/") {
			req.Header.Set("OK-ACCESS-KEY", "k")
		}
		var body []byte
		if c.body != "" {
			body = []byte(c.body)
		}
		cs, err := rule.Charges(req, body)
		if err != nil {
			t.Fatal(err)
		}
		var got []charge
		for _, ch := range cs {
			g := charge{quota: ch.Quota.Name + "/" + instanceKey(t, ch.Quota)}
			for _, nl := range ch.Quota.Limits {
				g.rate = nl.Limit.Rate
				g.cost = ch.Cost[nl.Name]
			}
			got = append(got, g)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s %s %s:\n got %v\nwant %v", c.method, c.url, c.body, got, c.want)
		}
	}
}

// instanceKey is the key a quota instance was made for (Quota.For's), read
// from its printed form: Quota keeps it unexported.
func instanceKey(t *testing.T, q limiter.Quota) string {
	t.Helper()
	s := fmt.Sprintf("%+v", q)
	i := strings.Index(s, "key:")
	j := strings.Index(s, " keyed:")
	if i < 0 || j < i {
		t.Fatalf("cannot read the key of %s", s)
	}
	return s[i+len("key:") : j]
}

// A 50011 answer (429) fills the endpoint's window and holds it, in every
// process, and only it: another endpoint's requests go on.
func TestOKXTooMany(t *testing.T) {
	var mu sync.Mutex
	sent := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent[r.URL.Path]++
		first := sent[r.URL.Path] == 1
		mu.Unlock()
		if r.URL.Path == "/api/v5/market/books" && first {
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"code":"50011","msg":"Too Many Requests","data":[]}`)
			return
		}
		fmt.Fprint(w, `{"code":"0","data":[]}`)
	}))
	t.Cleanup(srv.Close)
	p, err := exchanges.OKX(exchanges.Scaled(exchanges.OKXOptions{Hosts: []string{"127.0.0.1"}}, 5))
	if err != nil {
		t.Fatal(err)
	}
	fleet := newFleet(t, p)
	get := func(pr *proc, path string, d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		_, _, err := pr.do(req)
		return err
	}
	if err := get(fleet[0], "/api/v5/market/books?instId=BTC-USDT", time.Second); err != nil {
		t.Fatal(err)
	}
	// The books window is full for its period (10 s, scaled): another
	// process's request cannot be sent within 5 s.
	if err := get(fleet[1], "/api/v5/market/books?instId=BTC-USDT", 5*time.Second); err == nil {
		t.Error("a books request was sent after 50011")
	}
	if err := get(fleet[2], "/api/v5/market/tickers", time.Second); err != nil {
		t.Errorf("tickers after a books 50011: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if sent["/api/v5/market/books"] != 1 || sent["/api/v5/market/tickers"] != 1 {
		t.Errorf("sent %v, want one books and one tickers", sent)
	}
}
