package middleware

import (
	"context"
	"fmt"
	"time"

	"github.com/redquota/redquota/limiter"
)

// charge is what acquire learnt of a request's charge: for each fixed-window
// limit charged, when the window the charge counts in ends.
type charge struct {
	ends map[string]windowEnd
}

// windowEnd is the end of the fixed window a charge counts in. Redis decides
// the window on its own clock and replies how long it has to run
// (ResetAfter); first and last are that end on the local clock, taking the
// decision as made when the call was sent (the earliest it can end) or when
// its reply came (the latest). No local clock reading decides a window. next
// is the end as a time on Redis's clock: the start of the window after.
type windowEnd struct {
	first, last time.Time
	next        time.Time
	period      time.Duration
}

// acquire charges cost to the rule's quota and returns when the request may
// be sent: at its turn and no earlier than minDelay from now.
//
// Two cases charge it again before it is sent. A hold placed (by any process)
// while it waited for its turn or for minDelay: its booking predates the hold
// and would let it out during it, so it books again, past the hold, for as
// long as holds keep coming and ctx allows (a booking past ctx's deadline
// fails with a *LimitedError naming the hold). And a fixed-window limit whose
// window the request may not land in (see Options.WindowGuard): it is charged
// again in the window it will land in, at most maxRebook times, then it fails
// with a *LimitedError naming that limit. Either way it is never sent during a
// hold or in a window it was not charged in.
func (t *Transport) acquireAll(ctx context.Context, cs []Charge, minDelay time.Duration) ([]charge, error) {
	out := make([]charge, len(cs))
	for i, c := range cs {
		var err error
		if out[i], err = t.acquire(ctx, c.Quota, c.Cost, minDelay); err != nil {
			return out, err
		}
	}
	return out, nil
}

func (t *Transport) acquire(ctx context.Context, q limiter.Quota, cost limiter.Cost, minDelay time.Duration) (charge, error) {
	c := charge{ends: map[string]windowEnd{}}
	b, err := t.book(ctx, q, cost, minDelay)
	for edges := 0; err == nil; {
		if b.held > 0 {
			// Each booking waits out the hold it finds (Redis books past it),
			// so this loop sleeps, never spins; ctx ends it.
			t.stats.rebooked.Add(1)
			clear(c.ends)
			b, err = t.book(ctx, q, cost, 0)
			continue
		}
		for name, e := range b.ends {
			c.ends[name] = e
		}
		fixed, at := t.late(q, cost, c, time.Now())
		if fixed == nil {
			return c, nil
		}
		if edges == maxRebook {
			return c, &LimitedError{Quota: q.Name, DeniedBy: firstLimit(q, fixed), RetryAfter: time.Until(at)}
		}
		edges++
		if err := sleep(ctx, time.Until(at)); err != nil {
			return c, err
		}
		t.stats.rebooked.Add(1)
		b, err = t.book(ctx, q, fixed, 0)
	}
	return c, err
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

// booking is one charge book made.
type booking struct {
	// held, when > 0, is how long a hold found in place after the wait still
	// lasts: the request must not go out now.
	held time.Duration
	// ends are the window ends of the fixed-window limits charged.
	ends map[string]windowEnd
}

// book takes cost from q, at once (FailFast) or at the earliest turn before
// ctx's deadline, and returns after that turn and minDelay.
func (t *Transport) book(ctx context.Context, q limiter.Quota, cost limiter.Cost, minDelay time.Duration) (booking, error) {
	if t.opts.FailFast {
		if err := sleep(ctx, minDelay); err != nil {
			return booking{}, err
		}
		sent := time.Now()
		res, err := t.lim.AllowQuota(ctx, q, cost)
		if err != nil {
			return booking{}, fmt.Errorf("middleware: quota %q: %w", q.Name, err)
		}
		if !res.Allowed {
			return booking{}, &LimitedError{Quota: q.Name, DeniedBy: res.DeniedBy, RetryAfter: res.RetryAfter}
		}
		return booking{ends: windowEnds(q, res, sent, time.Now(), time.Time{})}, nil
	}
	sent := time.Now()
	res, err := t.lim.ReserveQuota(ctx, q, cost)
	if err != nil {
		return booking{}, fmt.Errorf("middleware: quota %q: %w", q.Name, err)
	}
	if !res.OK() {
		qr := res.QuotaResult()
		return booking{}, &LimitedError{Quota: q.Name, DeniedBy: qr.DeniedBy, RetryAfter: qr.RetryAfter, Err: limiter.ErrWouldExceedDeadline}
	}
	now := time.Now()
	b := booking{ends: windowEnds(q, res.QuotaResult(), sent, now, res.At())}
	d := res.DelayFrom(now)
	if err := sleep(ctx, max(d, minDelay)); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
		defer cancel()
		_, _ = res.Cancel(cctx) // gives the turn back if it has not come
		return booking{}, err
	}
	if max(d, minDelay) > 0 {
		// We waited after booking (for our turn, or a retry's backoff); a hold
		// may have been placed since. Held reads it (one PTTL) without writing.
		h, err := t.lim.Held(ctx, limiter.Quota{Name: q.Name})
		if err == nil && h > time.Millisecond {
			b.held = h
		}
	}
	return b, nil
}

// windowEnds reads from res, a decision sent at sent and answered at
// replied, when the window of each fixed-window limit it charged ends. at is
// the grant's time on Redis's clock (Reservation.At), zero when unknown: then
// Redis's window end is taken as the multiple of the period nearest its local
// estimate (exact while the clocks differ by less than half a period). A
// decision made without Redis (res.Degraded) has only the local clock.
func windowEnds(q limiter.Quota, res limiter.QuotaResult, sent, replied, at time.Time) map[string]windowEnd {
	var ends map[string]windowEnd
	for _, lr := range res.Limits {
		if lr.Limit.Algorithm != limiter.FixedWindow {
			continue
		}
		p := lr.Limit.Period
		e := windowEnd{first: sent.Add(lr.ResetAfter), last: replied.Add(lr.ResetAfter), period: p}
		switch {
		case res.Degraded:
			e.next = time.UnixMicro((sent.UnixMicro()/p.Microseconds() + 1) * p.Microseconds())
			e.first, e.last = e.next, e.next
		case !at.IsZero():
			e.next = time.UnixMicro((at.UnixMicro()/p.Microseconds() + 1) * p.Microseconds())
		default:
			e.next = time.UnixMicro(e.first.Add(p/2).UnixMicro() / p.Microseconds() * p.Microseconds())
		}
		if ends == nil {
			ends = map[string]windowEnd{}
		}
		ends[lr.Name] = e
	}
	return ends
}

// late returns the part of cost charged to fixed-window limits whose window
// may end before a request sent now lands (now + WindowGuard), and when every
// such window has surely ended: then a new charge counts in a later window.
func (t *Transport) late(q limiter.Quota, cost limiter.Cost, c charge, now time.Time) (limiter.Cost, time.Time) {
	var fixed limiter.Cost
	at := now
	land := now.Add(t.opts.WindowGuard)
	for _, nl := range q.Limits {
		e, ok := c.ends[nl.Name]
		if !ok || cost[nl.Name] <= 0 || land.Before(e.first) {
			continue
		}
		if fixed == nil {
			fixed = limiter.Cost{}
		}
		fixed[nl.Name] = cost[nl.Name]
		if e.last.After(at) {
			at = e.last
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
