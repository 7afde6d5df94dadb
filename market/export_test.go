package market

import (
	"context"
	"time"
)

// SetClock makes m read the time of candle boundaries from now.
func SetClock(m *Market, now func() time.Time) { m.now = now }

// TTLs returns m's options, defaults filled in.
func TTLs(m *Market) Options { return m.o }

// IntervalDuration is i.duration.
func IntervalDuration(i Interval) (time.Duration, error) { return i.duration() }

// IntervalNext is i.next.
func IntervalNext(i Interval, t time.Time) (time.Time, error) { return i.next(t) }

// Exchanges returns the exchanges m has written to within RegistryTTL.
func Exchanges(ctx context.Context, m *Market) ([]string, error) {
	return m.known(ctx, exchangesIndex)
}
