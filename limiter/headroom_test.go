package limiter

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/redquota/redquota/internal/redistest"
)

// A quota with Headroom learns from synced counts what others spent in a
// window and keeps that much free in the windows after, bounded by Headroom
// and halving once others have spent less than half of it for more than two
// windows. Time is miniredis's: each window is a minute set by hand.
func TestHeadroom(t *testing.T) {
	m, c := redistest.NewMini(t)
	lim := New(c, Options{Prefix: "h"})
	ctx := context.Background()
	base := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	q := Quota{Name: "ip", Group: "g", Headroom: 0.5,
		Limits: []NamedLimit{{"weight", Limit{Rate: 100, Period: time.Minute, Burst: 100, Algorithm: FixedWindow}}}}
	at := func(w int) { m.SetTime(base.Add(time.Duration(w)*time.Minute + time.Second)) }
	// take takes units one at a time until refused: the room the fleet has.
	take := func() int {
		t.Helper()
		n := 0
		for ; n <= 100; n++ {
			r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
			if err != nil {
				t.Fatal(err)
			}
			if !r.Allowed {
				break
			}
		}
		return n
	}
	sync := func(used int) {
		t.Helper()
		if _, err := lim.Sync(ctx, q, "weight", used); err != nil {
			t.Fatal(err)
		}
	}

	at(0)
	rv, err := lim.Reserve(ctx, Charge{Quota: q, Cost: Cost{"weight": 10}})
	if err != nil {
		t.Fatal(err)
	}
	// The server counted 50 after our 10: others spent 40.
	if raised, err := rv.Sync(ctx, "ip", "weight", 50); err != nil || !raised {
		t.Fatalf("Reservation.Sync: %v %v", raised, err)
	}
	if n := take(); n != 50 {
		t.Fatalf("window 0: room %d, want 50 (nothing learned yet; the 40 seen are counted)", n)
	}
	at(1)
	if n := take(); n != 60 {
		t.Fatalf("window 1: room %d, want 60 (40 kept for others)", n)
	}
	sync(90) // 60 of ours and 30 of others' so far: 10 of the 40 still unseen
	if n := take(); n != 0 {
		t.Fatalf("window 1 after seeing 30: room %d, want 0", n)
	}
	sync(100)
	at(2)
	if n := take(); n != 60 {
		t.Fatalf("window 2: room %d, want 60", n)
	}
	// Others stop: three quiet windows keep the reserve, then it halves.
	sync(60)
	for w := 3; w <= 4; w++ {
		at(w)
		if n := take(); n != 60 {
			t.Fatalf("window %d (quiet): room %d, want 60", w, n)
		}
		sync(60)
	}
	at(5)
	if n := take(); n != 80 {
		t.Fatalf("window 5: room %d, want 80 (halved after three quiet windows)", n)
	}
	at(7) // window 6 without a sync is quiet too
	if n := take(); n != 95 {
		t.Fatalf("window 7: room %d, want 95", n)
	}

	// Bounded: others spending 90 are kept at most Headroom (50) free.
	q2 := Quota{Name: "ip2", Group: "g", Headroom: 0.5, Limits: q.Limits}
	at(10)
	if _, err := lim.Sync(ctx, q2, "weight", 90); err != nil {
		t.Fatal(err)
	}
	at(11)
	for n := 0; ; n++ {
		r, err := lim.Allow(ctx, Charge{Quota: q2, Cost: Cost{"weight": 1}})
		if err != nil {
			t.Fatal(err)
		}
		if !r.Allowed {
			if n != 50 {
				t.Fatalf("bounded: room %d, want 50", n)
			}
			break
		}
	}
	// ResetQuota forgets what was learned.
	if err := lim.Reset(ctx, q2); err != nil {
		t.Fatal(err)
	}
	if r, err := lim.Allow(ctx, Charge{Quota: q2, Cost: Cost{"weight": 100}}); err != nil || !r.Allowed {
		t.Fatalf("after ResetQuota: %+v %v, want the whole window", r, err)
	}

	for _, h := range []float64{-0.1, 0.95, math.NaN()} {
		bad := Quota{Name: "bad", Headroom: h, Limits: q.Limits}
		if _, err := lim.Allow(ctx, Charge{Quota: bad, Cost: Cost{"weight": 1}}); !errors.Is(err, errInvalidLimit) {
			t.Errorf("Headroom %v: %v, want errInvalidLimit", h, err)
		}
	}
}

// Units the server refused (Reservation.Refused) are not taken for the
// fleet's when the server's count is compared with ours: others' spending is
// seen whole, and the next window keeps it all free.
func TestHeadroomRefused(t *testing.T) {
	m, c := redistest.NewMini(t)
	lim := New(c, Options{Prefix: "r"})
	ctx := context.Background()
	base := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	q := Quota{Name: "ip", Headroom: 0.5, Limits: []NamedLimit{{"weight", Limit{Rate: 100, Period: time.Minute, Burst: 100, Algorithm: FixedWindow}}}}
	for _, refuse := range []bool{true, false} {
		if err := lim.Reset(ctx, q); err != nil {
			t.Fatal(err)
		}
		m.SetTime(base.Add(time.Second))
		ok, err := lim.Reserve(ctx, Charge{Quota: q, Cost: Cost{"weight": 30}})
		if err != nil {
			t.Fatal(err)
		}
		no, err := lim.Reserve(ctx, Charge{Quota: q, Cost: Cost{"weight": 20}})
		if err != nil {
			t.Fatal(err)
		}
		if refuse {
			if err := no.Refused(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// Others spent 40; the server counted them and our 30, not our 20.
		if _, err := ok.Sync(ctx, "", "weight", 70); err != nil {
			t.Fatal(err)
		}
		m.SetTime(base.Add(time.Minute + time.Second))
		room := 0
		for ; room <= 100; room++ {
			r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
			if err != nil {
				t.Fatal(err)
			}
			if !r.Allowed {
				break
			}
		}
		want := map[bool]int{true: 60, false: 80}[refuse] // 40 seen, or 20 when the refusal hides 20
		if room != want {
			t.Errorf("refusal reported %v: room %d in the next window, want %d", refuse, room, want)
		}
		base = base.Add(10 * time.Minute)
	}
}
