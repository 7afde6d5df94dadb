package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/scripts"
)

// A wake-up call that fails at the turn (here Options.Timeout: a proxy holds
// replies back longer) makes Wait give the booking back before it returns the
// error: the unit it will never send does not delay the next booking, and a
// later Cancel has nothing left to do. Redis's clock (miniredis) stands still,
// so the booking times compare exactly.
func TestWaitGivesBackOnFailedWake(t *testing.T) {
	m, c := redistest.NewMini(t)
	m.SetTime(tenPast)
	ctx := context.Background()
	if err := scripts.Load(ctx, c); err != nil { // no NOSCRIPT round trips through the proxy
		t.Fatal(err)
	}
	proxy := redistest.NewFaultProxy(t, m.Addr())
	o := redistest.ClientOptions(proxy.Addr())
	o.MinIdleConns = 4 // the give-back finds a connection dialled before the fault
	rc := redis.NewClient(o)
	t.Cleanup(func() { _ = rc.Close() })
	if err := rc.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	lim := New(rc, Options{Prefix: "wk", Timeout: 200 * time.Millisecond})
	limit := Every(1, 200*time.Millisecond)
	if r, err := lim.Allow(ctx, "k", limit); err != nil || !r.Allowed {
		t.Fatalf("Allow: %+v %v", r, err)
	}
	rv, err := lim.Reserve(ctx, "k", limit, 1)
	turn := tenPast.Add(200 * time.Millisecond)
	if err != nil || !rv.OK() || !rv.At().Equal(turn) {
		t.Fatalf("Reserve: %v at %v, want a booking at %v", err, rv.At(), turn)
	}
	// Replies now take 400 ms: the wake-up (200 ms timeout) fails; the
	// give-back (1 s of its own, on a pooled connection) gets through.
	proxy.SetDelay(400 * time.Millisecond)
	if err := rv.Wait(ctx); err == nil {
		t.Fatal("Wait succeeded though its wake-up call could not")
	}
	proxy.SetDelay(0)
	if n, err := rv.Cancel(ctx); n != 0 || err != nil {
		t.Fatalf("Cancel after the failed Wait gave back %d (%v): Wait should have", n, err)
	}
	next, err := New(c, Options{Prefix: "wk"}).Reserve(ctx, "k", limit, 1)
	if err != nil || !next.OK() || !next.At().Equal(turn) {
		t.Fatalf("next Reserve at %v (%v), want %v: the unsent unit was not given back", next.At(), err, turn)
	}
}
