package limiter

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/script"
)

// Hold stops every grant of quota instance q (q.For(key) holds that key's
// instance alone) until d from now on Redis's clock, in every process: what a
// 429 or 418 with Retry-After calls for. The hold's end is kept to the
// microsecond. Bookings made before it are checked again when their Wait
// wakes, and booked again after it. A hold only ever grows: a shorter one
// than the hold in place changes nothing. It returns how long the hold now
// lasts. d is at most a week (longer than any exchange ban).
//
// reason, when not "", is recorded with the hold (who set it and why, cut
// to 200 bytes) for operators to read with Inspect; it lasts as long as the
// hold does after this call, and a later reason replaces it.
//
// d ≤ 0 releases the hold at once, in every process, with its reason (no
// hold is no error); bookings already made keep their turns.
//
// q needs no limits: Quota{Name: key} (or Key(key, limit)) holds a single
// key's limits.
func (l *Limiter) Hold(ctx context.Context, q Quota, d time.Duration, reason string) (time.Duration, error) {
	if err := q.validateID(); err != nil {
		return 0, err
	}
	if d <= 0 {
		hold := l.holdKey(q)
		return 0, l.wrap(l.client.Del(ctx, hold, holdReasonKey(hold)).Err())
	}
	if d > maxHold {
		return 0, fmt.Errorf("%w: hold of %s must be ≤ %s", errInvalidDuration, d, maxHold)
	}
	dus := max(d.Microseconds(), 1)
	v, err := script.Hold.Run(ctx, l.client, []string{l.holdKey(q)}, dus).Int64()
	if err != nil {
		return 0, redisErr("hold", err)
	}
	left := us(v)
	if reason == "" {
		return left, nil
	}
	if len(reason) > maxHoldReason {
		reason = reason[:maxHoldReason]
	}
	dc, ok := l.client.(doer)
	if !ok {
		return left, nil
	}
	err = dc.Do(ctx, "set", holdReasonKey(l.holdKey(q)), reason, "px", max(left.Milliseconds(), 1)).Err()
	if err != nil {
		return left, fmt.Errorf("limiter: hold reason: %w", err)
	}
	return left, nil
}

// held reports how long the hold on quota instance q still lasts, to the
// millisecond; 0 when there is none (tests; Inspect reports it to operators).
func (l *Limiter) held(ctx context.Context, q Quota) (time.Duration, error) {
	if err := q.validateID(); err != nil {
		return 0, err
	}
	pc, ok := l.client.(interface {
		PTTL(ctx context.Context, key string) *redis.DurationCmd
	})
	if !ok {
		return 0, errNotInspectable
	}
	d, err := pc.PTTL(ctx, l.holdKey(q)).Result()
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
	lim, ok := q.find(limitName)
	if !ok {
		return false, fmt.Errorf("%w: %q is not a limit of quota %q", errUnknownLimit, limitName, q.Name)
	}
	if used < 0 {
		return false, fmt.Errorf("%w: used %d must be ≥ 0", errInvalidCost, used)
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
	used = min(used, lim.most())
	args := []any{lim.Algorithm.script(), lim.periodUS(), lim.most(), lim.intervalUS(), used}
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
	args := []any{lim.Algorithm.script(), lim.periodUS(), lim.most(), lim.intervalUS(), 0, atUS, bound, cost}
	_, err := l.runSync(ctx, []string{key, outside}, args)
	return err
}

// runSync runs sync.lua and checks its reply.
func (l *Limiter) runSync(ctx context.Context, ks []string, args []any) (bool, error) {
	v, err := script.Sync.Run(ctx, l.client, ks, args...).Int64()
	if err != nil {
		return false, redisErr("sync", err)
	}
	if v != 0 && v != 1 {
		return false, fmt.Errorf("%w: sync.lua replied %d", ErrBadReply, v)
	}
	return v == 1, nil
}
