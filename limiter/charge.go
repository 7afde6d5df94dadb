package limiter

import (
	"context"
	"fmt"
	"sort"
)

// Several quotas per call.
//
// A charge that takes nothing from its quota (a quota without limits with an
// empty cost, or a cost of 0 on each of its limits) charges nothing: the call
// only waits for the quota's hold (a call the server does not count but that
// must not go out while the quota is held). Its hold is that of every quota
// of the same Name, Group and For key. A call must charge something unless
// all its quotas are without limits (ErrInvalid).
//
// Charges whose quotas share a Group (or are one quota instance) live in one
// Redis Cluster slot and are decided in one script call: all or nothing,
// atomically. Charges across groups cannot be: each group is booked in turn,
// in a stable order (by the groups' keys), every group at one time, and when
// a later group is refused (or fails) the groups already booked are given
// back (Cancel, even though their time may have come: their units were not
// used). Between the booking of one group and the giving back, another
// caller may find the first group's units taken: compensation can refuse a
// call that an atomic charge would have let through, never the reverse.

// Allow takes every charge now, all or nothing, or takes nothing and
// reports how long until the charges would fit. Waiters that reserved
// earlier are served first: Allow does not jump the queue. Charges across
// groups follow the compensation above; the limits of the groups after a
// refused one are missing from the result.
//
// lim.Allow(ctx, limiter.Key(key, limit).Take(n)) takes n units of limit
// under key (Charge{Quota: Key(key, limit)}: one unit). That single-key
// decision is one short script call.
//
// A ctx already cancelled or past its deadline takes nothing: its error is
// returned, and nothing is sent to Redis.
func (l *Limiter) Allow(ctx context.Context, charges ...Charge) (Result, error) {
	if len(charges) == 1 && charges[0].plain() {
		return l.allowKey(ctx, charges[0])
	}
	var p plan
	ps, err := l.plans(&p, charges)
	if err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err // the caller has gone: charge nothing
	}
	if ps == nil {
		return l.allowPlan(ctx, &p)
	}
	// Across groups: each group's charge is a booking of at most 1µs ahead,
	// which can be given back if a later group refuses.
	r, err := l.reserveGroups(ctx, ps, 1)
	if r == nil {
		return Result{}, err
	}
	// A refusal: r holds every group's decision up to the refused one.
	return r.Result(), nil
}

// allowKey decides a single key's charge.
func (l *Limiter) allowKey(ctx context.Context, c Charge) (Result, error) {
	var p plan
	limit, _ := c.Quota.keyLimit()
	if err := l.single(&p, c.Quota.Name, limit, c.each()); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err // the caller has gone: charge nothing
	}
	ctx, span := l.start(ctx, spanAllow, kindSingle, &p)
	var r reply
	var err error
	if l.coalesce != nil && limit.Algorithm == GCRA {
		err = l.coalesced(ctx, &p, &r)
	} else {
		err = l.decide(ctx, &p, 0, &r)
	}
	l.count(ctx, kindSingle, &r, err)
	end(span, &p, &r, err)
	if err != nil {
		return Result{}, err
	}
	return r.result(&p), nil
}

func (l *Limiter) allowPlan(ctx context.Context, p *plan) (Result, error) {
	ctx, span := l.start(ctx, spanAllowQuota, kindQuota, p)
	var r reply
	err := l.decide(ctx, p, 0, &r)
	l.count(ctx, kindQuota, &r, err)
	end(span, p, &r, err)
	if err != nil {
		return Result{}, err
	}
	return r.result(p), nil
}

// Reserve books every charge at the earliest time all of it fits, all or
// nothing, as long as that time is before ctx's deadline (any time when ctx
// has none). The reservation's Delay says how long to wait before acting,
// and its Wait waits.
//
// When the charges would fit only after ctx's deadline, nothing is charged
// and the error wraps ErrWouldExceedDeadline; the reservation returned with
// it is not OK and tells, through Delay and Result, when they would have
// fitted. On any other error the reservation is nil, and its methods are
// safe to call: OK is false, Cancel gives back nothing (so a deferred Cancel
// needs no check), Wait and Sync return an error wrapping ErrInvalid. A ctx already cancelled
// or past its deadline books nothing: its error is returned, and nothing is
// sent to Redis.
func (l *Limiter) Reserve(ctx context.Context, charges ...Charge) (*Reservation, error) {
	p := new(plan)
	if len(charges) == 1 && charges[0].plain() {
		c := charges[0]
		limit, _ := c.Quota.keyLimit()
		if err := l.single(p, c.Quota.Name, limit, c.each()); err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err // the caller has gone: book nothing
		}
		return l.reserveSpan(ctx, p)
	}
	ps, err := l.plans(p, charges)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err // the caller has gone: book nothing
	}
	if ps == nil {
		return l.reserveSpan(ctx, p)
	}
	mw, err := maxWait(ctx)
	if err != nil {
		return nil, err
	}
	return l.reserveGroups(ctx, ps, mw)
}

