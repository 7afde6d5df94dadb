package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/bound"
	"github.com/redquota/redquota/internal/holdtest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

var errEOF = io.EOF

// errorLog collects what a Transport passes to Options.OnError.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) add(_ *http.Request, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

func (l *errorLog) bad() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.errs {
		if errors.Is(e, middleware.ErrBadHeader) {
			n++
		}
	}
	return n
}

// What each answer's status and Retry-After hold the quota for, including
// malformed, negative and absurd values. miniredis's clock is frozen, so the
// hold the next decision meets is exactly the hold placed.
func TestStatusHolds(t *testing.T) {
	date := t0.Format(http.TimeFormat)
	for _, tc := range []struct {
		name        string
		status      int
		retryAfter  string
		date        string
		opts        middleware.Options
		hold        time.Duration // 0: none
		badReported bool
	}{
		{name: "429 seconds", status: 429, retryAfter: "2", hold: 2 * time.Second},
		{name: "429 zero: under a second, still a refusal", status: 429, retryAfter: "0", hold: time.Second},
		{name: "429 zero, fallback option", status: 429, retryAfter: "0", opts: middleware.Options{FallbackHold: 5 * time.Second}, hold: 5 * time.Second},
		{name: "429 missing", status: 429, hold: time.Second},
		{name: "429 missing, fallback option", status: 429, opts: middleware.Options{FallbackHold: 5 * time.Second}, hold: 5 * time.Second},
		{name: "429 negative", status: 429, retryAfter: "-5", hold: time.Second, badReported: true},
		{name: "429 fraction", status: 429, retryAfter: "1.5", hold: time.Second, badReported: true},
		{name: "429 garbage", status: 429, retryAfter: "soon", hold: time.Second, badReported: true},
		{name: "429 huge, capped at bound.Hold", status: 429, retryAfter: "99999999999999999999999", hold: bound.Hold},
		{name: "429 huge, capped by option", status: 429, retryAfter: "99999", opts: middleware.Options{MaxHold: 10 * time.Minute}, hold: 10 * time.Minute},
		{name: "429 date from Date", status: 429, retryAfter: t0.Add(90 * time.Second).Format(http.TimeFormat), date: date, hold: 90 * time.Second},
		{name: "429 date past", status: 429, retryAfter: t0.Add(-time.Minute).Format(http.TimeFormat), date: date, hold: time.Second},
		{name: "418 missing", status: 418, hold: 2 * time.Minute},
		{name: "418 garbage", status: 418, retryAfter: "a while", hold: 2 * time.Minute, badReported: true},
		{name: "418 seconds", status: 418, retryAfter: "600", hold: 10 * time.Minute},
		{name: "418 zero: the ban ends within the second", status: 418, retryAfter: "0", hold: time.Second},
		{name: "503 missing", status: 503},
		{name: "503 seconds", status: 503, retryAfter: "3", hold: 3 * time.Second},
		{name: "503 zero: now", status: 503, retryAfter: "0"},
		{name: "503 garbage", status: 503, retryAfter: "x", hold: time.Second, badReported: true},
		{name: "200 ignores Retry-After", status: 200, retryAfter: "5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			statusHold(t, tc.status, tc.retryAfter, tc.date, tc.opts, tc.hold, tc.badReported)
		})
	}
}

// The Transport holds a 429 or 418 as wsguard holds a refused handshake
// (its TestHandshakeHoldsAsMiddleware runs the same table): one rule,
// bound.RefusalHold.
func TestRefusalsHoldAsWsguard(t *testing.T) {
	for _, rf := range holdtest.Refusals() {
		t.Run(fmt.Sprintf("%d %q", rf.Status, rf.RetryAfter), func(t *testing.T) {
			statusHold(t, rf.Status, rf.RetryAfter, rf.Date, middleware.Options{}, rf.Hold, rf.Unreadable)
		})
	}
}

// statusHold checks that an answer with status, Retry-After retryAfter and
// Date date (each when not "") holds the request's quota for hold exactly
// (0: not at all), on miniredis's frozen clock, and that a malformed header
// was reported exactly when badReported.
func statusHold(t *testing.T, status int, retryAfter, date string, opts middleware.Options, hold time.Duration, badReported bool) {
	t.Helper()
	_, lim := miniLimiter(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		if date != "" {
			w.Header()["Date"] = []string{date}
		}
		w.WriteHeader(status)
	})
	var log errorLog
	opts.OnError = log.add
	c := &http.Client{Transport: newTransport(t, nil, lim, opts,
		middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 1}})}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("status %d", resp.StatusCode)
	}
	res := weightLeft(t, lim)
	switch {
	case hold == 0 && !res.Allowed:
		t.Fatalf("held: %+v", res)
	case hold > 0 && (res.Allowed || res.DeniedBy != limiter.HoldName || res.RetryAfter != hold):
		t.Fatalf("want a hold of %s, got allowed=%v by %q retry after %s", hold, res.Allowed, res.DeniedBy, res.RetryAfter)
	}
	if got := log.bad() > 0; got != badReported {
		t.Fatalf("ErrBadHeader reported: %v, want %v (%v)", got, badReported, log.errs)
	}
}

