package limiter

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// A wake-up call that fails at the turn (here its reply is lost with its
// connection, every time it is sent) makes Wait give the booking back before
// it returns the error: the unit it will never send does not delay the next booking, and a
// later Cancel has nothing left to do. Redis's clock (miniredis) stands still,
// so the booking times compare exactly.
func TestWaitGivesBackOnFailedWake(t *testing.T) {
	m, c := redistest.NewMini(t)
	m.SetTime(tenPast)
	ctx := context.Background()
	if err := script.Load(ctx, c); err != nil { // no NOSCRIPT round trips through the proxy
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
	// Timeout: long enough for a loaded machine's calls (200 ms, as before,
	// once failed the Reserve); the failed wake-up ends at once, with its
	// connection, not at it.
	lim := New(rc, Options{Prefix: "wk", Timeout: 5 * time.Second})
	limit := Every(1, 200*time.Millisecond)
	if r, err := lim.Allow(ctx, Key("k", limit).Take(1)); err != nil || !r.Allowed {
		t.Fatalf("Allow: %+v %v", r, err)
	}
	rv, err := lim.Reserve(ctx, Key("k", limit).Take(1))
	if err != nil {
		t.Fatal(err)
	}
	turn := tenPast.Add(200 * time.Millisecond)
	if !rv.OK() || !rv.at().Equal(turn) {
		t.Fatalf("Reserve: %v at %v, want a booking at %v", err, rv.at(), turn)
	}
	// From now on the proxy drops the wake-up's reply (an array whose first
	// value is 2: "the booking stands", wake.lua) and closes its connection.
	// The give-back's reply (an integer) gets through, on a connection of its
	// own. (A proxy that delays every reply was tried first: the give-back
	// then had to dial, and a dial's handshake through the delay could take
	// longer than the give-back's own timeout.)
	proxy.SetDropReplies(func(b []byte) bool {
		_, rest, ok := bytes.Cut(b, []byte("\r\n"))
		return ok && b[0] == '*' && bytes.HasPrefix(rest, []byte(":2\r\n"))
	})
	if err := rv.Wait(ctx); err == nil {
		t.Fatal("Wait succeeded though its wake-up call could not")
	}
	proxy.SetDropReplies(nil)
	if n, err := rv.Cancel(ctx); n != 0 || err != nil {
		t.Fatalf("Cancel after the failed Wait gave back %d (%v): Wait should have", n, err)
	}
	next, err := New(c, Options{Prefix: "wk", Timeout: 5 * time.Second}).Reserve(ctx, Key("k", limit).Take(1))
	if err != nil {
		t.Fatal(err)
	}
	if !next.OK() || !next.at().Equal(turn) {
		t.Fatalf("next Reserve at %v (%v), want %v: the unsent unit was not given back", next.at(), err, turn)
	}
}
