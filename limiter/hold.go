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
//
// A hold outlives Redis losing its state (a restart without persistence, a
// failover to a replica the hold's write had not reached): the Limiter
// remembers the holds in force it placed, and those it was denied by, with
// their ends on its own clock (up to 10 000). It forgets one released or
// reset through it, and one a decision of its own, granted at once, finds
// gone (released by another process, e.g. redquota release). While one is in force its decisions compare Redis's run_id
// after its client makes new connections, as with Options.RestartSpent
// (which it does not need), and when it changed, place each hold again for
// what it has left, with its reason (a Limiter denied by a hold reads it in
// the background), before they answer (made again after it). A process that neither placed nor met a hold cannot restore it: it
// resumes when one that did decides. Without a hold in force decisions pay
// nothing for this; the first hold placed then reads the run_id first (one
// more round trip), as does the first decision a hold denies.
func (l *Limiter) Hold(ctx context.Context, q Quota, d time.Duration, reason string) (time.Duration, error) {
	if err := q.validateID(); err != nil {
		return 0, err
	}
	hold := l.holdKey(q)
	if d <= 0 {
		l.restart.holds.forget(hold)
		return 0, l.del(ctx, "release", hold, holdReasonKey(hold))
	}
	if d > maxHold {
		return 0, fmt.Errorf("%w: hold of %s must be ≤ %s", errInvalidDuration, d, maxHold)
	}
	if len(reason) > maxHoldReason {
		reason = reason[:maxHoldReason]
	}
	if !l.restart.on() || !l.restart.known() {
		// Not watching yet (or, with RestartSpent, before the first
		// decision read the run_id): read it, so that a restart after the
		// hold is found.
		if err := l.watchBeforeHold(ctx); err != nil {
			return 0, err
		}
	}
	left, err := l.placeHold(ctx, hold, d, reason)
	if left > 0 {
		l.restart.holds.keep(hold, left, reason)
	}
	return left, err
}

// placeHold holds hold key for d, with reason unless it is "", and returns
// how long the hold now lasts.
func (l *Limiter) placeHold(ctx context.Context, hold string, d time.Duration, reason string) (time.Duration, error) {
	dus := max(d.Microseconds(), 1)
	v, err := l.scriptInt(ctx, "hold", script.Hold, []string{hold}, dus)
	if err != nil {
		return 0, err
	}
	left := us(v)
	if reason == "" {
		return left, nil
	}
	dc, ok := l.client.(doer)
	if !ok {
		return left, nil
	}
	err = l.call(ctx, "hold reason", func(ctx context.Context) error {
		return dc.Do(ctx, "set", holdReasonKey(hold), reason, "px", max(left.Milliseconds(), 1)).Err()
	})
	if err != nil {
		return left, err
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
	var d time.Duration
	err := l.call(ctx, "hold ttl", func(ctx context.Context) error {
		var err error
		d, err = pc.PTTL(ctx, l.holdKey(q)).Result()
		return err
	})
	if err != nil {
		return 0, err
	}
	if d < 0 { // -2: no hold; -1 cannot happen (holds always have a TTL)
		return 0, nil
	}
	return d, nil
}
