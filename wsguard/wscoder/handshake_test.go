package wscoder_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/holdtest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/wsguard"
	"github.com/redquota/redquota/wsguard/wscoder"
)

// A handshake answered 429 with Retry-After holds the connection quota, in
// every process: another guard's Dial is not made during the hold, and
// Refusals sees the handshake.
func TestHandshake429HoldsConnect(t *testing.T) {
	mr := miniredis.RunT(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Retry-After", "30")
		http.Error(w, "too many connection attempts", http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	conn := limiter.Quota{Name: "conn", Limits: []limiter.NamedLimit{{Name: "c", Limit: limiter.PerSecond(100)}}}
	guard := func() (*wsguard.Guard, *limiter.Limiter, *[]int) {
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { _ = rdb.Close() })
		lim := limiter.New(rdb, limiter.Options{Timeout: -1})
		var seen []int
		g, err := wsguard.New(lim, wsguard.Options{
			Connect: []limiter.Charge{{Quota: conn, Cost: limiter.Cost{"c": 1}}},
			Refusals: func(s wsguard.Signal) []wsguard.Refusal {
				if s.Handshake != nil {
					seen = append(seen, s.Handshake.StatusCode)
				}
				return nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return g, lim, &seen
	}
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	g1, lim, seen := guard()
	_, err := g1.Dial(context.Background(), wscoder.Dial(url, nil))
	var he *wsguard.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("dial error %v, want a HandshakeError with 429", err)
	}
	if len(*seen) != 1 || (*seen)[0] != http.StatusTooManyRequests {
		t.Errorf("Refusals saw handshakes %v, want [429]", *seen)
	}
	held, err := holdtest.Left(context.Background(), lim, conn.Name, "")
	if err != nil || held < 29*time.Second || held > 30*time.Second {
		t.Errorf("connection quota held %s (%v), want the Retry-After's 30 s", held, err)
	}
	g2, _, _ := guard()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := g2.Dial(ctx, wscoder.Dial(url, nil)); !errors.Is(err, limiter.ErrWouldExceedDeadline) {
		t.Errorf("dial during the hold: %v, want ErrWouldExceedDeadline", err)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("the server saw %d handshakes, want 1 (none during the hold)", n)
	}
}
