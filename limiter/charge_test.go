package limiter

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// For makes instances of one template: each key counts alone, and no key can
// reach another quota's or another key's state, however names and keys are
// cut. A bad key is a typed error and writes nothing.
func TestQuotaFor(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := newLim(b, Options{})
		tpl := Quota{Name: "api", Limits: []NamedLimit{{"req", PerMinute(1)}}}
		for _, key := range []string{"alice", "bob", "a:b", "{x}"} {
			if r, err := lim.Allow(ctx, Charge{Quota: tpl.For(key), Cost: Cost{"req": 1}}); err != nil || !r.Allowed {
				t.Fatalf("first call for %q: %+v %v", key, r, err)
			}
		}
		if r, _ := lim.Allow(ctx, Charge{Quota: tpl.For("alice"), Cost: Cost{"req": 1}}); r.Allowed {
			t.Fatal("alice's second call allowed: keys share nothing with each other, but a key counts")
		}
		// Name "api:a" with key "b" and name "api" with key "a:b" are different instances.
		other := Quota{Name: "api:a", Limits: tpl.Limits}
		if r, _ := lim.Allow(ctx, Charge{Quota: other.For("b"), Cost: Cost{"req": 1}}); !r.Allowed {
			t.Fatal(`("api:a", "b") met ("api", "a:b")'s state`)
		}
		// In a Group, instances stay apart too, and apart from a quota named
		// like the group.
		g := Quota{Name: "api", Group: "api", Limits: tpl.Limits}
		ga := Quota{Name: "api:a", Group: "api", Limits: tpl.Limits}
		for _, inst := range []Quota{g, g.For("a:b"), g.For("a"), ga, ga.For("b"), g.For("@b")} {
			if r, err := lim.Allow(ctx, Charge{Quota: inst, Cost: Cost{"req": 1}}); err != nil || !r.Allowed {
				t.Fatalf("%+v met another instance's state (%v)", inst, err)
			}
		}
		// The template itself is an instance of its own.
		if r, _ := lim.Allow(ctx, Charge{Quota: tpl, Cost: Cost{"req": 1}}); !r.Allowed {
			t.Fatal("the unkeyed template met a keyed instance's state")
		}
		if r, _ := lim.Allow(ctx, Charge{Quota: tpl.For("alice"), Cost: Cost{"req": 1}}); r.Limits[0].Quota != "api" {
			t.Fatalf("LimitResult.Quota %q, want the quota's name, not its key", r.Limits[0].Quota)
		}
		for _, tc := range []struct {
			key  string
			want error
		}{{"", errEmptyKey}, {strings.Repeat("k", maxKeyLen+1), errKeyTooLong}} {
			if _, err := lim.Allow(ctx, Charge{Quota: tpl.For(tc.key), Cost: Cost{"req": 1}}); !errors.Is(err, tc.want) {
				t.Fatalf("key of %d bytes: %v, want %v", len(tc.key), err, tc.want)
			}
			if _, err := lim.Hold(ctx, tpl.For(tc.key), time.Second, ""); !errors.Is(err, tc.want) {
				t.Fatalf("hold, key of %d bytes: %v, want %v", len(tc.key), err, tc.want)
			}
		}
	})
}