// Absurd and malformed usage values: garbage is ignored and reported; a valid
// number beyond the limit fills the limit; a count below ours changes nothing.
func TestUsageValues(t *testing.T) {
	binance := exchanges.BinanceUsage(map[string]string{"1m": "weight"}, nil)
	ietf := middleware.IETFUsage(map[string]string{"w": "weight"})
	xrl := middleware.XRateLimit("weight")
	for _, tc := range []struct {
		name   string
		parser middleware.UsageParser
		header map[string]string
		left   int // weight left after the request (1) and weightLeft's probe (1); -1: none, and held
		bad    bool
	}{
		{"binance raises", binance, map[string]string{"X-MBX-USED-WEIGHT-1M": "50"}, 49, false},
		{"binance lower than ours", binance, map[string]string{"X-MBX-USED-WEIGHT-1M": "0"}, 98, false},
		{"binance lower-case unit and padding", binance, map[string]string{"x-mbx-used-weight-01m": " 40 "}, 59, false},
		{"binance other interval ignored", binance, map[string]string{"X-MBX-USED-WEIGHT-1H": "90"}, 98, false},
		{"binance huge fills", binance, map[string]string{"X-MBX-USED-WEIGHT-1M": "999999999999999999999999999"}, 0, false},
		{"binance negative", binance, map[string]string{"X-MBX-USED-WEIGHT-1M": "-3"}, 98, true},
		{"binance garbage", binance, map[string]string{"X-MBX-USED-WEIGHT-1M": "12abc"}, 98, true},
		{"binance exponent", binance, map[string]string{"X-MBX-USED-WEIGHT-1M": "1e3"}, 98, true},
		{"ietf with policy", ietf, map[string]string{"RateLimit": `"w";r=30;t=20`, "RateLimit-Policy": `"w";q=100;w=60`}, 29, false},
		{"ietf token name, no policy", ietf, map[string]string{"RateLimit": `w;r=70`}, 69, false},
		{"ietf exhausted holds", ietf, map[string]string{"RateLimit": `"w";r=0;t=7`}, -1, false},
		// t seconds beyond a Duration saturate (the hold is then MaxHold), not wrap.
		{"ietf t just past a Duration holds", ietf, map[string]string{"RateLimit": `"w";r=0;t=9223372037`}, -1, false},
		{"ietf t of 15 digits holds", ietf, map[string]string{"RateLimit": `"w";r=0;t=999999999999999`}, -1, false},
		{"ietf 16 digits: field ignored", ietf, map[string]string{"RateLimit": `"w";r=1000000000000000`}, 98, true},
		{"ietf negative r", ietf, map[string]string{"RateLimit": `"w";r=-1`}, 98, true},
		{"ietf not a list", ietf, map[string]string{"RateLimit": `limit=100, remaining=5,`}, 98, true},
		{"ietf other policy ignored", ietf, map[string]string{"RateLimit": `"other";r=0;t=9`}, 98, false},
		{"x-ratelimit", xrl, map[string]string{"X-RateLimit-Remaining": "25", "X-RateLimit-Limit": "100"}, 24, false},
		{"x-ratelimit exhausted holds", xrl, map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "12"}, -1, false},
		{"x-ratelimit huge remaining", xrl, map[string]string{"X-RateLimit-Remaining": "99999999999999999999999"}, 98, false},
		{"x-ratelimit garbage", xrl, map[string]string{"X-RateLimit-Remaining": "lots"}, 98, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, lim := miniLimiter(t)
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header()[k] = []string{v} // as sent, not canonicalised
				}
			})
			var log errorLog
			tr := newTransport(t, nil, lim, middleware.Options{OnError: log.add},
				middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 1}, Usage: []middleware.UsageParser{tc.parser}})
			resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			res := weightLeft(t, lim)
			if tc.left < 0 {
				// Nothing left: the count is full and the quota held (the
				// full window, 30 s to go, outlasts the hold and denies first).
				if res.Allowed || tr.Stats().Holds != 1 {
					t.Fatalf("want denied and held, got %+v, %+v", res, tr.Stats())
				}
			} else if !res.Allowed && tc.left > 0 || res.Allowed && res.Remaining != tc.left {
				t.Fatalf("allowed %v, %d left, want %d", res.Allowed, res.Remaining, tc.left)
			}
			if got := log.bad() > 0; got != tc.bad {
				t.Fatalf("ErrBadHeader reported: %v, want %v (%v)", got, tc.bad, log.errs)
			}
		})
	}
}

