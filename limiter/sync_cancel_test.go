package limiter

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// A Sync that a pending booking made a no-op is not undone by that booking's
// Cancel: sync.lua raises the state's floor to its own stamp (state.lua), and
// Cancel gives back no booking whose id is at or below the floor.
// Each case overshot before: the server's count was lost, and the probe after
// Cancel was granted.
func TestSyncThenCancel(t *testing.T) {
	fixed := func(n int, per time.Duration) Limit {
		return Limit{Rate: n, Period: per, Burst: n, Algorithm: FixedWindow}
	}
	for _, tc := range []struct {
		name        string
		at          time.Time
		limits      []NamedLimit
		first, book Cost
		sync        string // the limit the server reports full...
		used        int    // ...at this count
		probe       Cost   // denied after Cancel
	}{
		// The booking sits in the next minute (sync.lua: the state is ahead).
		{"window ahead, in a quota", time.Date(2024, 3, 1, 10, 10, 30, 0, time.UTC),
			[]NamedLimit{{"orders", Every(1, 40*time.Second)}, {"weight", fixed(10, time.Minute)}},
			Cost{"orders": 1, "weight": 1}, Cost{"orders": 1, "weight": 1}, "weight", 10, Cost{"weight": 9}},
		{"window ahead, alone", time.Date(2024, 3, 1, 10, 10, 30, 0, time.UTC),
			[]NamedLimit{{"w", fixed(10, time.Minute)}},
			Cost{"w": 5}, Cost{"w": 6}, "w", 10, Cost{"w": 5}},
		// Another limit pushes the booking, and with it the GCRA tat, an hour out.
		{"GCRA pushed by another limit", time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC),
			[]NamedLimit{{"a", PerSecond(10)}, {"b", fixed(5, time.Hour)}},
			Cost{"b": 5}, Cost{"a": 1, "b": 1}, "a", 10, Cost{"a": 5}},
		// The server counts more than we do, booking included: Sync raises the
		// count; the booking's give-back must not take it below the server's.
		{"raised, same window", time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC),
			[]NamedLimit{{"orders", Every(1, 20*time.Second)}, {"weight", fixed(10, time.Minute)}},
			Cost{"orders": 1, "weight": 2}, Cost{"orders": 1, "weight": 5}, "weight", 9, Cost{"weight": 2}},
		// The booking is later in the current window and covers the server's count.
		{"same window", time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC),
			[]NamedLimit{{"orders", Every(1, 20*time.Second)}, {"weight", fixed(10, time.Minute)}},
			Cost{"orders": 1, "weight": 2}, Cost{"orders": 1, "weight": 5}, "weight", 7, Cost{"weight": 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, c := redistest.NewMini(t)
			m.SetTime(tc.at)
			lim := New(c, Options{Prefix: redistest.NewPrefix(t), Timeout: 10 * time.Second}) // about sync, not timeouts
			ctx := context.Background()
			q := Quota{Name: "q", Limits: tc.limits}
			if r, err := lim.Allow(ctx, Charge{Quota: q, Cost: tc.first}); err != nil || !r.Allowed {
				t.Fatalf("first: %+v %v", r, err)
			}
			rv, err := lim.Reserve(ctx, Charge{Quota: q, Cost: tc.book})
			if err != nil || !rv.OK() || rv.Delay() <= 0 {
				t.Fatalf("booking: %v, delay %v (want one still to come)", err, rv.Delay())
			}
			if _, err := lim.Sync(ctx, q, tc.sync, tc.used); err != nil {
				t.Fatal(err)
			}
			// The synced limit gives nothing back (the server's count rests on
			// the booking's units); the others give their units back.
			want := 0
			for name, c := range tc.book {
				if name != tc.sync {
					want += c
				}
			}
			if n, err := rv.Cancel(ctx); err != nil || n != want {
				t.Fatalf("Cancel gave back %d (%v), want %d", n, err, want)
			}
			r, err := lim.Allow(ctx, Charge{Quota: q, Cost: tc.probe})
			if err != nil || r.Allowed {
				t.Fatalf("after Sync(%s=%d) and Cancel, %v granted (%v): the server's count was lost", tc.sync, tc.used, tc.probe, err)
			}
		})
	}
}

// review-17 #6: a Sync that finds a GCRA limit covered by bookings still to
// come takes no capacity (sync.lua once moved tat by 1 µs each time), and a
// booking made after it is still given back in full: only the bookings the
// server's count may rest on (made before the Sync) are kept.
func TestSyncCoveredKeepsCapacity(t *testing.T) {
	m, c := redistest.NewMini(t)
	m.SetTime(time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC))
	// Timeout: under load a Sync outlasted the default 250 ms ("limiter: sync:
	// … no reply within 250ms", once); this test is about sync's arithmetic.
	lim := New(c, Options{Prefix: redistest.NewPrefix(t), Timeout: 10 * time.Second})
	ctx := context.Background()
	q := Quota{Name: "q", Limits: []NamedLimit{{"a", Every(2, time.Second)}}}
	tat := func() string {
		t.Helper()
		v, err := c.Get(ctx, lim.stateKeyOf(q, "a", GCRA)).Result()
		require.NoError(t, err)
		return strings.Fields(v)[0]
	}
	for range 3 { // two now, the third booked half a second ahead
		rv, err := lim.Reserve(ctx, q.Take(1))
		require.NoError(t, err)
		require.True(t, rv.OK())
	}
	before := tat()
	for range 3 { // the server counted 2: covered, three times
		raised, err := lim.Sync(ctx, q, "a", 2)
		require.NoError(t, err)
		require.False(t, raised)
	}
	require.Equal(t, before, tat(), "a covered Sync moved tat")
	rv, err := lim.Reserve(ctx, q.Take(1)) // after the Sync
	require.NoError(t, err)
	require.True(t, rv.OK())
	require.Greater(t, rv.Delay(), time.Duration(0))
	n, err := rv.Cancel(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "a booking made after the Sync is given back")
	require.Equal(t, before, tat())
}
