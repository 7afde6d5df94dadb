package limiter

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// deadLimiter is a FailLocal limiter whose Redis is never there: a port
// nothing listens on (the listener is closed before use), a client that
// does not retry.
func deadLimiter(t *testing.T, share float64) *Limiter {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = c.Close() })
	return New(c, Options{Prefix: "dead", Failure: FailLocal, LocalShare: share, Timeout: 5 * time.Second})
}

// Cancelling a reservation decided by the local fallback gives its local
// units back: the next reservation gets the same turn, not the one after.
func TestFailLocalCancelGivesBack(t *testing.T) {
	lim := deadLimiter(t, 0.5)
	ctx := context.Background()
	limit := Every(10, time.Hour) // local share: 5 an hour (one per 12 min), burst 5
	if r, err := lim.Allow(ctx, Key("k", limit).Take(5)); err != nil || !r.Allowed || !r.Degraded {
		t.Fatalf("local burst: %+v %v", r, err)
	}
	first, err := lim.Reserve(ctx, Key("k", limit).Take(1))
	if err != nil || !first.OK() || first.Delay() <= 0 {
		t.Fatalf("local reservation: %v", err)
	}
	if _, err := first.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	// The same turn again: about the same delay (a reservation's delay counts
	// from the end of its call, so µs apart). Had the cancelled unit been
	// kept, the turn would be one interval, 12 min, later.
	second, err := lim.Reserve(ctx, Key("k", limit).Take(1))
	if err != nil || !second.OK() || second.Delay() > first.Delay()+time.Minute {
		t.Fatalf("cancelled local turn not given back: first %v, then %v (%v)", first.Delay(), second.Delay(), err)
	}
}

// A cost the local share can never hold is a typed error saying so, at once,
// not a denial to retry after a period (nor ErrWouldExceedDeadline).
func TestFailLocalCostAboveShare(t *testing.T) {
	lim := deadLimiter(t, 0.1)
	ctx := context.Background()
	limit := Every(100, time.Minute) // local share: burst 10
	if r, err := lim.Allow(ctx, Key("k", limit).Take(10)); err != nil || !r.Allowed || !r.Degraded {
		t.Fatalf("AllowN(10) within the share: %+v %v", r, err)
	}
	for name, call := range map[string]func() error{
		"AllowN":  func() error { _, err := lim.Allow(ctx, Key("k", limit).Take(11)); return err },
		"WaitN":   func() error { return lim.Wait(ctx, Key("k", limit).Take(11)) },
		"Reserve": func() error { _, err := lim.Reserve(ctx, Key("k", limit).Take(11)); return err },
	} {
		err := call()
		if !errors.Is(err, errExceedsLocalShare) || !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s(11) with a local share of 10: %v, want errExceedsLocalShare and ErrUnavailable", name, err)
		}
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}