// Quotas of one Group are charged all or nothing in one call; quotas of
// different groups are charged with compensation: a refused group gives back
// the groups charged before it.
func TestAllowAll(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := newLim(b, Options{})
		for _, groups := range [][2]string{{"ip1", "ip1"}, {"ip1", "ip2"}} {
			ip := Quota{Name: "ip-" + groups[1], Group: groups[0], Limits: []NamedLimit{{"weight", PerMinute(10)}}}
			acct := Quota{Name: "orders", Group: groups[1], Limits: []NamedLimit{{"orders", PerMinute(1)}}}
			charge := func(acctKey string) (Result, error) {
				return lim.Allow(ctx, Charge{Quota: ip, Cost: Cost{"weight": 2}}, Charge{Quota: acct.For(acctKey), Cost: Cost{"orders": 1}})
			}
			if r, err := charge("A"); err != nil || !r.Allowed || len(r.Limits) != 2 {
				t.Fatalf("%v: first: %+v %v", groups, r, err)
			}
			r, err := charge("A")
			if err != nil || r.Allowed || r.DeniedBy != "orders" || r.DeniedQuota != "orders" {
				t.Fatalf("%v: A's second order: %+v %v", groups, r, err)
			}
			// Account B shares the IP's weight: 2 (A) + 2 (B) of 10, the refused
			// call took nothing: 6 left after B.
			r, err = charge("B")
			if err != nil || !r.Allowed {
				t.Fatalf("%v: B: %+v %v", groups, r, err)
			}
			for _, lr := range r.Limits {
				if lr.Name == "weight" && lr.Remaining != 6 {
					t.Fatalf("%v: B: weight left %d, want 6 (the refused call must have given its 2 back)", groups, lr.Remaining)
				}
			}
		}
	})
}

// Reserve past the deadline says so in its error, charges nothing, and the
// reservation tells when the units would have fitted.
func TestReservePastDeadline(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		lim := newLim(b, Options{})
		limit := PerMinute(1)
		if r, err := lim.Allow(context.Background(), Key("k", limit).Take(1)); err != nil || !r.Allowed {
			t.Fatal(r, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		rv, err := lim.Reserve(ctx, Key("k", limit).Take(1))
		if !errors.Is(err, ErrWouldExceedDeadline) || rv == nil || rv.OK() || rv.Delay() < 50*time.Second {
			t.Fatalf("Reserve past the deadline: %v, %+v", err, rv)
		}
		q := Quota{Name: "q", Limits: []NamedLimit{{"l", limit}}}
		if _, err := lim.Allow(context.Background(), Charge{Quota: q, Cost: Cost{"l": 1}}); err != nil {
			t.Fatal(err)
		}
		if _, err := lim.Reserve(ctx, Charge{Quota: q, Cost: Cost{"l": 1}}); !errors.Is(err, ErrWouldExceedDeadline) {
			t.Fatalf("ReserveAll past the deadline: %v", err)
		}
		if err := rv.Wait(ctx); !errors.Is(err, ErrWouldExceedDeadline) {
			t.Fatalf("Wait on a reservation that is not OK: %v", err)
		}
	})
}

// A guard books a grant that would fall within it of its fixed window's end
// at the next window's start; WindowEnd names the window charged.
func TestGuard(t *testing.T) {
	m, c := redistest.NewMini(t)
	lim := New(c, Options{Prefix: "g"})
	ctx := context.Background()
	minute := time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC)
	q := Quota{Name: "w", Guard: 300 * time.Millisecond, Limits: []NamedLimit{{"weight", Limit{Rate: 100, Period: time.Minute, Burst: 100, Algorithm: FixedWindow}}}}
	m.SetTime(minute.Add(time.Minute - 400*time.Millisecond)) // 400 ms before the end: outside the guard
	r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
	if err != nil || !r.Allowed || !r.Limits[0].WindowEnd.Equal(minute.Add(time.Minute)) {
		t.Fatalf("outside the guard: %+v %v", r, err)
	}
	m.SetTime(minute.Add(time.Minute - 200*time.Millisecond)) // inside the guard
	if r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}}); err != nil || r.Allowed || r.RetryAfter != 200*time.Millisecond {
		t.Fatalf("inside the guard, Allow: %+v %v", r, err)
	}
	rv, err := lim.Reserve(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
	if err != nil || !rv.at().Equal(minute.Add(time.Minute)) {
		t.Fatalf("inside the guard, Reserve: %v at %v, want the next window's start", err, rv.at())
	}
	if end := rv.Result().Limits[0].WindowEnd; !end.Equal(minute.Add(2 * time.Minute)) {
		t.Fatalf("WindowEnd %v, want the next window's end", end)
	}
	if _, err := lim.Allow(ctx, Charge{Quota: Quota{Name: "bad", Guard: time.Minute, Limits: q.Limits}, Cost: Cost{"weight": 1}}); !errors.Is(err, errInvalidDuration) {
		t.Fatalf("a guard as long as the window: %v", err)
	}
	// The script compares in whole µs: a guard short of a period by less
	// than one is as long as it there (before, a Redis error), and refused
	// here, before Redis.
	odd := []NamedLimit{{"weight", Limit{Rate: 100, Period: time.Minute + 500*time.Nanosecond, Burst: 100, Algorithm: FixedWindow}}}
	short := Quota{Name: "bad", Guard: time.Minute + 100*time.Nanosecond, Limits: odd}
	if _, err := lim.Allow(ctx, Charge{Quota: short, Cost: Cost{"weight": 1}}); !errors.Is(err, ErrInvalid) || !errors.Is(err, errInvalidDuration) {
		t.Fatalf("a guard within a µs of the window: %v", err)
	}
}

