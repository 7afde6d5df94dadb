package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/holdtest"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

var weight1 = limiter.Cost{"weight": 1}

func TestUnmatchedPassesThrough(t *testing.T) {
	_, lim := miniLimiter(t)
	srv := newServer(t, func(http.ResponseWriter, *http.Request) {})
	c := &http.Client{Transport: newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{Hosts: []string{"api.binance.com"}, Quota: exQuota, Cost: weight1})}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s := lim.Stats(); s.Allowed+s.Denied != 0 || srv.hits.Load() != 1 {
		t.Fatalf("limiter asked %+v, server hits %d", s, srv.hits.Load())
	}
	// With a default rule, the same request is charged.
	c.Transport = newTransport(t, nil, lim, middleware.Options{Default: &middleware.Rule{Quota: exQuota, Cost: weight1}},
		middleware.Rule{Hosts: []string{"api.binance.com"}, Quota: exQuota, Cost: weight1})
	resp, err = c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if lim.Stats().Allowed != 1 {
		t.Fatalf("default rule did not charge: %+v", lim.Stats())
	}
}

func TestFailFast(t *testing.T) {
	_, lim := miniLimiter(t)
	srv := newServer(t, func(http.ResponseWriter, *http.Request) {})
	c := &http.Client{Transport: newTransport(t, nil, lim, middleware.Options{FailFast: true},
		middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 100}})}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, err = c.Get(srv.URL)
	var le *middleware.LimitedError
	if !errors.Is(err, middleware.ErrRateLimited) || !errors.As(err, &le) {
		t.Fatalf("second request: %v", err)
	}
	// The frozen clock is 30 s into the minute: the window ends in 30 s.
	if le.RetryAfter != 30*time.Second || le.DeniedBy != "weight" || le.Quota != "ex" {
		t.Fatalf("%+v", le)
	}
	if srv.hits.Load() != 1 {
		t.Fatalf("%d requests reached the server", srv.hits.Load())
	}
}

// http.Client.Timeout puts a deadline on the request's context: a turn that
// would come after it fails at once, typed, and nothing is sent. (Had it
// waited for the timeout instead, the error would be the client's timeout,
// not ErrWouldExceedDeadline.)
func TestClientTimeout(t *testing.T) {
	_, lim := miniLimiter(t)
	srv := newServer(t, func(http.ResponseWriter, *http.Request) {})
	c := &http.Client{Timeout: 5 * time.Second, Transport: newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 60}})}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, err = c.Get(srv.URL) // the next 60 fit in 30 s, after the 5 s timeout
	var le *middleware.LimitedError
	if !errors.Is(err, limiter.ErrWouldExceedDeadline) || !errors.As(err, &le) || le.RetryAfter != 30*time.Second {
		t.Fatalf("%v", err)
	}
	if srv.hits.Load() != 1 {
		t.Fatalf("%d requests reached the server", srv.hits.Load())
	}
}

func TestCancelledAndRedisDown(t *testing.T) {
	m, lim := miniLimiter(t)
	srv := newServer(t, func(http.ResponseWriter, *http.Request) {})
	c := &http.Client{Transport: newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{Quota: exQuota, Cost: weight1})}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	if _, err := c.Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	m.Close()
	if _, err := c.Get(srv.URL); !errors.Is(err, limiter.ErrUnavailable) {
		t.Fatalf("redis down, fail closed: %v", err)
	}
	if srv.hits.Load() != 0 {
		t.Fatalf("%d requests reached the server", srv.hits.Load())
	}
}

// A POST (an order) answered 429 is never sent again on its own, whatever
// MaxRetries says; the caller gets the 429 with its body.
func TestNoResendOfNonIdempotent(t *testing.T) {
	_, lim := miniLimiter(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, "slow down")
	})
	c := &http.Client{Transport: newTransport(t, nil, lim, middleware.Options{MaxRetries: 3},
		middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"orders": 1}})}
	resp, err := c.Post(srv.URL+"/api/v3/order", "text/plain", strings.NewReader("buy"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || string(b) != "slow down" || srv.hits.Load() != 1 {
		t.Fatalf("status %d body %q hits %d", resp.StatusCode, b, srv.hits.Load())
	}
}

// An idempotent request answered 429 with Retry-After: 1 is sent again after
// the hold (on real Redis, whose clock runs), and the caller gets the answer
// to the retry.
func TestRetryAfterHold(t *testing.T) {
	lim := limiter.New(redistest.NewReal(t), limiter.Options{Prefix: redistest.NewPrefix(t), Timeout: testTimeout})
	var mu sync.Mutex
	var at []time.Time
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		at = append(at, time.Now())
		if len(at) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, "slow down")
		}
	})
	tr := newTransport(t, nil, lim, middleware.Options{MaxRetries: 2, RetryBackoff: time.Millisecond},
		middleware.Rule{Quota: exQuota, Cost: weight1})
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(at) != 2 || tr.Stats().Retries != 1 {
		t.Fatalf("status %d after %d requests, %+v", resp.StatusCode, len(at), tr.Stats())
	}
	// The hold was written after the 429 left the server, on this machine's
	// clock, so the retry cannot arrive less than 1 s after the first.
	if d := at[1].Sub(at[0]); d < time.Second {
		t.Fatalf("retried %v after the 429, inside its 1 s hold", d)
	}
}