// Wait blocks until every charge is taken, all or nothing: Reserve, then
// the reservation's Wait. It books its turn in Redis in the same call that
// checks, then sleeps exactly until it: no polling, and waiters across
// processes are served first come first served. Most callers should use
// Wait.
//
// It returns at once, charging nothing, when a cost exceeds what its limit
// can ever allow (ErrInvalid) or when its turn would come after ctx's
// deadline (ErrWouldExceedDeadline). If ctx is cancelled while it sleeps,
// the booking is given back and ctx's error returned.
func (l *Limiter) Wait(ctx context.Context, charges ...Charge) error {
	p := new(plan)
	if len(charges) == 1 && charges[0].plain() {
		c := charges[0]
		limit, _ := c.Quota.keyLimit()
		if err := l.single(p, c.Quota.Name, limit, c.each()); err != nil {
			return err
		}
		return l.wait(ctx, p)
	}
	ps, err := l.plans(p, charges)
	if err != nil {
		return err
	}
	if ps == nil {
		return l.wait(ctx, p)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	mw, err := maxWait(ctx)
	if err != nil {
		return err
	}
	r, err := l.reserveGroups(ctx, ps, mw)
	if err != nil {
		return err
	}
	return r.Wait(ctx)
}

// plans plans charges into p when they all share one slot, and returns nil;
// otherwise it returns one plan per slot, ordered by slot head.
func (l *Limiter) plans(p *plan, charges []Charge) ([]*plan, error) {
	if len(charges) == 0 {
		return nil, fmt.Errorf("%w: no charge", errInvalidCost)
	}
	var ps []*plan
	for _, c := range charges {
		if err := c.Quota.validateID(); err != nil {
			return nil, err
		}
		head := l.keyFor(keyID{group: c.Quota.Group, quota: c.Quota.Name, key: c.Quota.key, keyed: c.Quota.keyed, kind: holdEntry}).head
		if ps == nil && (p.nq == 0 || p.head() == head) {
			if err := l.addQuota(p, c); err != nil {
				return nil, err
			}
			continue
		}
		if ps == nil {
			// A copy, not p: p stays the caller's (on its stack, for the
			// one-slot case that is every plain call).
			first := new(plan)
			*first = *p
			ps = []*plan{first}
		}
		var into *plan
		for _, q := range ps {
			if q.head() == head {
				into = q
			}
		}
		if into == nil {
			into = new(plan)
			ps = append(ps, into)
		}
		if err := l.addQuota(into, c); err != nil {
			return nil, err
		}
	}
	// A call must charge something, unless only quotas without limits are in it.
	charged, limited := 0, false
	for _, c := range charges {
		limited = limited || len(c.Quota.limits()) > 0
	}
	if ps == nil {
		charged = p.n
	}
	for _, q := range ps {
		charged += q.n
	}
	if charged == 0 && limited {
		return nil, fmt.Errorf("%w: the charges take nothing", errInvalidCost)
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].head() < ps[j].head() })
	return ps, nil
}

// reserveGroups books each plan (one per slot) in turn, all at one time: a
// group booked for a later time than those before it makes them book again
// not before it. On a refusal or an error it gives back what it booked.
func (l *Limiter) reserveGroups(ctx context.Context, ps []*plan, maxWaitUS int64) (*Reservation, error) {
	parts := make([]*Reservation, len(ps))
	var nb int64
	for range len(ps) + 1 {
		moved := false
		for i, p := range ps {
			if maxWaitUS > 1 {
				// Allow's (maxWaitUS 1) are all due at once, and never
				// moved: a time read on one node's clock, checked against a
				// node whose clock is a little behind, would refuse them.
				p.notBefore = nb
			}
			b, err := l.book(ctx, p, maxWaitUS)
			p.notBefore = 0
			if err == nil && !b.rep.granted {
				err = fmt.Errorf("%w: quota %q would wait %s", ErrWouldExceedDeadline, p.qname(0), us(b.rep.waitUS))
			}
			if err != nil {
				undo(ctx, parts[:i])
				if b == nil {
					return nil, err
				}
				parts[i] = b
				r := &Reservation{lim: l, parts: parts[:i+1]}
				r.sync()
				return r, err
			}
			parts[i] = b
			if t := b.rep.grantUS; t > nb && !b.rep.degraded {
				// A later time than the groups before it: they must move to it
				// (a group due at once is not moved: its time is only how late
				// its call ran, as for any grant).
				// Allow's bookings (maxWaitUS 1) are all due at once.
				moved = moved || i > 0 && b.rep.waitUS > 0 && maxWaitUS > 1
				nb = t
			}
		}
		if !moved {
			r := &Reservation{lim: l, parts: parts}
			r.sync()
			return r, nil
		}
		undo(ctx, parts)
	}
	return nil, fmt.Errorf("%w: the groups found no common time", ErrWouldExceedDeadline)
}

// undo gives back bookings made for a charge across groups that did not go
// through, even if their time has come (their units were not used).
func undo(ctx context.Context, parts []*Reservation) {
	for _, b := range parts {
		if b == nil {
			continue
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
		_, _ = b.cancelOne(cctx, true)
		cancel()
	}
}
