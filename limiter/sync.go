package limiter

import (
	"context"
	"fmt"

	"github.com/redquota/redquota/internal/script"
)

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
		outside = l.outsideKeyOf(q, limitName)
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

// acksKey is the answer record (sync_lower.lua) of the fixed-window limit
// whose state key is key: in the state's slot.
func acksKey(key string) string { return key + ":acks" }

// syncLower runs sync_lower.lua on key, the state of lim (which Lowers): the
// server counted used units in its answer to the request booked at atUS
// with booking id id and cost units. It reports whether the count was raised.
func (l *Limiter) syncLower(ctx context.Context, key string, lim Limit, used int, atUS, id int64, cost int) (bool, error) {
	used = min(used, lim.most())
	v, err := l.scriptInt(ctx, "sync", script.SyncLower, []string{key, acksKey(key)},
		lim.periodUS(), lim.most(), used, atUS, id, cost)
	if err != nil {
		return false, err
	}
	if v < 0 || v > 2 {
		return false, fmt.Errorf("%w: sync_lower.lua replied %d", ErrBadReply, v)
	}
	return v == 1, nil
}

// runSync runs sync.lua and checks its reply.
func (l *Limiter) runSync(ctx context.Context, ks []string, args []any) (bool, error) {
	v, err := l.scriptInt(ctx, "sync", script.Sync, ks, args...)
	if err != nil {
		return false, err
	}
	if v != 0 && v != 1 {
		return false, fmt.Errorf("%w: sync.lua replied %d", ErrBadReply, v)
	}
	return v == 1, nil
}