// recorder is a fake next RoundTripper: it answers from a script, records the
// bodies it was sent, and tracks the bodies of its answers.
type recorder struct {
	mu       sync.Mutex
	statuses []int
	sent     []string
	answers  []*trackedBody
}

type trackedBody struct {
	r      io.Reader
	read   atomic.Bool // read to EOF
	closed atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.read.Store(true)
	}
	return n, err
}
func (b *trackedBody) Close() error { b.closed.Store(true); return nil }

func (rc *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var sent []byte
	if req.Body != nil {
		sent, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	rc.sent = append(rc.sent, string(sent))
	st := rc.statuses[min(len(rc.sent)-1, len(rc.statuses)-1)]
	body := &trackedBody{r: strings.NewReader(strings.Repeat("x", 1000))}
	rc.answers = append(rc.answers, body)
	return &http.Response{StatusCode: st, Header: http.Header{}, Body: body, Request: req}, nil
}

// A retried request carries its body again (GetBody), the caller's request is
// left as it was, and the answer thrown away is read out and closed.
func TestRetryRewindsAndDiscards(t *testing.T) {
	_, lim := miniLimiter(t)
	rc := &recorder{statuses: []int{http.StatusServiceUnavailable, http.StatusOK}}
	tr := newTransport(t, rc, lim, middleware.Options{MaxRetries: 1, RetryBackoff: time.Millisecond},
		middleware.Rule{Quota: exQuota, Cost: weight1})
	req, _ := http.NewRequest(http.MethodPost, "http://ex.test/api/v3/order", bytes.NewReader([]byte("order-1")))
	req.Header.Set("Idempotency-Key", "k1")
	body, hdr, url := req.Body, req.Header.Clone(), req.URL.String()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || len(rc.sent) != 2 || rc.sent[0] != "order-1" || rc.sent[1] != "order-1" {
		t.Fatalf("status %d, bodies sent %q", resp.StatusCode, rc.sent)
	}
	if a := rc.answers[0]; !a.read.Load() || !a.closed.Load() {
		t.Fatalf("discarded answer: read %v closed %v", a.read.Load(), a.closed.Load())
	}
	if rc.answers[1].closed.Load() {
		t.Fatal("the answer handed to the caller was closed")
	}
	if req.Body != body || req.URL.String() != url || len(req.Header) != len(hdr) || req.Header.Get("Idempotency-Key") != "k1" {
		t.Fatal("the caller's request was modified")
	}
	if left := weightLeft(t, lim).Remaining; left != 100-2-1 {
		t.Fatalf("%d weight left: each send is charged", left)
	}
}

// Each hop of a redirect is a request to the server, and is charged.
func TestRedirectChargesEachHop(t *testing.T) {
	_, lim := miniLimiter(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "/new", http.StatusFound)
		}
	})
	c := &http.Client{Transport: newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 3}})}
	resp, err := c.Get(srv.URL + "/old")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if left := weightLeft(t, lim).Remaining; resp.Request.URL.Path != "/new" || left != 100-6-1 {
		t.Fatalf("ended at %s with %d weight left", resp.Request.URL.Path, left)
	}
}

// Over HTTP/2 (TLS): requests are charged and usage headers (lower-case on
// the wire) are learnt.
func TestHTTP2(t *testing.T) {
	_, lim := miniLimiter(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-MBX-USED-WEIGHT-1M", "50")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	c := &http.Client{Transport: newTransport(t, srv.Client().Transport, lim, middleware.Options{}, middleware.Rule{Quota: exQuota, Cost: weight1,
		Usage: []middleware.UsageParser{exchanges.BinanceUsage(map[string]string{"1M": "weight"}, nil)}})}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s", resp.Proto)
	}
	if left := weightLeft(t, lim).Remaining; left != 100-50-1 {
		t.Fatalf("%d weight left, want 49", left)
	}
}

