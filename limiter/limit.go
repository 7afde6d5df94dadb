package limiter

import (
	"fmt"
	"time"

	"github.com/redquota/redquota/internal/bound"
)

// Algorithm is how a Limit counts. The zero value is GCRA.
type Algorithm uint8

const (
	// GCRA is the generic cell rate algorithm: a smooth token bucket that
	// refills one unit every Period/Rate and holds at most Burst units. O(1)
	// memory (one integer). The default.
	GCRA Algorithm = iota
	// SlidingWindow is the exact weighted sliding log: a call of cost 5 counts
	// 5 in every window of length Period that contains it, and no such window
	// ever holds more than Rate. Memory grows with the calls inside one window;
	// each call costs O(log n) amortised.
	SlidingWindow
	// SlidingWindowCounter approximates a sliding window from the counts of the
	// current and previous fixed windows, weighting the previous one by how much
	// of it the sliding window still covers. O(1) memory.
	SlidingWindowCounter
	// FixedWindow counts in windows aligned to the Unix clock in UTC (the
	// current second, minute, hour or day for those periods), as Binance counts
	// its request weight. Up to Rate per window, so up to 2×Rate can pass
	// around a window boundary.
	FixedWindow
)

// String returns the algorithm's short name, also used in keys and telemetry.
func (a Algorithm) String() string {
	switch a {
	case GCRA:
		return "gcra"
	case SlidingWindow:
		return "sliding"
	case SlidingWindowCounter:
		return "counter"
	case FixedWindow:
		return "fixed"
	}
	return fmt.Sprintf("algorithm(%d)", uint8(a))
}

// script returns the algorithm's code in the Lua scripts.
func (a Algorithm) script() int { return int(a) + 1 }

// Limit is a rate: Rate events per Period, counted by Algorithm.
//
// Rate and Burst are at most 1 000 000 000 and Period between 1ms and 366
// days (every time and count then fits the scripts' arithmetic); a GCRA
// limit counts at most one unit per µs, and its full bucket refills within
// 366 days. A limit out of these bounds is an error wrapping ErrInvalid,
// reported by the call that uses it.
//
// For GCRA, Burst is the most units that can be taken at once (0 means Rate);
// the bucket refills one unit every Period/Rate, rounded up to a microsecond so
// that rounding never lets more through. For the window algorithms Burst is
// ignored: at most Rate units fit in a window.
//
// A window limit's Period may change under the same key: the state records
// the period it was written under and the time of its latest charge, and is
// read on the new period's grid, counting each unit it still holds in every
// new window the unit may lie in (so the new limit is not overshot by units
// the old state remembers).
type Limit struct {
	Rate      int
	Period    time.Duration
	Burst     int
	Algorithm Algorithm
	// Lowers says the server's count of this limit goes down by itself
	// (Binance's unfilled order count falls when orders fill), so a count the
	// server reports in its answer to a request may lower ours as well as
	// raise it, when synced through the request's reservation
	// (Reservation.Sync): to the server's count plus the units of every
	// other booking of the window that may still reach the server after that
	// request, never below. A booking whose answer is never synced stays
	// counted until its window ends. FixedWindow limits only, in a quota
	// without Headroom. Default false: synced counts only raise ours.
	Lowers bool
}

// PerSecond is n events per second with a burst of n (GCRA).
func PerSecond(n int) Limit { return Limit{Rate: n, Period: time.Second, Burst: n} }

// PerMinute is n events per minute with a burst of n (GCRA).
func PerMinute(n int) Limit { return Limit{Rate: n, Period: time.Minute, Burst: n} }

// PerHour is n events per hour with a burst of n (GCRA).
func PerHour(n int) Limit { return Limit{Rate: n, Period: time.Hour, Burst: n} }

// PerDay is n events per day with a burst of n (GCRA).
func PerDay(n int) Limit { return Limit{Rate: n, Period: 24 * time.Hour, Burst: n} }

// Every is n events per period with a burst of n (GCRA).
func Every(n int, period time.Duration) Limit { return Limit{Rate: n, Period: period, Burst: n} }

// most is the most units one call can ever take: Burst (or Rate when Burst
// is 0) for GCRA, Rate for the window algorithms.
func (l Limit) most() int { return bound.Most(l.Rate, l.Burst, l.Algorithm == GCRA) }

// String describes the limit, e.g. "10 req/s (burst 10, gcra)".
func (l Limit) String() string {
	var per string
	switch l.Period {
	case time.Second:
		per = "s"
	case time.Minute:
		per = "m"
	case time.Hour:
		per = "h"
	case 24 * time.Hour:
		per = "day"
	default:
		per = l.Period.String()
	}
	if l.Algorithm == GCRA {
		return fmt.Sprintf("%d req/%s (burst %d, gcra)", l.Rate, per, l.most())
	}
	return fmt.Sprintf("%d req/%s (%s)", l.Rate, per, l.Algorithm)
}

// validate reports why l is unusable, as an error wrapping errInvalidLimit.
func (l Limit) validate() error {
	switch {
	case l.Rate <= 0:
		return fmt.Errorf("%w: rate %d must be > 0", errInvalidLimit, l.Rate)
	case l.Rate > maxRate:
		return fmt.Errorf("%w: rate %d above %d", errInvalidLimit, l.Rate, maxRate)
	case l.Period <= 0:
		return fmt.Errorf("%w: period %s must be > 0", errInvalidLimit, l.Period)
	case l.Period > maxPeriod:
		return fmt.Errorf("%w: period %s above %s", errInvalidLimit, l.Period, maxPeriod)
	case l.Period < time.Millisecond:
		return fmt.Errorf("%w: period %s below 1ms", errInvalidLimit, l.Period)
	case l.Burst < 0:
		return fmt.Errorf("%w: burst %d must be ≥ 0", errInvalidLimit, l.Burst)
	case l.Burst > maxRate:
		return fmt.Errorf("%w: burst %d above %d", errInvalidLimit, l.Burst, maxRate)
	case l.Algorithm > FixedWindow:
		return fmt.Errorf("%w: unknown algorithm %d", errInvalidLimit, l.Algorithm)
	case l.Lowers && l.Algorithm != FixedWindow:
		return fmt.Errorf("%w: Lowers needs a fixed window, not %s", errInvalidLimit, l.Algorithm)
	case l.Algorithm == GCRA && l.Period.Microseconds() < int64(l.Rate):
		return fmt.Errorf("%w: gcra resolution is 1µs: at most one event per µs, got %d per %s", errInvalidLimit, l.Rate, l.Period)
	case l.Algorithm == GCRA && int64(l.most())*l.intervalUS() > maxPeriod.Microseconds():
		// A full bucket must drain within maxPeriod, so that times stay exact in Lua.
		return fmt.Errorf("%w: burst %d takes longer than %s to refill at %d per %s", errInvalidLimit, l.most(), maxPeriod, l.Rate, l.Period)
	}
	return nil
}

// periodUS is the period in µs.
func (l Limit) periodUS() int64 { return l.Period.Microseconds() }

// intervalUS is GCRA's emission interval in µs, rounded up so rounding never
// lets more through than Rate per Period.
func (l Limit) intervalUS() int64 {
	p := l.periodUS()
	return (p + int64(l.Rate) - 1) / int64(l.Rate)
}
