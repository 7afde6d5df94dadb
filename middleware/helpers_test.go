package middleware_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
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
	return m, limiter.New(c, limiter.Options{Prefix: redistest.NewPrefix(t)})
}

// exQuota: 100 weight a minute in clock-aligned windows, 10 orders a minute (GCRA).
var exQuota = limiter.Quota{Name: "ex", Limits: []limiter.NamedLimit{
	{Name: "weight", Limit: limiter.PerMinute(100).WithAlgorithm(limiter.FixedWindow)},
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
func weightLeft(t *testing.T, lim *limiter.Limiter) limiter.QuotaResult {
	t.Helper()
	res, err := lim.AllowQuota(context.Background(), exQuota, limiter.Cost{"weight": 1})
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