// Rules naming a limit their quota lacks, or otherwise unusable, make
// NewTransport fail with an error naming the rule; so does an unusable
// Default rule, and a nil limiter.
func TestInvalidRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule middleware.Rule
		is   error
	}{
		{"cost names unknown limit", middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"wieght": 1}}, limiter.ErrInvalid},
		{"ietf names unknown limit", middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 1},
			Usage: []middleware.UsageParser{middleware.IETFUsage(map[string]string{"p": "nope"})}}, limiter.ErrInvalid},
		{"negative cost", middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": -1}}, limiter.ErrInvalid},
		{"cost beyond the limit", middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 101}}, limiter.ErrInvalid},
		{"no cost", middleware.Rule{Quota: exQuota}, middleware.ErrInvalid},
		{"empty quota", middleware.Rule{Quota: limiter.Quota{Name: "q"}, Cost: limiter.Cost{"weight": 1}}, limiter.ErrInvalid},
		{"host with a path", middleware.Rule{Hosts: []string{"127.0.0.1", "a.com/x"}, Quota: exQuota, Cost: limiter.Cost{"weight": 1}}, middleware.ErrInvalid},
		{"peek beyond 64 KiB", middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 1}, PeekBody: 64<<10 + 1}, middleware.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, lim := miniLimiter(t)
			valid := middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 1}}
			tr, err := middleware.NewTransport(nil, lim, middleware.Options{}, valid, tc.rule)
			if tr != nil || !errors.Is(err, middleware.ErrInvalid) || !errors.Is(err, tc.is) {
				t.Fatalf("NewTransport = %v, %v; want nil and ErrInvalid and %v", tr, err, tc.is)
			}
			if !strings.Contains(err.Error(), "rule 1 (") || strings.Contains(err.Error(), "rule 0") {
				t.Fatalf("error %q does not name rule 1 alone", err)
			}
			def := tc.rule
			tr, err = middleware.NewTransport(nil, lim, middleware.Options{Default: &def}, valid)
			if tr != nil || !errors.Is(err, tc.is) || !strings.Contains(err.Error(), "default rule") {
				t.Fatalf("invalid Default: NewTransport = %v, %v", tr, err)
			}
		})
	}
	if _, err := middleware.NewTransport(nil, nil, middleware.Options{}); !errors.Is(err, middleware.ErrInvalid) {
		t.Fatalf("nil limiter: %v", err)
	}
}

// A Charges function's bad answers fail the request, unsent, with errors the
// caller can branch on.
func TestChargesErrors(t *testing.T) {
	errMine := errors.New("no weight for this endpoint")
	for _, tc := range []struct {
		name string
		cost limiter.Cost
		err  error
		is   error
	}{
		{"negative", limiter.Cost{"weight": -5}, nil, limiter.ErrInvalid},
		{"nothing charged", limiter.Cost{}, nil, limiter.ErrInvalid},
		{"unknown limit", limiter.Cost{"credits": 1}, nil, limiter.ErrInvalid},
		{"beyond the limit", limiter.Cost{"weight": 500}, nil, limiter.ErrInvalid},
		{"own error", nil, errMine, errMine},
		{"no charge", nil, nil, limiter.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, lim := miniLimiter(t)
			srv := newServer(t, func(http.ResponseWriter, *http.Request) {})
			tr := newTransport(t, nil, lim, middleware.Options{}, middleware.Rule{
				Charges: func(*http.Request, []byte) ([]limiter.Charge, error) {
					if tc.cost == nil {
						return nil, tc.err
					}
					return []limiter.Charge{{Quota: exQuota, Cost: tc.cost}}, tc.err
				}})
			body := &closeTracker{}
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL, body)
			_, err := (&http.Client{Transport: tr}).Do(req)
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %v, want %v", err, tc.is)
			}
			if srv.hits.Load() != 0 || !body.closed.Load() {
				t.Fatalf("sent %d, body closed %v", srv.hits.Load(), body.closed.Load())
			}
			if lim.Stats().Allowed != 0 {
				t.Fatal("something was charged")
			}
		})
	}
}
