package exchanges_test

import (
	"math"
	"sort"
	"testing"
	"time"
)

// slidingLog counts as Bybit ("in any 5-second window") and OKX ("20
// requests per 2 seconds") state their limits, in the strictest reading: at
// most n units in any window of length period that ends at a request.
// Refused requests count nothing.
type slidingLog struct {
	n      int
	period time.Duration
	at     []time.Time // one entry per unit, oldest first
}

// take counts cost units at now when they fit, and returns how many units
// are left in the window after the decision and, when they do not fit, when
// the oldest unit leaves.
func (s *slidingLog) take(now time.Time, cost int) (left int, ok bool, reset time.Time) {
	cut := 0
	for cut < len(s.at) && !s.at[cut].After(now.Add(-s.period)) {
		cut++
	}
	s.at = s.at[cut:]
	if len(s.at)+cost > s.n {
		reset = now
		if len(s.at) > 0 {
			reset = s.at[0].Add(s.period)
		}
		return max(s.n-len(s.at), 0), false, reset
	}
	for range cost {
		s.at = append(s.at, now)
	}
	return s.n - len(s.at), true, now
}

// windowHit is one request a sliding-window simulator answered.
type windowHit struct {
	at      time.Time
	key     string // the window it counted in
	cost    int
	refused bool
}

// refusals counts the refused hits.
func refusals(hits []windowHit) int {
	n := 0
	for _, h := range hits {
		if h.refused {
			n++
		}
	}
	return n
}

// assertUsed checks that the window key served at least share of what a
// sliding window of n per period can serve between its first and last
// request, n × (1 + span/period): the first window's n, then n per period.
func assertUsed(t reporter, hits []windowHit, key string, n int, period time.Duration, share float64) {
	t.Helper()
	var at []time.Time
	served := 0
	for _, h := range hits {
		if h.key == key && !h.refused {
			at = append(at, h.at)
			served += h.cost
		}
	}
	if len(at) == 0 {
		t.Errorf("%s: nothing served", key)
		return
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	span := at[len(at)-1].Sub(at[0])
	allowed := float64(n) * (1 + math.Floor(span.Seconds()/period.Seconds()*1000)/1000)
	got := float64(served) / allowed
	t.Logf("%s: %d served of %.0f a window of %d per %s allows over %s (%.1f%%)", key, served, allowed, n, period, span.Round(time.Millisecond), 100*got)
	if got < share {
		t.Errorf("%s: used %.1f%% of the limit, want ≥ %.0f%%", key, 100*got, 100*share)
	}
}

// The simulators' log itself: n per period, in any window.
func TestSlidingLog(t *testing.T) {
	s := slidingLog{n: 2, period: time.Second}
	t0 := time.Unix(1000, 0)
	for i, c := range []struct {
		at   time.Duration
		ok   bool
		left int
	}{
		{0, true, 1}, {100 * time.Millisecond, true, 0}, {900 * time.Millisecond, false, 0},
		{time.Second, true, 0}, {1050 * time.Millisecond, false, 0}, {1100 * time.Millisecond, true, 0},
	} {
		left, ok, _ := s.take(t0.Add(c.at), 1)
		if ok != c.ok || left != c.left {
			t.Errorf("step %d at %s: ok %v left %d, want %v %d", i, c.at, ok, left, c.ok, c.left)
		}
	}
}

// reporter is what a usage check reports through: a *testing.T, or a
// *bestof.Usage.
type reporter interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
}
