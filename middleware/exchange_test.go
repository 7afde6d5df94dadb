package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// exchange simulates Binance's request-weight limit, scaled down to windows of
// period (1 s in the tests): a fixed window aligned to the Unix clock, like
// Binance's minute. Every answer carries X-MBX-USED-WEIGHT-1S. A request that
// does not fit is answered 429 with Retry-After (whole seconds to the window's
// end); one that arrives before a 429's Retry-After has passed is a violation,
// and banAfter violations earn a 418 ban.
type exchange struct {
	period   time.Duration
	limit    int
	external int // weight other users of the same IP take in every window
	banAfter int

	mu         sync.Mutex
	win        int64
	used       int
	backoff    time.Time // no request before this (after a 429)
	violations int
	banUntil   time.Time
	inject     []injected
	injectedAt chan time.Time
	hits       []hit
	srv        *httptest.Server
}

// hit is one request as the exchange saw it.
type hit struct {
	at     time.Time
	proc   string
	weight int
	status int
	window int64
}

type injected struct {
	status     int
	retryAfter string
}

func newExchange(t *testing.T, period time.Duration, limit int) *exchange {
	e := &exchange{period: period, limit: limit, banAfter: 3, injectedAt: make(chan time.Time, 16)}
	e.srv = httptest.NewServer(e)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *exchange) URL() string { return e.srv.URL }

// endpointWeight is the simulated endpoints' weights, Binance's shape scaled
// down: the order book's weight grows with its limit parameter.
func endpointWeight(r *http.Request) (int, error) {
	switch r.URL.Path {
	case "/api/v3/ping", "/api/v3/order":
		return 1, nil
	case "/api/v3/ticker/price":
		return 2, nil
	case "/api/v3/depth":
		n := 100
		if s := r.URL.Query().Get("limit"); s != "" {
			var err error
			if n, err = strconv.Atoi(s); err != nil || n <= 0 {
				return 0, fmt.Errorf("bad limit %q", s)
			}
		}
		switch {
		case n <= 100:
			return 5, nil
		case n <= 500:
			return 10, nil
		case n <= 1000:
			return 20, nil
		}
		return 50, nil
	}
	return 0, fmt.Errorf("unknown endpoint %s", r.URL.Path)
}

// weightCost is the rule's CostFunc for the simulated endpoints.
func weightCost(r *http.Request) (limiter.Cost, error) {
	w, err := endpointWeight(r)
	return limiter.Cost{"weight": w}, err
}

func (e *exchange) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	weight, err := endpointWeight(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	win := now.UnixMicro() / e.period.Microseconds()
	if win != e.win {
		e.win, e.used = win, e.external
	}
	h := w.Header()
	status := http.StatusOK
	switch {
	case len(e.inject) > 0:
		in := e.inject[0]
		e.inject = e.inject[1:]
		status = in.status
		if in.retryAfter != "" {
			h.Set("Retry-After", in.retryAfter)
		}
		e.injectedAt <- now
	case now.Before(e.banUntil):
		status = http.StatusTeapot
		h.Set("Retry-After", strconv.FormatInt(int64(time.Until(e.banUntil)/time.Second)+1, 10))
	case now.Before(e.backoff):
		e.violations++
		status = http.StatusTooManyRequests
		if e.violations >= e.banAfter {
			status, e.banUntil = http.StatusTeapot, now.Add(2*time.Minute)
		}
		h.Set("Retry-After", strconv.FormatInt(int64(time.Until(e.backoff)/time.Second)+1, 10))
	case e.used+weight > e.limit:
		status = http.StatusTooManyRequests
		end := time.UnixMicro((win + 1) * e.period.Microseconds())
		e.backoff = end
		h.Set("Retry-After", strconv.FormatInt(int64((end.Sub(now)+time.Second-1)/time.Second), 10))
	default:
		e.used += weight
	}
	h.Set("X-MBX-USED-WEIGHT-1S", strconv.Itoa(e.used))
	e.hits = append(e.hits, hit{at: now, proc: r.Header.Get("X-Proc"), weight: weight, status: status, window: win})
	w.WriteHeader(status)
	_, _ = io.WriteString(w, `{}`)
}

// injectNext makes the next request, whatever it is, get status with Retry-After.
func (e *exchange) injectNext(status int, retryAfter string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inject = append(e.inject, injected{status, retryAfter})
}

func (e *exchange) log() []hit {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]hit(nil), e.hits...)
}

// count returns how many hits had status.
func count(hits []hit, status int) int {
	n := 0
	for _, h := range hits {
		if h.status == status {
			n++
		}
	}
	return n
}

// proc is one "process" of a fleet: its own go-redis client, Limiter and Transport.
type proc struct {
	name   string
	lim    *limiter.Limiter
	tr     *middleware.Transport
	client *http.Client
}

func newProc(t *testing.T, name, prefix string, ex *exchange, q limiter.Quota, opts middleware.Options, usage bool) *proc {
	t.Helper()
	// Longer socket timeouts than the harness's: 64 senders under -race on a
	// loaded two-core machine were seen to stall a read past them, and the
	// failures open the limiter's breaker. A stall delays turns; it cannot
	// let a limit overshoot.
	o := redistest.ClientOptions(redistest.Shared(t).Addr())
	o.ReadTimeout, o.WriteTimeout = 5*time.Second, 5*time.Second
	rdb := redis.NewClient(o)
	t.Cleanup(func() { _ = rdb.Close() })
	lim := limiter.New(rdb, limiter.Options{Prefix: prefix, Timeout: 5 * time.Second})
	rule := middleware.Rule{Hosts: []string{"127.0.0.1"}, PathPrefix: "/api/", Quota: q, Charges: charges(q, weightCost)}
	if usage {
		rule.Usage = []middleware.UsageParser{exchanges.BinanceUsage(map[string]string{"1s": "weight"}, nil)}
	}
	base := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(base.CloseIdleConnections)
	tr := newTransport(t, base, lim, opts, rule)
	return &proc{name: name, lim: lim, tr: tr, client: &http.Client{Transport: tr}}
}

// weightQuota is a Binance-like weight limit: w per second in clock-aligned windows.
func weightQuota(w int) limiter.Quota {
	return limiter.Quota{Name: "binance", Limits: []limiter.NamedLimit{
		{Name: "weight", Limit: limiter.Limit{Rate: w, Period: time.Second, Burst: w, Algorithm: limiter.FixedWindow}},
	}}
}

// get sends one GET as p and returns the status, draining the body.
func (p *proc) get(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-Proc", p.name)
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// expectedStop reports errors a sender may meet when its context ends: its
// turn would come after the deadline, or the context ended while it waited or
// was being answered.
func expectedStop(err error) bool {
	return errors.Is(err, middleware.ErrRateLimited) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled)
}