// Reservation.Sync applies a server's count only while Redis's clock is in
// the window the reservation was charged in.
func TestReservationSync(t *testing.T) {
	m, c := redistest.NewMini(t)
	lim := New(c, Options{Prefix: "s"})
	ctx := context.Background()
	minute := time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC)
	q := Quota{Name: "w", Limits: []NamedLimit{{"weight", Limit{Rate: 10, Period: time.Minute, Burst: 10, Algorithm: FixedWindow}}}}
	m.SetTime(minute.Add(59 * time.Second))
	rv, err := lim.Reserve(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
	if err != nil || rv.Delay() != 0 {
		t.Fatal(err, rv.Delay())
	}
	m.SetTime(minute.Add(61 * time.Second)) // the answer came after the window ended
	if raised, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}}); err != nil || !raised.Allowed {
		t.Fatal(raised, err)
	}
	if raised, err := rv.Sync(ctx, "", "weight", 10); err != nil || raised {
		t.Fatalf("Sync after the charged window: raised %v (%v); the count belongs to the old window", raised, err)
	}
	rv2, err := lim.Reserve(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if raised, err := rv2.Sync(ctx, "w", "weight", 10); err != nil || !raised {
		t.Fatalf("Sync in the charged window: raised %v (%v)", raised, err)
	}
	if r, _ := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}}); r.Allowed {
		t.Fatal("allowed after the server reported the window full")
	}
	if _, err := rv2.Sync(ctx, "", "nope", 1); !errors.Is(err, errUnknownLimit) {
		t.Fatalf("Sync of a limit not charged: %v", err)
	}
}