// A request never reaches the server during a hold placed while it waited
// for its turn: just before each of its wake-up calls, another process places
// a fresh hold, six times, so each wake-up finds one and books again past it
// (limiter.Reservation.Wait). The server asks Redis at arrival whether the
// quota is held.
func TestNeverSentDuringHold(t *testing.T) {
	c := redistest.NewReal(t)
	prefix := redistest.NewPrefix(t)
	other := limiter.New(redistest.NewReal(t), limiter.Options{Prefix: prefix, Timeout: testTimeout})
	ctx := context.Background()
	var calls, holds atomic.Int64 // script calls made; holds still to place
	loadScripts(t, c)
	c.AddHook(cmdHook{before: func(name string) {
		if (name == "evalsha" || name == "eval" || name == "fcall") && calls.Add(1) > 1 && holds.Add(-1) >= 0 { // not before the booking
			if _, err := other.Hold(ctx, exQuota, 50*time.Millisecond, ""); err != nil {
				t.Error(err)
			}
		}
	}})
	lim := limiter.New(c, limiter.Options{Prefix: prefix, Timeout: testTimeout})
	var heldAtServer atomic.Int64
	srv := newServer(t, func(http.ResponseWriter, *http.Request) {
		if h, err := holdtest.Left(ctx, other, exQuota.Name, ""); err != nil || h > 0 {
			heldAtServer.Add(1)
		}
	})
	tr := newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{Quota: exQuota, Cost: weight1})

	holds.Store(6)
	if _, err := other.Hold(ctx, exQuota, 50*time.Millisecond, ""); err != nil { // the first turn is booked ahead
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if srv.hits.Load() != 1 || heldAtServer.Load() != 0 || holds.Load() >= 0 {
		t.Fatalf("%d requests reached the server, %d during a hold; %d holds left to place", srv.hits.Load(), heldAtServer.Load(), holds.Load())
	}

	// A hold that outlasts the deadline: the booking past it fails at once.
	if _, err := other.Hold(ctx, exQuota, 2*time.Second, ""); err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(dctx, http.MethodGet, srv.URL, nil)
	_, err = tr.RoundTrip(req)
	var le *middleware.LimitedError
	if !errors.As(err, &le) || !errors.Is(err, middleware.ErrRateLimited) || le.DeniedBy != limiter.HoldName {
		t.Fatalf("err %v", err)
	}
	if srv.hits.Load() != 1 || heldAtServer.Load() != 0 {
		t.Fatalf("%d requests reached the server, %d during a hold", srv.hits.Load(), heldAtServer.Load())
	}
}

// A retry is booked after its backoff and does not go out during a hold
// placed while the first attempt was out or backing off (here: by another
// process right after the first attempt was booked). The hold outlasts the
// request's deadline, so the caller gets the first answer.
func TestRetryBackoffHonoursHold(t *testing.T) {
	c := redistest.NewReal(t)
	prefix := redistest.NewPrefix(t)
	other := limiter.New(redistest.NewReal(t), limiter.Options{Prefix: prefix, Timeout: testTimeout})
	var evals atomic.Int64
	loadScripts(t, c)
	c.AddHook(cmdHook{after: func(name string) {
		if (name == "evalsha" || name == "eval" || name == "fcall") && evals.Add(1) == 1 { // the first attempt's booking
			if _, err := other.Hold(context.Background(), exQuota, 30*time.Second, ""); err != nil {
				t.Error(err)
			}
		}
	}})
	lim := limiter.New(c, limiter.Options{Prefix: prefix, Timeout: testTimeout})
	srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable) // no Retry-After: no hold of its own
	})
	tr := newTransport(t, nil, lim, middleware.Options{MaxRetries: 1, RetryBackoff: 20 * time.Millisecond},
		middleware.Rule{Quota: exQuota, Cost: weight1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || srv.hits.Load() != 1 {
		t.Fatalf("status %d, %d requests reached the server; %+v", resp.StatusCode, srv.hits.Load(), tr.Stats())
	}
}

// A next RoundTripper may answer with a nil Body (http.Client tolerates it): a
// retry after such an answer does not panic, and the caller gets the last answer.
func TestRetryNilBody(t *testing.T) {
	_, lim := miniLimiter(t)
	var sent atomic.Int64
	next := rtFunc(func(*http.Request) (*http.Response, error) {
		sent.Add(1)
		// A 503 without Retry-After holds nothing (a 429 would hold at least
		// FallbackHold, which miniredis's frozen clock never ends).
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{}}, nil
	})
	tr := newTransport(t, next, lim, middleware.Options{MaxRetries: 1, RetryBackoff: time.Millisecond},
		middleware.Rule{Quota: exQuota, Cost: weight1})
	req, _ := http.NewRequest(http.MethodGet, "http://example.invalid/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || sent.Load() != 2 {
		t.Fatalf("status %d after %d requests", resp.StatusCode, sent.Load())
	}
	if resp.Body != nil {
		resp.Body.Close()
	}
}

