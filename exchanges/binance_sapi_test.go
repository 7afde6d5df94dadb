package exchanges_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/middleware"
)

// sapiDoc is how Binance documents a /sapi/ endpoint's weight: the limit
// it counts against ("IP", "UID", or "UID-1S" for the one endpoint counted
// in a window of a second) and its weight.
type sapiDoc struct {
	scope  string
	weight int
}

// sapiSim counts /sapi/ weight as Binance documents it (developer forum
// "Request limit on the API endpoints" and developers.binance.com
// …/caas/basics/4.rate-limits, see exchanges/binance_sapi.go): each
// endpoint is measured in IP or UID limit, "Each endpoint with IP limits has
// an independent weight of 12,000 per minute limit", "Each endpoint with UID
// limits has an independent weight of 180,000 per minute limit", answered in
// X-SAPI-USED-IP-WEIGHT-1M or X-SAPI-USED-UID-WEIGHT-1M; Withdraw History
// counts 180 000 a second per account, answered in
// X-SAPI-USED-UID-WEIGHT-1S (binance-api-swagger spot_api.yaml, 64b327c).
// Over a limit: 429 (never 418 on /sapi/). All callers are one IP; the
// account is the X-MBX-APIKEY header. The minute is period.
type sapiSim struct {
	period time.Duration
	docs   map[string]sapiDoc

	mu      sync.Mutex
	used    map[string]map[int64]int // IP endpoint or "account endpoint" → window → weight
	n429    int
	refused []string // each 429: its counter's key and how far into its window
	srv     *httptest.Server
}

func newSAPISim(t *testing.T, period time.Duration, docs map[string]sapiDoc) *sapiSim {
	s := &sapiSim{period: period, docs: docs, used: map[string]map[int64]int{}}
	s.srv = httptest.NewServer(s)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sapiSim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ep := r.Method + " " + r.URL.Path
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.docs[ep]
	if !ok {
		http.Error(w, "unknown endpoint "+ep, http.StatusNotFound)
		return
	}
	key, header, limit, period := ep, "X-SAPI-USED-IP-WEIGHT-1M", 12_000, s.period
	switch d.scope {
	case "UID":
		key, header, limit = r.Header.Get("X-MBX-APIKEY")+" "+ep, "X-SAPI-USED-UID-WEIGHT-1M", 180_000
	case "UID-1S":
		key, header, limit, period = r.Header.Get("X-MBX-APIKEY")+" "+ep, "X-SAPI-USED-UID-WEIGHT-1S", 180_000, s.period/60
	}
	win := time.Now().UnixNano() / int64(period)
	m := s.used[key]
	if m == nil {
		m = map[int64]int{}
		s.used[key] = m
	}
	if m[win]+d.weight > limit {
		s.n429++
		s.refused = append(s.refused, fmt.Sprintf("%s at +%s", key, time.Duration(time.Now().UnixNano()%int64(period))))
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	m[win] += d.weight
	w.Header().Set(header, fmt.Sprint(m[win]))
}

// Two /sapi/ endpoints, each pressed by 4 processes × 2 senders for three
// windows of a second (time scale 1/60), are each held to their own 12 000
// per window: no 429, and each fills its busiest window (≥ 90 %: one request
// is 5 % of a window, and the guard keeps the last part of each free), while
// both together use far more than one window's 12 000, which one shared
// quota would not allow. Both are IP-limited: Weights' heavier figures are
// charged to the IP's window of each.
func TestBinanceSAPI(t *testing.T) {
	const wallet, dividend = "GET /sapi/v1/capital/config/getall", "GET /sapi/v1/asset/assetDividend"
	// Heavier than documented (both are Weight(IP): 10), through Weights.
	weights := map[string]int{wallet: 600, dividend: 400}
	p, err := exchanges.Binance(exchanges.Scaled(exchanges.BinanceOptions{Hosts: []string{"127.0.0.1"}, Weights: weights}, 1.0/60))
	require.NoError(t, err)
	sim := newSAPISim(t, time.Second, map[string]sapiDoc{wallet: {"IP", 600}, dividend: {"IP", 400}})
	fleet := newFleetOf(t, p, p, p, p)

	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second + 5*time.Millisecond).Sub(now))
	start := time.Now()
	stop := start.Add(3200 * time.Millisecond)
	drive(t, fleet, 4, stop, func(ctx context.Context, pr *proc, g int) error {
		// Each sender presses one endpoint: a sender waiting for a turn on
		// one endpoint would otherwise starve the other.
		path := []string{"/sapi/v1/capital/config/getall", "/sapi/v1/asset/assetDividend"}[g%2]
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, sim.srv.URL+path, nil)
		if err != nil {
			return err
		}
		_, _, err = pr.do(req)
		return err
	})
	sim.mu.Lock()
	defer sim.mu.Unlock()
	assert.Zero(t, sim.n429, "429s")
	first, last := start.Unix()+1, stop.Unix()-1
	busiest := map[string]int{}
	both := 0
	for w := first; w <= last; w++ {
		for _, ep := range []string{wallet, dividend} {
			busiest[ep] = max(busiest[ep], sim.used[ep][w])
		}
		both = max(both, sim.used[wallet][w]+sim.used[dividend][w])
		t.Logf("window %d: %s %d, %s %d", w, wallet, sim.used[wallet][w], dividend, sim.used[dividend][w])
	}
	for ep, n := range busiest {
		assert.GreaterOrEqual(t, n, 10_800, "%s: busiest window %d of 12000", ep, n)
	}
	assert.Greater(t, both, 12_000, "the two endpoints must not share one window")
}

// An endpoint charged less than Binance counted (Weight(IP): 1, the
// simulator counting 12 000) is corrected by the header: the answer's X-SAPI-USED-IP-WEIGHT-1M raises the endpoint's count to what
// Binance counted, so the next request waits for the next window.
func TestBinanceSAPIHeaderSync(t *testing.T) {
	const ep = "GET /sapi/v1/account/status"
	sim := newSAPISim(t, time.Second, map[string]sapiDoc{ep: {"IP", 12_000}})
	p, err := exchanges.Binance(exchanges.Scaled(exchanges.BinanceOptions{Hosts: []string{"127.0.0.1"},
		Middleware: middleware.Options{FailFast: true}}, 1.0/60))
	require.NoError(t, err)
	pr := newFleetOf(t, p)[0]
	// Start early in a window of a second, so both calls fall in it.
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second + 5*time.Millisecond).Sub(now))
	req, _ := http.NewRequest(http.MethodGet, sim.srv.URL+"/sapi/v1/account/status", nil)
	status, _, err := pr.do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	req, _ = http.NewRequest(http.MethodGet, sim.srv.URL+"/sapi/v1/account/status", nil)
	_, _, err = pr.do(req)
	require.ErrorIs(t, err, middleware.ErrRateLimited, "the second call must wait: the header said 12 000 of 12 000 are used")
	assert.Zero(t, sim.n429)
}
