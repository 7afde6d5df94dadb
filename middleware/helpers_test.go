package middleware_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// t0 is miniredis's frozen clock: the middle of a minute, so that a fixed
// window of a minute neither starts nor ends during a test.
var t0 = time.Date(2025, 1, 15, 12, 0, 30, 0, time.UTC)

// miniLimiter is a Limiter on miniredis with its clock frozen at t0: holds and
// windows are then exact.
func miniLimiter(t *testing.T) (*miniredis.Miniredis, *limiter.Limiter) {
	t.Helper()
	m, c := redistest.NewMini(t)
	m.SetTime(t0)
	// No per-call timeout: under -race on a loaded machine a script call was
	// seen to take over the default 250 ms; nothing here tests timeouts.
	return m, limiter.New(c, limiter.Options{Prefix: redistest.NewPrefix(t), Timeout: -1})
}

// testTimeout is the limiters' Timeout in tests about holds, retries and
// clocks: under -race on a loaded machine a decision has taken past the
// default 250 ms and failed closed.
const testTimeout = 10 * time.Second

// exQuota: 100 weight a minute in clock-aligned windows, 10 orders a minute (GCRA).
var exQuota = limiter.Quota{Name: "ex", Limits: []limiter.NamedLimit{
	{Name: "weight", Limit: limiter.Limit{Rate: 100, Period: time.Minute, Burst: 100, Algorithm: limiter.FixedWindow}},
	{Name: "orders", Limit: limiter.PerMinute(10)},
}}

// server answers with h and counts the requests that reached it.
type server struct {
	*httptest.Server
	hits atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// weightLeft takes 1 weight and reports what the quota said: the units left
// after it, or the hold that denied it.
func weightLeft(t *testing.T, lim *limiter.Limiter) limiter.Result {
	t.Helper()
	res, err := lim.Allow(context.Background(), limiter.Charge{Quota: exQuota, Cost: limiter.Cost{"weight": 1}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// closeTracker is a request body that records being closed.
type closeTracker struct {
	closed atomic.Bool
}

func (c *closeTracker) Read([]byte) (int, error) { return 0, errEOF }
func (c *closeTracker) Close() error             { c.closed.Store(true); return nil }

// cmdHook is a go-redis hook that calls before and after (when set) around
// each command the client sends, pipelined or not, with the command's name: a
// test uses it to act at an exact point of a request's bookkeeping instead of
// at a guessed time. A test counting script calls loads the scripts first
// (loadScripts): on a server that has not seen them, a decision is an EVALSHA
// refused with NOSCRIPT and then an EVAL, two calls where the count wants one.
type cmdHook struct {
	before, after func(name string)
	cmd           func(redis.Cmder) // before each command, when set
}

func (h cmdHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h cmdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.cmd != nil {
			h.cmd(cmd)
		}
		h.call(h.before, cmd)
		err := next(ctx, cmd)
		h.call(h.after, cmd)
		return err
	}
}

func (h cmdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.call(h.before, cmd)
		}
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			h.call(h.after, cmd)
		}
		return err
	}
}

// loadScripts loads every script into c's server(s), so each decision after
// it is one EVALSHA.
func loadScripts(t *testing.T, c redis.Scripter) {
	t.Helper()
	if err := script.Load(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

func (h cmdHook) call(f func(string), cmd redis.Cmder) {
	if f != nil {
		f(cmd.Name())
	}
}

// runningMini is a Limiter on miniredis whose clock runs from start, as a real
// Redis's does, but from a chosen instant: before each command it is set to
// start plus the time elapsed since the call. freeze stops it at an instant.
func runningMini(t *testing.T, start time.Time) (lim *limiter.Limiter, freeze func(time.Time)) {
	t.Helper()
	m, c := redistest.NewMini(t)
	began := time.Now()
	var frozen atomic.Bool
	m.SetTime(start)
	c.AddHook(cmdHook{before: func(string) {
		if !frozen.Load() {
			m.SetTime(start.Add(time.Since(began)))
		}
	}})
	// Timeout: a decision under -race on a loaded machine once took past the
	// default 250 ms (fail closed); these tests are about Redis's clock.
	return limiter.New(c, limiter.Options{Prefix: redistest.NewPrefix(t), Timeout: 10 * time.Second}), func(at time.Time) {
		frozen.Store(true)
		m.SetTime(at)
	}
}

// charges is a Rule.Charges charging q what cost says.
func charges(q limiter.Quota, cost func(*http.Request) (limiter.Cost, error)) func(*http.Request, []byte) ([]limiter.Charge, error) {
	return func(r *http.Request, _ []byte) ([]limiter.Charge, error) {
		c, err := cost(r)
		return []limiter.Charge{{Quota: q, Cost: c}}, err
	}
}

// newTransport is middleware.NewTransport, failing the test on an error.
func newTransport(t testing.TB, next http.RoundTripper, lim *limiter.Limiter, opts middleware.Options, rules ...middleware.Rule) *middleware.Transport {
	t.Helper()
	tr, err := middleware.NewTransport(next, lim, opts, rules...)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}
