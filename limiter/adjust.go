package limiter

import (
	"context"
	"fmt"
	"time"

	"github.com/redquota/redquota/scripts"
)

// MaxHold is the longest hold Hold accepts: a week, longer than any exchange ban.
const MaxHold = 7 * 24 * time.Hour

// Hold stops every grant under name — a quota's name, or a single limit's
// key — until d from now, in every process: what a 429 or 418 with
// Retry-After calls for. Waiters already booked keep their turns; new ones
// book after the hold. A hold only ever grows: a shorter one than the hold in
// place changes nothing. It returns how long the hold now lasts.
func (l *Limiter) Hold(ctx context.Context, name string, d time.Duration) (time.Duration, error) {
	if err := checkKey(name); err != nil {
		return 0, err
	}
	if d <= 0 || d > MaxHold {
		return 0, fmt.Errorf("%w: hold of %s must be > 0 and ≤ %s", ErrInvalidDuration, d, MaxHold)
	}
	dus := max(d.Microseconds(), 1)
	v, err := scripts.Hold.Run(ctx, l.client, []string{l.head(name) + ":hold"}, dus).Int64()
	if err != nil {
		return 0, fmt.Errorf("limiter: hold.lua: %w", err)
	}
	return us(v), nil
}

// Held reports how long the hold on name (a quota's name or a single key)
// still lasts; 0 when there is none. It reads and writes nothing else.
func (l *Limiter) Held(ctx context.Context, name string) (time.Duration, error) {
	if err := checkKey(name); err != nil {
		return 0, err
	}
	d, err := l.client.PTTL(ctx, l.head(name)+":hold").Result()
	if err != nil {
		return 0, fmt.Errorf("limiter: hold ttl: %w", err)
	}
	if d < 0 { // -2: no hold; -1 cannot happen (holds always have a TTL)
		return 0, nil
	}
	return d, nil
}

// Sync raises the count of limit limitName of q to used, what the server
// reports it has counted (a usage header such as X-MBX-USED-WEIGHT-1m). It
// never lowers our count, so it can only slow us down. It reports whether the
// count was raised. used above the limit is taken as the limit.
func (l *Limiter) Sync(ctx context.Context, q Quota, limitName string, used int) (bool, error) {
	if err := q.Validate(); err != nil {
		return false, err
	}
	lim, ok := q.Find(limitName)
	if !ok {
		return false, fmt.Errorf("%w: %q is not a limit of quota %q", ErrUnknownLimit, limitName, q.Name)
	}
	if used < 0 {
		return false, fmt.Errorf("%w: used %d must be ≥ 0", ErrInvalidCost, used)
	}
	if used == 0 {
		return false, nil
	}
	used = min(used, lim.Max())
	key := stateKey(l.head(q.Name), limitName, lim.Algorithm)
	v, err := scripts.Sync.Run(ctx, l.client, []string{key},
		lim.Algorithm.script(), lim.periodUS(), lim.Max(), lim.intervalUS(), used).Int64()
	if err != nil {
		return false, fmt.Errorf("limiter: sync.lua: %w", err)
	}
	return v == 1, nil
}
