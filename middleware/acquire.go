package middleware

import (
	"context"
	"fmt"
	"time"

	"github.com/redquota/redquota/limiter"
)

// acquire charges cost to the rule's quota and returns when the request may
// be sent: at its turn and no earlier than minDelay from now.
//
// Two cases charge it again before it is sent. A hold placed (by any process)
// while it waited for its turn or for minDelay: its booking predates the hold
// and would let it out during it. And a fixed-window limit whose window the
// request may not land in (see Options.WindowGuard): it is charged again in the
// window it will land in. A request still in either case after maxRebook
// charges is never sent: acquire returns a *LimitedError (DeniedBy
// limiter.HoldName for a hold, the fixed-window limit's name otherwise).
func (t *Transport) acquire(ctx context.Context, r *rule, cost limiter.Cost, minDelay time.Duration) error {
	grant, held, err := t.book(ctx, r.Quota, cost, minDelay)
	for i := 0; err == nil; i++ {
		if held > 0 {
			if i == maxRebook {
				return &LimitedError{Quota: r.Quota.Name, DeniedBy: limiter.HoldName, RetryAfter: held}
			}
			t.stats.rebooked.Add(1)
			grant, held, err = t.book(ctx, r.Quota, cost, 0)
			continue
		}
		fixed, at := t.late(r.Quota, cost, grant, time.Now())
		if fixed == nil {
			return nil
		}
		if i == maxRebook {
			return &LimitedError{Quota: r.Quota.Name, DeniedBy: firstLimit(r.Quota, fixed), RetryAfter: time.Until(at)}
		}
		if err := sleep(ctx, time.Until(at)); err != nil {
			return err
		}
		t.stats.rebooked.Add(1)
		grant, held, err = t.book(ctx, r.Quota, fixed, 0)
	}
	return err
}

// firstLimit names the first limit of q that cost charges.
func firstLimit(q limiter.Quota, cost limiter.Cost) string {
	for _, nl := range q.Limits {
		if cost[nl.Name] > 0 {
			return nl.Name
		}
	}
	return ""
}

// book takes cost from q, at once (FailFast) or at the earliest turn before
// ctx's deadline, and returns after that turn and minDelay. grant is the local
// time of the turn. held, when > 0, is how long a hold found in place after
// that wait still lasts: the request must not go out now.
func (t *Transport) book(ctx context.Context, q limiter.Quota, cost limiter.Cost, minDelay time.Duration) (grant time.Time, held time.Duration, err error) {
	if t.opts.FailFast {
		if err := sleep(ctx, minDelay); err != nil {
			return time.Time{}, 0, err
		}
		res, err := t.lim.AllowQuota(ctx, q, cost)
		if err != nil {
			return time.Time{}, 0, fmt.Errorf("middleware: quota %q: %w", q.Name, err)
		}
		if !res.Allowed {
			return time.Time{}, 0, &LimitedError{Quota: q.Name, DeniedBy: res.DeniedBy, RetryAfter: res.RetryAfter}
		}
		return time.Now(), 0, nil
	}
	res, err := t.lim.ReserveQuota(ctx, q, cost)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("middleware: quota %q: %w", q.Name, err)
	}
	if !res.OK() {
		qr := res.QuotaResult()
		return time.Time{}, 0, &LimitedError{Quota: q.Name, DeniedBy: qr.DeniedBy, RetryAfter: qr.RetryAfter, Err: limiter.ErrWouldExceedDeadline}
	}
	now := time.Now()
	d := res.DelayFrom(now)
	grant = now.Add(d)
	if err := sleep(ctx, max(d, minDelay)); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
		defer cancel()
		_ = res.Cancel(cctx) // gives the turn back if it has not come
		return time.Time{}, 0, err
	}
	if max(d, minDelay) > 0 {
		// We waited after booking (for our turn, or a retry's backoff); a hold
		// may have been placed since. Held reads it (one PTTL) without writing.
		h, err := t.lim.Held(ctx, q.Name)
		if err == nil && h > time.Millisecond {
			return grant, h, nil
		}
	}
	return grant, 0, nil
}

// late returns the part of cost charged to fixed-window limits whose window at
// grant is not the window a request sent now may land in (now + WindowGuard),
// and when that window starts.
func (t *Transport) late(q limiter.Quota, cost limiter.Cost, grant, now time.Time) (limiter.Cost, time.Time) {
	var fixed limiter.Cost
	at := now
	for _, nl := range q.Limits {
		if nl.Limit.Algorithm != limiter.FixedWindow || cost[nl.Name] <= 0 {
			continue
		}
		p := nl.Limit.Period.Microseconds()
		land := now.Add(t.opts.WindowGuard).UnixMicro() / p
		if land == grant.UnixMicro()/p {
			continue
		}
		if fixed == nil {
			fixed = limiter.Cost{}
		}
		fixed[nl.Name] = cost[nl.Name]
		if start := time.UnixMicro(land * p); start.After(at) {
			at = start
		}
	}
	return fixed, at
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
