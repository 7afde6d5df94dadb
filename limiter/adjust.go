package limiter

import (
	"context"
	"fmt"
	"time"

	"github.com/redquota/redquota/scripts"
)

// MaxHold is the longest hold Hold accepts: a week, longer than any exchange ban.
const MaxHold = 7 * 24 * time.Hour

// Hold stops every grant of quota instance q (q.For(key) holds that key's
// instance alone) until d from now on Redis's clock, in every process: what a
// 429 or 418 with Retry-After calls for. The hold's end is kept to the
// microsecond. Bookings made before it are checked again when their Wait
// wakes, and booked again after the hold. A hold only ever grows: a shorter
// one than the hold in place changes nothing. It returns how long the hold
// now lasts.
//
// q needs no limits: Quota{Name: key} holds a single key's limits (Allow,
// Reserve and Wait under key).
func (l *Limiter) Hold(ctx context.Context, q Quota, d time.Duration) (time.Duration, error) {
	if err := q.validateID(); err != nil {
		return 0, err
	}
	if d <= 0 || d > MaxHold {
		return 0, fmt.Errorf("%w: hold of %s must be > 0 and ≤ %s", ErrInvalidDuration, d, MaxHold)
	}
	dus := max(d.Microseconds(), 1)
	v, err := scripts.Hold.Run(ctx, l.client, []string{l.holdKey(q)}, dus).Int64()
	if err != nil {
		return 0, redisErr("hold", err)
	}
	return us(v), nil
}

// Held reports how long the hold on quota instance q still lasts, to the
// millisecond (for operators: Wait and the decisions read holds themselves);
// 0 when there is none. It reads and writes nothing else.
func (l *Limiter) Held(ctx context.Context, q Quota) (time.Duration, error) {
	if err := q.validateID(); err != nil {
		return 0, err
	}
	d, err := l.client.PTTL(ctx, l.holdKey(q)).Result()
	if err != nil {
		return 0, redisErr("hold ttl", err)
	}
	if d < 0 { // -2: no hold; -1 cannot happen (holds always have a TTL)
		return 0, nil
	}
	return d, nil
}

// holdKey is the hold key of quota instance q.
func (l *Limiter) holdKey(q Quota) string {
	return l.keyFor(keyID{group: q.Group, quota: q.Name, key: q.key, keyed: q.keyed, algo: holdAlgorithm}).key
}

// stateKeyOf is the state key of limit name (of algorithm a) of quota instance q.
func (l *Limiter) stateKeyOf(q Quota, name string, a Algorithm) string {
	return l.keyFor(keyID{group: q.Group, quota: q.Name, key: q.key, keyed: q.keyed, name: name, algo: a}).key
}

// Sync raises the count of limit limitName of quota instance q to used, what
// the server reports it has counted (a usage header such as
// X-MBX-USED-WEIGHT-1m), now. It never lowers our count, so it can only slow
// us down. It reports whether the count was raised. used above the limit is
// taken as the limit. To sync the count a response reports for the request a
// reservation charged, only while that charge's window lasts, use
// Reservation.Sync.
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
	var outside string
	bound := q.headroomOf(lim)
	if bound > 0 {
		outside = l.keyFor(keyID{group: q.Group, quota: q.Name, key: q.key, keyed: q.keyed, name: limitName, algo: outsideAlgorithm}).key
	}
	return l.sync(ctx, l.stateKeyOf(q, limitName, lim.Algorithm), lim, used, 0, outside, bound)
}

// sync runs sync.lua on key; atUS > 0 applies it only while the charge made
// at atUS still counts. A limit keeping headroom (bound > 0 units) learns
// into its outside record.
func (l *Limiter) sync(ctx context.Context, key string, lim Limit, used int, atUS int64, outside string, bound int) (bool, error) {
	used = min(used, lim.Max())
	args := []any{lim.Algorithm.script(), lim.periodUS(), lim.Max(), lim.intervalUS(), used}
	ks := []string{key}
	if atUS > 0 || bound > 0 {
		args = append(args, atUS)
	}
	if bound > 0 {
		ks, args = append(ks, outside), append(args, bound)
	}
	return l.runSync(ctx, ks, args)
}

// refused runs sync.lua's refusal path on key (a limit keeping headroom,
// whose outside record is outside, bound units): cost units of the charge
// made at atUS were refused by the server.
func (l *Limiter) refused(ctx context.Context, key string, lim Limit, cost int, atUS int64, outside string, bound int) error {
	args := []any{lim.Algorithm.script(), lim.periodUS(), lim.Max(), lim.intervalUS(), 0, atUS, bound, cost}
	_, err := l.runSync(ctx, []string{key, outside}, args)
	return err
}

// runSync runs sync.lua and checks its reply.
func (l *Limiter) runSync(ctx context.Context, ks []string, args []any) (bool, error) {
	v, err := scripts.Sync.Run(ctx, l.client, ks, args...).Int64()
	if err != nil {
		return false, redisErr("sync", err)
	}
	if v != 0 && v != 1 {
		return false, fmt.Errorf("%w: sync.lua replied %d", ErrBadReply, v)
	}
	return v == 1, nil
}
