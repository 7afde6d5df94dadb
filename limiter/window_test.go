package limiter

import (
	"context"
	"fmt"
	"github.com/stretchr/testify/require"
	"math"
	"testing"
	"time"

	"github.com/redquota/redquota/internal/redistest"
)

// A window limit whose Period changes under the same key reads the state the
// old period left: the state says when its latest unit was charged and under
// which period, so it is placed on the new period's grid instead of read as a
// window index of the new period (which put it centuries ahead). Units the old
// windows counted are counted in every new window they may lie in, so the new
// limit is never overshot.
func TestWindowPeriodChange(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2024, 3, 1, h, m, 0, 0, time.UTC) }
	type step struct {
		at      time.Time
		limit   Limit
		n       int
		allowed bool
	}
	hour10 := Limit{Rate: 10, Period: time.Hour, Burst: 10, Algorithm: FixedWindow}
	cases := []struct {
		name  string
		steps []step
	}{
		{"hour to day", []step{
			{at(10, 10), hour10, 1, true},
			// One unit counted in the day so far: 239 left.
			{at(10, 11), Limit{Rate: 240, Period: 24 * time.Hour, Burst: 240, Algorithm: FixedWindow}, 239, true},
			{at(10, 12), Limit{Rate: 240, Period: 24 * time.Hour, Burst: 240, Algorithm: FixedWindow}, 1, false},
		}},
		{"hour to two hours counts both hours", []step{
			{at(10, 30), hour10, 9, true},
			{at(11, 30), hour10, 8, true},
			// 10:00-12:00 holds 17: 3 left, not 12 (the old state's previous
			// window lies in the new window too).
			{at(11, 40), Limit{Rate: 20, Period: 2 * time.Hour, Burst: 20, Algorithm: FixedWindow}, 4, false},
			{at(11, 40), Limit{Rate: 20, Period: 2 * time.Hour, Burst: 20, Algorithm: FixedWindow}, 3, true},
		}},
		{"day to hour", []step{
			{at(10, 10), Limit{Rate: 240, Period: 24 * time.Hour, Burst: 240, Algorithm: FixedWindow}, 200, true},
			// Where in the day the 200 fell is not known: the current hour is full...
			{at(10, 20), hour10, 1, false},
			// ...and the next hour, after every one of them, is fresh.
			{at(11, 0), hour10, 10, true},
		}},
		{"counter hour to day", []step{
			{at(10, 10), Limit{Rate: hour10.Rate, Period: hour10.Period, Burst: hour10.Rate, Algorithm: SlidingWindowCounter}, 4, true},
			{at(10, 11), Limit{Rate: 240, Period: 24 * time.Hour, Burst: 240, Algorithm: SlidingWindowCounter}, 236, true},
			{at(10, 12), Limit{Rate: 240, Period: 24 * time.Hour, Burst: 240, Algorithm: SlidingWindowCounter}, 1, false},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, c := redistest.NewMini(t)
			lim := New(c, Options{Prefix: "pc"})
			ctx := context.Background()
			for i, s := range tc.steps {
				m.SetTime(s.at)
				r, err := lim.Allow(ctx, Key("k", s.limit).Take(s.n))
				if err != nil || r.Allowed != s.allowed {
					t.Fatalf("step %d: AllowN(%d) of %s at %s: %+v %v, want allowed=%v", i, s.n, s.limit, s.at.Format("15:04"), r, err, s.allowed)
				}
				if r.RetryAfter < 0 || r.RetryAfter > s.limit.Period || r.ResetAfter < 0 || r.ResetAfter > 2*s.limit.Period {
					t.Fatalf("step %d: retry after %v, reset after %v: beyond the limit's windows", i, r.RetryAfter, r.ResetAfter)
				}
			}
		})
	}
}

// A state in a format the scripts do not write (here the "w pp c" of before
// states carried their period; no release ever wrote it) is refused, not
// read as something else: the call is an error and the state is left as it
// was.
func TestWindowUnreadableState(t *testing.T) {
	m, c := redistest.NewMini(t)
	now := time.Date(2024, 3, 1, 10, 10, 0, 0, time.UTC)
	m.SetTime(now)
	lim := New(c, Options{Prefix: "lg"})
	old := fmt.Sprintf("%d 0 7", now.Unix()/3600)
	if err := c.Set(context.Background(), "lg:{k}:fixed", old, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	limit := Limit{Rate: 10, Period: time.Hour, Burst: 10, Algorithm: FixedWindow}
	r, err := lim.Allow(context.Background(), Key("k", limit).Take(3))
	require.Error(t, err)
	require.Contains(t, err.Error(), "unreadable state")
	require.False(t, r.Allowed)
	got, err := c.Get(context.Background(), "lg:{k}:fixed").Result()
	require.NoError(t, err)
	require.Equal(t, old, got)
}

// A reply of µs beyond what a Duration holds saturates; it never wraps.
func TestMicrosecondsSaturate(t *testing.T) {
	for _, tc := range []struct {
		v    int64
		want time.Duration
	}{
		{1, time.Microsecond},
		{math.MaxInt64, math.MaxInt64},
		{math.MaxInt64/1000 + 1, math.MaxInt64},
		{math.MinInt64, math.MinInt64},
		{-1, -time.Microsecond},
	} {
		if got := us(tc.v); got != tc.want {
			t.Errorf("us(%d) = %v, want %v", tc.v, got, tc.want)
		}
	}
}
