package limiter

// A Sync that a pending booking made a no-op is not undone by that
// booking's Cancel: Cancel restores only the state it wrote, and sync.lua
// marks (or, for GCRA, moves by 1 µs) a state it found covered by a charge
// still to come. Each case overshot before, with the server's count lost.

import (
	"context"
	"testing"
	"time"

	"github.com/redquota/redquota/internal/redistest"
)

// Server-reported usage (Sync) that arrives while a reservation sits in a later
// window is dropped (sync.lua: sw > w), and Cancel then restores the pre-booking
// count: the current window reopens below what the server counted.
func TestSyncThenCancelOvershoot(t *testing.T) {
	m, c := redistest.NewMini(t)
	at := time.Date(2024, 3, 1, 10, 10, 30, 0, time.UTC)
	m.SetTime(at)
	lim := New(c, Options{Prefix: "sc"})
	ctx := context.Background()
	q := Quota{Name: "q", Limits: []NamedLimit{
		{"orders", Every(1, 40*time.Second)},
		{"weight", Every(10, time.Minute).WithAlgorithm(FixedWindow)},
	}}
	if r, err := lim.AllowQuota(ctx, q, Cost{"orders": 1, "weight": 1}); err != nil || !r.Allowed {
		t.Fatalf("first order: %+v %v", r, err)
	}
	rv, err := lim.ReserveQuota(ctx, q, Cost{"orders": 1, "weight": 1})
	if err != nil || !rv.OK() {
		t.Fatalf("reserve: %v", err)
	}
	t.Logf("reservation at %v (delay %v)", rv.At().UTC(), rv.Delay())
	raised, err := lim.Sync(ctx, q, "weight", 10) // server: weight 10/10 used this minute
	t.Logf("Sync(weight=10) raised=%v err=%v", raised, err)
	if err := rv.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := lim.AllowQuota(ctx, q, Cost{"weight": 9})
	t.Logf("after cancel, AllowQuota(weight 9) at 10:10:30: allowed=%v err=%v", r.Allowed, err)
	if r.Allowed {
		t.Fatalf("overshoot: server counted 10 of 10 this minute, we granted 9 more")
	}
}

// Same, single fixed window limit, reservation pushed only by its own fullness.
func TestSyncThenCancelSingle(t *testing.T) {
	m, c := redistest.NewMini(t)
	at := time.Date(2024, 3, 1, 10, 10, 30, 0, time.UTC)
	m.SetTime(at)
	lim := New(c, Options{Prefix: "sd"})
	ctx := context.Background()
	limit := Every(10, time.Minute).WithAlgorithm(FixedWindow)
	q := Quota{Name: "k", Limits: []NamedLimit{{"w", limit}}}
	if r, err := lim.AllowQuota(ctx, q, Cost{"w": 5}); err != nil || !r.Allowed {
		t.Fatalf("%+v %v", r, err)
	}
	rv, err := lim.ReserveQuota(ctx, q, Cost{"w": 6})
	if err != nil || !rv.OK() {
		t.Fatalf("reserve: %v", err)
	}
	raised, err := lim.Sync(ctx, q, "w", 10)
	t.Logf("reservation at %v; Sync(10) raised=%v err=%v", rv.At().UTC(), raised, err)
	_ = rv.Cancel(ctx)
	r, _ := lim.AllowQuota(ctx, q, Cost{"w": 5})
	if r.Allowed {
		t.Fatalf("overshoot: server counted 10 of 10, granted 5 more after Cancel")
	}
}

// GCRA in a quota: a reservation whose time the window limit set pushes the GCRA
// tat far ahead; a Sync arriving meanwhile is a no-op; Cancel restores the old tat.
func TestSyncThenCancelGCRA(t *testing.T) {
	m, c := redistest.NewMini(t)
	at := time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC)
	m.SetTime(at)
	lim := New(c, Options{Prefix: "sg"})
	ctx := context.Background()
	q := Quota{Name: "q", Limits: []NamedLimit{
		{"a", PerSecond(10)},
		{"b", Every(5, time.Hour).WithAlgorithm(FixedWindow)},
	}}
	if r, err := lim.AllowQuota(ctx, q, Cost{"b": 5}); err != nil || !r.Allowed {
		t.Fatalf("%+v %v", r, err)
	}
	rv, err := lim.ReserveQuota(ctx, q, Cost{"a": 1, "b": 1})
	if err != nil || !rv.OK() {
		t.Fatal(err)
	}
	raised, err := lim.Sync(ctx, q, "a", 10)
	t.Logf("Sync(a=10) raised=%v %v", raised, err)
	_ = rv.Cancel(ctx)
	r, _ := lim.AllowQuota(ctx, q, Cost{"a": 5})
	if r.Allowed {
		t.Fatalf("overshoot: server said a is 10/10 used, granted 5 more after Cancel")
	}
}

// Same window: reservation later in the current window (pushed by GCRA); the
// Sync is covered by the booked count so it is a no-op; Cancel subtracts/restores.
func TestSyncThenCancelSameWindow(t *testing.T) {
	m, c := redistest.NewMini(t)
	at := time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC)
	m.SetTime(at)
	lim := New(c, Options{Prefix: "sw"})
	ctx := context.Background()
	q := Quota{Name: "q", Limits: []NamedLimit{
		{"orders", Every(1, 20*time.Second)},
		{"weight", Every(10, time.Minute).WithAlgorithm(FixedWindow)},
	}}
	if r, err := lim.AllowQuota(ctx, q, Cost{"orders": 1, "weight": 2}); err != nil || !r.Allowed {
		t.Fatalf("%+v %v", r, err)
	}
	rv, err := lim.ReserveQuota(ctx, q, Cost{"orders": 1, "weight": 5}) // at 10:10:20, weight 7
	if err != nil || !rv.OK() {
		t.Fatal(err)
	}
	raised, _ := lim.Sync(ctx, q, "weight", 7) // server has 7 used (A not yet spent)
	t.Logf("res at %v, Sync(7) raised=%v", rv.At().UTC(), raised)
	_ = rv.Cancel(ctx)
	r, _ := lim.AllowQuota(ctx, q, Cost{"weight": 8})
	if r.Allowed {
		t.Fatalf("overshoot: server counted 7, granted 8 more (limit 10)")
	}
}