// A charge on a quota without limits and an empty cost only waits for the
// quota instance's hold, the hold of every quota of that name and key, and
// charges nothing (Kraken's trading calls it does not count).
func TestHoldOnlyCharge(t *testing.T) {
	m, c := redistest.NewMini(t)
	lim := New(c, Options{Prefix: "h"})
	ctx := context.Background()
	at := time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC)
	m.SetTime(at)
	trade := Quota{Name: "kraken-trade", Limits: []NamedLimit{{"counter", Every(15, 45*time.Second)}}}
	free := Quota{Name: "kraken-trade"}
	if _, err := lim.Hold(ctx, trade.For("XBTUSD"), 2*time.Second, ""); err != nil {
		t.Fatal(err)
	}
	r, err := lim.Allow(ctx, Charge{Quota: free.For("XBTUSD")})
	if err != nil || r.Allowed || r.DeniedBy != HoldName || r.DeniedQuota != "kraken-trade" || r.RetryAfter != 2*time.Second || len(r.Limits) != 0 {
		t.Fatalf("free call on a held pair: %+v %v", r, err)
	}
	if r, err := lim.Allow(ctx, Charge{Quota: free.For("ETHUSD")}); err != nil || !r.Allowed {
		t.Fatalf("free call on another pair: %+v %v", r, err)
	}
	rv, err := lim.Reserve(ctx, Charge{Quota: free.For("XBTUSD")})
	if err != nil || !rv.at().Equal(at.Add(2*time.Second)) {
		t.Fatalf("ReserveAll of a free call: %v, at %v, want the hold's end", err, rv.at())
	}
	if n, err := rv.Cancel(ctx); err != nil || n != 0 {
		t.Fatalf("Cancel of a free call gave back %d (%v)", n, err)
	}
	if keys := m.Keys(); len(keys) != 1 {
		t.Fatalf("keys %v: a free call must write nothing (only the hold)", keys)
	}
	if _, err := lim.Allow(ctx, Charge{Quota: free, Cost: Cost{"counter": 1}}); !errors.Is(err, errEmptyQuota) {
		t.Fatalf("a cost on a quota without limits: %v", err)
	}
	if _, err := lim.Allow(ctx, Charge{Quota: trade, Cost: Cost{}}); !errors.Is(err, errInvalidCost) {
		t.Fatalf("a call that takes nothing from a quota with limits: %v", err)
	}
	// A cost of 0 on a quota with limits, beside a charge: its hold only.
	if r, err := lim.Allow(ctx, Charge{Quota: trade.For("XBTUSD"), Cost: Cost{"counter": 0}}, Charge{Quota: trade.For("ETHUSD"), Cost: Cost{"counter": 1}}); err != nil || r.Allowed || r.DeniedBy != HoldName {
		t.Fatalf("a 0 cost on a held pair with a charge on another: %+v %v", r, err)
	}
	// Together with a charged quota of another pair, in one call.
	if r, err := lim.Allow(ctx, Charge{Quota: free.For("XBTUSD")}, Charge{Quota: trade.For("ETHUSD"), Cost: Cost{"counter": 1}}); err != nil || r.Allowed || r.DeniedBy != HoldName {
		t.Fatalf("free call on a held pair with a charge on another: %+v %v", r, err)
	}
}

// Reservation.Sync with a quota's name syncs that quota's limit, not the
// first charged limit of that name in another quota.
func TestReservationSyncQuotaQualified(t *testing.T) {
	m, c := redistest.NewMini(t)
	m.SetTime(time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC))
	lim := New(c, Options{Prefix: "sq"})
	ctx := context.Background()
	weight := []NamedLimit{{"weight", Limit{Rate: 10, Period: time.Minute, Burst: 10, Algorithm: FixedWindow}}}
	qa, qb := Quota{Name: "a", Limits: weight}, Quota{Name: "b", Limits: weight}
	rv, err := lim.Reserve(ctx, Charge{Quota: qa, Cost: Cost{"weight": 1}}, Charge{Quota: qb, Cost: Cost{"weight": 1}})
	if err != nil || !rv.OK() {
		t.Fatal(err)
	}
	if raised, err := rv.Sync(ctx, "b", "weight", 10); err != nil || !raised {
		t.Fatalf("Sync of b's weight: raised %v (%v)", raised, err)
	}
	if r, _ := lim.Allow(ctx, Charge{Quota: qb, Cost: Cost{"weight": 1}}); r.Allowed {
		t.Fatal("b allowed after the server reported its window full")
	}
	if r, _ := lim.Allow(ctx, Charge{Quota: qa, Cost: Cost{"weight": 1}}); !r.Allowed {
		t.Fatal("a denied: the sync of b's weight went to a's")
	}
	if _, err := rv.Sync(ctx, "c", "weight", 1); !errors.Is(err, errUnknownLimit) {
		t.Fatalf("Sync of a quota not charged: %v", err)
	}
}

