package middleware_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redquota/redquota/internal/bound"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
	"github.com/redquota/redquota/telemetry"
)

// The draft's fields as Structured Field Lists of Items (RFC 9651): a String
// name, then parameters whose values here are Integers (at most 15 digits,
// non-negative). Written out from the ABNF, independently of the package's
// own parser.
var (
	sfName    = `"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"`
	sfNonNeg  = `[0-9]{1,15}`
	policyRe  = regexp.MustCompile(`^` + sfName + `;q=` + sfNonNeg + `;w=` + sfNonNeg + `(?:, ` + sfName + `;q=` + sfNonNeg + `;w=` + sfNonNeg + `)*$`)
	currentRe = regexp.MustCompile(`^` + sfName + `;r=` + sfNonNeg + `;t=` + sfNonNeg + `(?:, ` + sfName + `;r=` + sfNonNeg + `;t=` + sfNonNeg + `)*$`)
)

func TestHandlerHeaders(t *testing.T) {
	_, lim := miniLimiter(t)
	q := limiter.Quota{Name: "api", Limits: []limiter.NamedLimit{
		{Name: "burst", Limit: limiter.Limit{Rate: 3, Period: 10 * time.Second, Burst: 3, Algorithm: limiter.FixedWindow}},
		{Name: `per "day"`, Limit: limiter.PerDay(1000)},
	}}
	h := middleware.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}), lim, func(r *http.Request) (string, error) { return r.Header.Get("X-Key"), nil }, q, telemetry.Providers{})

	do := func(key string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("X-Key", key)
		h.ServeHTTP(rec, req)
		return rec
	}
	// miniredis's clock is frozen 30 s into a minute: the 10 s window ends in 10 s.
	for i, want := range []string{`"burst";r=2;t=10, "per \"day\"";r=999;t=87`, `"burst";r=1;t=10`, `"burst";r=0;t=10`} {
		rec := do("alice")
		if rec.Code != http.StatusOK {
			t.Fatalf("request %d: %d", i, rec.Code)
		}
		pol, cur := rec.Header().Get("RateLimit-Policy"), rec.Header().Get("RateLimit")
		if !policyRe.MatchString(pol) || !currentRe.MatchString(cur) {
			t.Fatalf("request %d: fields not in the draft's syntax:\nRateLimit-Policy: %s\nRateLimit: %s", i, pol, cur)
		}
		if pol != `"burst";q=3;w=10, "per \"day\"";q=1000;w=86400` {
			t.Fatalf("RateLimit-Policy: %s", pol)
		}
		if !strings.HasPrefix(cur, want) {
			t.Fatalf("request %d: RateLimit: %s, want prefix %s", i, cur, want)
		}
		if rec.Header().Get("Retry-After") != "" {
			t.Fatalf("Retry-After on a 200")
		}
	}
	rec := do("alice")
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("4th request: %d", rec.Code)
	}
	ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if err != nil || ra != 10 {
		t.Fatalf("Retry-After %q, want 10 (the window's end)", rec.Header().Get("Retry-After"))
	}
	if cur := rec.Header().Get("RateLimit"); !currentRe.MatchString(cur) || !strings.HasPrefix(cur, `"burst";r=0;`) {
		t.Fatalf("RateLimit on the 429: %s", cur)
	}
	// Keys are counted apart, and a key too long for a quota name still works.
	if rec := do("bob"); rec.Code != http.StatusOK {
		t.Fatalf("bob: %d", rec.Code)
	}
	if rec := do(strings.Repeat("k", 2*bound.KeyLen)); rec.Code != http.StatusOK {
		t.Fatalf("long key: %d", rec.Code)
	}
}

// The client side reads what the server side writes: a Transport with
// IETFUsage in front of a Handler learns the server's count.
func TestHandlerRoundTrip(t *testing.T) {
	_, lim := miniLimiter(t)
	q := limiter.Quota{Name: "srv", Limits: []limiter.NamedLimit{{Name: "weight", Limit: limiter.Limit{Rate: 100, Period: time.Minute, Burst: 100, Algorithm: limiter.FixedWindow}}}}
	srv := httptest.NewServer(middleware.Handler(http.NotFoundHandler(), lim,
		func(*http.Request) (string, error) { return "me", nil }, q, telemetry.Providers{}))
	defer srv.Close()
	for range 5 { // the server has now counted 5
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	tr := newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 1},
		Usage: []middleware.UsageParser{middleware.IETFUsage(map[string]string{"weight": "weight"})}})
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if res := weightLeft(t, lim); res.Remaining != 100-6-1 {
		t.Fatalf("%d left, want 93: our count follows the server's 6", res.Remaining)
	}
}

func TestHandlerKeyError(t *testing.T) {
	_, lim := miniLimiter(t)
	h := middleware.Handler(http.NotFoundHandler(), lim,
		func(*http.Request) (string, error) { return "", errors.New("no API key") }, exQuota, telemetry.Providers{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("%d", rec.Code)
	}
}

// A Handler built with a nil next, limiter or keyFunc answers 500, as one
// with an invalid quota does, and serves nothing: each used to panic in
// ServeHTTP (a nil function or pointer called).
func TestHandlerNilArguments(t *testing.T) {
	_, lim := miniLimiter(t)
	key := func(*http.Request) (string, error) { return "me", nil }
	for name, h := range map[string]http.Handler{
		"nil next":    middleware.Handler(nil, lim, key, exQuota, telemetry.Providers{}),
		"nil limiter": middleware.Handler(http.NotFoundHandler(), nil, key, exQuota, telemetry.Providers{}),
		"nil keyFunc": middleware.Handler(http.NotFoundHandler(), lim, nil, exQuota, telemetry.Providers{}),
	} {
		rec := httptest.NewRecorder()
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%s: panic %v", name, p)
				}
			}()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		}()
		if rec.Code != http.StatusInternalServerError {
			t.Errorf("%s: answered %d, want 500", name, rec.Code)
		}
	}
}
