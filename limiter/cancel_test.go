package limiter

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// tenPast is 10:10 UTC: ten minutes into an hour, so a booking that does not
// fit in the current hour's window goes to the next one, 50 minutes ahead.
var tenPast = time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC)

// Cancelling a booking placed in a later window gives the current window
// back: the state returns to the window it was in, not just a lower count in
// the booking's window (which kept every later check out of the current one).
func TestCancelRestoresCurrentWindow(t *testing.T) {
	for _, a := range []Algorithm{FixedWindow, SlidingWindowCounter} {
		t.Run(a.String(), func(t *testing.T) {
			m, c := redistest.NewMini(t)
			m.SetTime(tenPast)
			lim := New(c, Options{Prefix: "cw"})
			ctx := context.Background()
			limit := Limit{Rate: 10, Period: time.Hour, Burst: 10, Algorithm: a}
			if r, err := lim.Allow(ctx, Key("k", limit).Take(8)); err != nil || !r.Allowed {
				t.Fatalf("AllowN(8): %+v %v", r, err)
			}
			rv, err := lim.Reserve(ctx, Key("k", limit).Take(5))
			if err != nil || !rv.OK() || !rv.at().After(tenPast.Add(49*time.Minute)) {
				t.Fatalf("Reserve(5) should book the next hour: %v at %v", err, rv.at())
			}
			if _, err := rv.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
			r, err := lim.Allow(ctx, Key("k", limit).Take(2))
			if err != nil || !r.Allowed || r.Remaining != 0 {
				t.Fatalf("after Cancel, AllowN(2) with 8 of 10 used: %+v %v", r, err)
			}
			// Given back exactly: the window is now full, nothing more fits.
			if r, _ := lim.Allow(ctx, Key("k", limit).Take(1)); r.Allowed {
				t.Fatalf("Cancel gave back more than it took: %+v", r)
			}
		})
	}
}

// In a quota, cancelling a booking whose time another limit set gives a GCRA
// limit back its earlier state, not the booking's time.
func TestCancelRestoresGCRAInQuota(t *testing.T) {
	m, c := redistest.NewMini(t)
	m.SetTime(tenPast)
	lim := New(c, Options{Prefix: "cg"})
	ctx := context.Background()
	q := Quota{Name: "q", Limits: []NamedLimit{
		{"a", PerSecond(10)},
		{"b", Limit{Rate: 5, Period: time.Hour, Burst: 5, Algorithm: FixedWindow}},
	}}
	if r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"b": 5}}); err != nil || !r.Allowed {
		t.Fatalf("filling b: %+v %v", r, err)
	}
	rv, err := lim.Reserve(ctx, Charge{Quota: q, Cost: Cost{"a": 1, "b": 1}})
	if err != nil || !rv.OK() || rv.Delay() < 49*time.Minute {
		t.Fatalf("ReserveQuota should wait for b's next hour: %v, delay %v", err, rv.Delay())
	}
	if _, err := rv.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"a": 1}})
	if err != nil || !r.Allowed || r.Limits[0].Remaining != 9 {
		t.Fatalf("after Cancel, a should be full again: %+v %v", r, err)
	}
	if r, _ := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"b": 1}}); r.Allowed {
		t.Fatalf("Cancel gave b back more than it took: %+v", r)
	}
}

// A reservation Cancel gave back cannot be waited for: Wait returns
// ErrInvalid at once. Before, it slept until the booking's time and returned
// nil, telling the caller its units were taken while nothing was charged: the
// next Allow found them free. A Cancel while Wait sleeps ends the Wait the
// same way. A booking that had come due when cancelled stays charged, and its
// Wait succeeds. (The check is the Reservation's, whatever the algorithm:
// GCRA's one unit an hour books each next unit an hour ahead, where a
// clock-aligned window's next booking may be seconds away.)
func TestWaitAfterCancel(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := newLim(b, Options{})
		for _, a := range []Algorithm{GCRA} {
			q := Quota{Name: "wac-" + a.String(), Limits: []NamedLimit{{"a", Limit{Rate: 1, Period: time.Hour, Burst: 1, Algorithm: a}}}}
			due, err := lim.Reserve(ctx, q.Take(1))
			require.NoError(t, err)
			require.Zero(t, due.Delay())
			later, err := lim.Reserve(ctx, q.Take(1))
			require.NoError(t, err)
			require.Greater(t, later.Delay(), time.Minute, a)
			n, err := later.Cancel(ctx)
			require.NoError(t, err)
			require.Equal(t, 1, n, a)
			// A deadline so that a Wait that would sleep fails instead of hanging.
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			require.ErrorIs(t, later.Wait(dctx), ErrInvalid, "%v: Wait after Cancel", a)
			cancel()

			n, err = due.Cancel(ctx)
			require.NoError(t, err)
			require.Zero(t, n, "%v: a booking due at once is not given back", a)
			require.NoError(t, due.Wait(ctx), "%v: its units stay charged", a)
			res, err := lim.Allow(ctx, q.Take(1))
			require.NoError(t, err)
			require.False(t, res.Allowed, "%v: the due booking still holds the only unit", a)

			// Cancel from another goroutine while Wait sleeps.
			sleeping, err := lim.Reserve(ctx, q.Take(1))
			require.NoError(t, err)
			require.Greater(t, sleeping.Delay(), time.Minute, a)
			var wg sync.WaitGroup
			var werr error
			wg.Add(1)
			// No deadline (Wait would refuse an hour's sleep at once), but
			// cancelled after 10 s so that a Wait the Cancel does not end
			// fails instead of hanging.
			wctx, stop := context.WithCancel(ctx)
			defer stop()
			defer time.AfterFunc(10*time.Second, stop).Stop()
			go func() { defer wg.Done(); werr = sleeping.Wait(wctx) }()
			// Wait has an hour to sleep: it ends only through the Cancel. The
			// pause lets it reach its sleep first (either order must end so).
			time.Sleep(20 * time.Millisecond)
			n, err = sleeping.Cancel(ctx)
			require.NoError(t, err)
			require.Equal(t, 1, n, a)
			wg.Wait()
			require.True(t, errors.Is(werr, ErrInvalid), "%v: Wait during a Cancel: %v", a, werr)
		}
	})
}

// A failed Reserve returns a nil reservation whose methods are safe, as its
// doc says: a deferred Cancel after a failed Reserve needs no nil check, and
// Wait says why it cannot wait instead of panicking.
func TestNilReservation(t *testing.T) {
	_, c := redistest.NewMini(t)
	lim := New(c, Options{Prefix: "nil"})
	ctx := context.Background()
	r, err := lim.Reserve(ctx, Key("k", Limit{Rate: 0, Period: time.Second}).Take(1)) // invalid: no reservation
	require.ErrorIs(t, err, ErrInvalid)
	require.Nil(t, r)
	require.False(t, r.OK())
	require.Zero(t, r.Delay())
	require.Equal(t, Result{}, r.Result())
	n, err := r.Cancel(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.ErrorIs(t, r.Wait(ctx), ErrInvalid)
	_, err = r.Sync(ctx, "", "", 1)
	require.ErrorIs(t, err, ErrInvalid)
	require.NoError(t, r.Refused(ctx))
}