// Cluster nodes' clocks differ a little. AllowAll across groups on two nodes,
// the second 5 ms behind the first, still grants: its bookings are all due at
// once, and none waits for a time read on another node's clock (the
// second node's clock is played by moving miniredis's back after the first
// group's call).
func TestAllowAllAcrossNodeClocks(t *testing.T) {
	m, c := redistest.NewMini(t)
	start := time.Date(2025, 1, 15, 12, 0, 30, 0, time.UTC)
	m.SetTime(start)
	if err := script.Load(context.Background(), c); err != nil { // one call per group
		t.Fatal(err)
	}
	var calls atomic.Int64
	c.AddHook(afterScript(func() {
		if calls.Add(1)%2 == 1 { // the first group's call: the next node is behind
			m.SetTime(start.Add(-5 * time.Millisecond))
		} else {
			m.SetTime(start)
		}
	}))
	lim := New(c, Options{Prefix: redistest.NewPrefix(t)})
	ip := Quota{Name: "ip", Group: "ip1", Limits: []NamedLimit{{"weight", PerMinute(10)}}}
	acct := Quota{Name: "orders", Group: "acct1", Limits: []NamedLimit{{"orders", PerMinute(10)}}}
	for i := range 3 {
		r, err := lim.Allow(context.Background(), Charge{Quota: ip, Cost: Cost{"weight": 1}}, Charge{Quota: acct, Cost: Cost{"orders": 1}})
		if err != nil || !r.Allowed {
			t.Fatalf("call %d: %+v %v", i, r, err)
		}
	}
}

// A caller whose context is already done (a request its client gave up on)
// gets ctx's error from Allow and Reserve and is charged nothing, as from
// Wait: before, Allow and Reserve of a cancelled context were sent and
// charged (go-redis only looks at a context's deadline), so the units went
// to a caller that would never use them.
func TestDoneContextChargesNothing(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		bg := context.Background()
		lim := newLim(b, Options{})
		key := Key("k", PerMinute(2))
		q := Quota{Name: "q", Limits: []NamedLimit{{"a", PerMinute(2)}, {"b", Limit{Rate: 2, Period: time.Minute, Algorithm: FixedWindow}}}}
		other := Quota{Name: "other", Group: "g2", Limits: []NamedLimit{{"a", PerMinute(2)}}}
		// A warm connection: a dial would see the cancelled context.
		_, err := lim.Allow(bg, Key("warm", PerMinute(2)).Take(1))
		require.NoError(t, err)
		cancelled, cancel := context.WithCancel(bg)
		cancel()
		expired, cancel2 := context.WithDeadline(bg, time.Now().Add(-time.Second))
		defer cancel2()
		calls := map[string][]Charge{
			"key":    {key.Take(1)},
			"quota":  {q.Take(1)},
			"groups": {q.Take(1), other.Take(1)},
		}
		for _, done := range []context.Context{cancelled, expired} {
			for name, cs := range calls {
				_, err := lim.Allow(done, cs...)
				require.ErrorIs(t, err, done.Err(), "Allow %s", name)
				r, err := lim.Reserve(done, cs...)
				require.ErrorIs(t, err, done.Err(), "Reserve %s", name)
				require.Nil(t, r, "Reserve %s", name)
			}
		}
		require.Equal(t, int64(1), lim.Stats().Allowed, "nothing was decided but the warm-up")
		// Every limit is still full: two units of each fit now.
		for name, cs := range calls {
			if name == "groups" {
				continue // q is charged by "quota" below
			}
			res, err := lim.Allow(bg, cs...)
			require.NoError(t, err)
			require.True(t, res.Allowed, name)
			require.Equal(t, 1, res.Remaining, "%s: the done calls took nothing", name)
		}
		res, err := lim.Allow(bg, other.Take(1))
		require.NoError(t, err)
		require.Equal(t, 1, res.Remaining, "other: the done calls took nothing")
	})
}
