package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// awayFromDayEnd waits, on this machine's clock (every backend's: miniredis
// is set apart, the servers run here), until the current UTC day has at least
// a minute left, so that a test's bookings share one day-long window.
func awayFromDayEnd(t *testing.T, b redistest.Backend) {
	t.Helper()
	if b.Mini != nil {
		b.Mini.SetTime(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
		return
	}
	now := time.Now()
	if end := now.Truncate(24 * time.Hour).Add(24 * time.Hour); end.Sub(now) < time.Minute {
		time.Sleep(end.Sub(now) + time.Second)
	}
}

// The lowering rule of a limit that Lowers (sync_lower.lua): a count in the
// answer to booking R lowers ours to that count plus the units of every other
// booking of the window not acked (synced) before R was booked, never below.
// Step by step on one day-long fixed window of 10:
//
//  1. A and B booked; A's answer says 0 (A filled at once): the count
//     goes to 1, B's unit kept (booked after A: A's count cannot know it).
//  2. B's answer says 0: A's ack came after B was booked, so A may have
//     reached the server after B; its unit stays: the count stays 1.
//  3. C booked after both acks; its answer says 1: every other booking was
//     acked before C was booked, so the count goes to 1 exactly. 9 fit.
//
// A limit without Lowers, synced the same way, keeps every unit; a Limiter.Sync
// (no booking to tie the count to) never lowers, nor does a cancelled
// reservation's; a repeated sync of C changes nothing. Each fails when its rule breaks: without the "acked before" test
// step 2 lowers to 0, without the pending term step 1 lowers to 0.
func TestLowersRule(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		awayFromDayEnd(t, b)
		ctx := context.Background()
		lim := New(b.Client, Options{Prefix: b.Prefix})
		day := Limit{Rate: 10, Period: 24 * time.Hour, Algorithm: FixedWindow}
		lowers := day
		lowers.Lowers = true
		q := Quota{Name: "acct", Group: "g", Limits: []NamedLimit{{"orders", lowers}, {"plain", day}}}
		book := func() *Reservation {
			t.Helper()
			r, err := lim.Reserve(ctx, Charge{Quota: q, Cost: Cost{"orders": 1, "plain": 1}})
			require.NoError(t, err)
			require.True(t, r.OK())
			return r
		}
		count := func(name string) int {
			t.Helper()
			res, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{name: 10}})
			require.NoError(t, err)
			require.False(t, res.Allowed, "the probe is denied while the count is above 0")
			return 10 - res.Remaining
		}
		sync := func(r *Reservation, name string, used int) bool {
			t.Helper()
			raised, err := r.Sync(ctx, "", name, used)
			require.NoError(t, err)
			return raised
		}

		ra, rb := book(), book()
		require.False(t, sync(ra, "orders", 0))
		require.False(t, sync(ra, "plain", 0))
		require.Equal(t, 1, count("orders"), "step 1: B's unit is kept")
		require.Equal(t, 2, count("plain"), "a limit without Lowers never lowers")

		require.False(t, sync(rb, "orders", 0))
		require.Equal(t, 1, count("orders"), "step 2: A's unit may still reach the server after B")

		rc := book()
		require.Equal(t, 2, count("orders"))
		require.False(t, sync(rc, "orders", 1))
		require.Equal(t, 1, count("orders"), "step 3: every other booking was acked before C")
		require.False(t, sync(rc, "orders", 1))
		require.Equal(t, 1, count("orders"), "a repeated sync changes nothing")

		raised, err := lim.Sync(ctx, q, "orders", 0)
		require.NoError(t, err)
		require.False(t, raised)
		require.Equal(t, 1, count("orders"), "Limiter.Sync never lowers")

		// The server counts more than we do: the count rises to it (and
		// never past the limit).
		rd := book()
		require.True(t, sync(rd, "orders", 7))
		require.Equal(t, 7, count("orders"))

		// A cancelled reservation's count only raises (its units may have
		// been given back: taken for counted ones, they would lower ours twice).
		re := book()
		_, err = re.Cancel(ctx)
		require.NoError(t, err)
		require.False(t, sync(re, "orders", 0))
		require.Equal(t, 8, count("orders"), "a cancelled reservation does not lower")

		// 2 more fit, then none.
		res, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"orders": 2}})
		require.NoError(t, err)
		require.True(t, res.Allowed)
		res, err = lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"orders": 1}})
		require.NoError(t, err)
		require.False(t, res.Allowed)
	})
}

// A Lowers limit must be a fixed window in a quota without Headroom.
func TestLowersValidate(t *testing.T) {
	l := Limit{Rate: 10, Period: time.Second, Lowers: true}
	require.ErrorIs(t, Quota{Name: "q", Limits: []NamedLimit{{"a", l}}}.Validate(), ErrInvalid)
	l.Algorithm = FixedWindow
	require.NoError(t, Quota{Name: "q", Limits: []NamedLimit{{"a", l}}}.Validate())
	require.ErrorIs(t, Quota{Name: "q", Headroom: 0.2, Limits: []NamedLimit{{"a", l}}}.Validate(), ErrInvalid)
}