// rtFunc is a RoundTripper made of a function.
type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// The window guard is the limiter's, on Redis's clock, whatever the local one
// says: Redis is a second before a minute's end, so a request under a 2 s
// guard is booked at the next minute's start and charged there (waiting for
// it), or, with FailFast, refused with the wait until then. (Redis's clock
// runs from the test's start: a second leaves a loaded machine time to get to
// the decision before the minute ends; 100 ms once did not.)
func TestWindowGuardRedisClock(t *testing.T) {
	for _, failFast := range []bool{false, true} {
		t.Run(fmt.Sprintf("FailFast=%v", failFast), func(t *testing.T) {
			minute := time.Date(2025, 1, 15, 12, 1, 0, 0, time.UTC)
			lim, freeze := runningMini(t, minute.Add(-time.Second))
			srv := newServer(t, func(http.ResponseWriter, *http.Request) {})
			tr := newTransport(t, nil, lim, middleware.Options{WindowGuard: 2 * time.Second, FailFast: failFast},
				middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 10}})
			resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
			if failFast {
				var le *middleware.LimitedError
				if !errors.As(err, &le) || le.RetryAfter <= 0 || le.RetryAfter > time.Second || srv.hits.Load() != 0 {
					t.Fatalf("FailFast within the guard: %v, %d sent", err, srv.hits.Load())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			freeze(minute.Add(time.Second))
			if res := weightLeft(t, lim); !res.Allowed || res.Remaining != 89 {
				t.Fatalf("next minute: allowed %v, %d left, want 89 (10 charged)", res.Allowed, res.Remaining)
			}
		})
	}
}

// A usage count is synced into the window the request was charged in, and
// only while Redis is still in it: Redis's clock runs from before a minute's
// end and the answer comes 200 ms later, in Redis's next minute (whatever the
// local clock says, and whatever the answer's Date says), or at once.
func TestSyncRedisWindow(t *testing.T) {
	minute := time.Date(2025, 1, 15, 12, 1, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		start time.Time
		delay time.Duration
		left  int // weight left after weightLeft's probe, at start+1s
	}{
		{"answered in the next minute", minute.Add(-100 * time.Millisecond), 200 * time.Millisecond, 99},
		{"answered in the same minute", minute.Add(-30 * time.Second), 0, 49},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim, freeze := runningMini(t, tc.start)
			srv := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
				time.Sleep(tc.delay) // a lower bound is all the test needs
				w.Header().Set("Date", minute.Format(http.TimeFormat))
				w.Header().Set("X-MBX-USED-WEIGHT-1M", "50")
			})
			tr := newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{Quota: exQuota, Cost: weight1,
				Usage: []middleware.UsageParser{exchanges.BinanceUsage(map[string]string{"1m": "weight"}, nil)}})
			resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			freeze(tc.start.Add(time.Second))
			if res := weightLeft(t, lim); res.Remaining != tc.left {
				t.Fatalf("%d left, want %d; %+v", res.Remaining, tc.left, tr.Stats())
			}
		})
	}
}

// A hold the Transport places records its cause, for the operator who finds
// the fleet held at 3 a.m. (Inspect, redquota status): the status and the
// host that answered it. It recorded nothing before ("reason: none
// recorded").
func TestHoldRecordsItsCause(t *testing.T) {
	ctx := context.Background()
	lim := limiter.New(redistest.NewReal(t), limiter.Options{Prefix: redistest.NewPrefix(t), Timeout: testTimeout})
	status := http.StatusTooManyRequests
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(status)
	})
	tr := newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{Quota: exQuota, Cost: weight1})
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, s := range []int{http.StatusTooManyRequests, http.StatusTeapot} {
		status = s
		if s == http.StatusTeapot {
			_, _ = lim.Hold(ctx, exQuota, 0, "") // release: a hold only grows
		}
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		st, err := lim.Inspect(ctx, exQuota.Name)
		if err != nil || len(st) != 1 {
			t.Fatalf("Inspect: %+v %v", st, err)
		}
		if want := fmt.Sprintf("%d from %s", s, host); st[0].Hold <= 0 || st[0].HoldReason != want {
			t.Fatalf("after a %d: hold %v reason %q, want %q", s, st[0].Hold, st[0].HoldReason, want)
		}
	}
}
