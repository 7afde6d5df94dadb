package limiter

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// cancelTimeout bounds the call that gives a reservation back after the
// caller's context was cancelled (that context can no longer carry it).
const cancelTimeout = time.Second

// maxWakes bounds the wake-ups of one Wait: each one after the first found a
// hold placed while it slept (or a later group's booking) and booked again
// after it; a hold only grows, so this is never reached in practice.
const maxWakes = 64

func (l *Limiter) wait(ctx context.Context, p *plan) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	kind := kindOf(p)
	ctx, span := l.start(ctx, spanWait, kind, p)
	var r *Reservation
	defer func() {
		rep := new(reply)
		if r != nil {
			rep = r.rep
		}
		end(span, p, rep, err)
	}()
	r, err = l.reserve(ctx, p)
	if err != nil {
		return err
	}
	start := time.Now()
	err = r.Wait(ctx)
	if err == nil {
		l.recordWait(ctx, kind, time.Since(start), span)
	}
	return err
}

// Wait sleeps until the reservation's time and takes its units. If, while
// it slept, a hold was placed on any of its quotas (Limiter.Hold: a 429 or
// 418 seen by any process), it books again after the hold in one script call
// that reads the hold's end to the microsecond on Redis's clock, gives the
// old booking back (as Cancel would) and charges once, then sleeps again. It
// returns only once Redis's clock has reached the booking and no hold on its
// quotas ends after it: a request sent after Wait returns is never sent
// inside a hold. The same call books again a FixedWindow booking woken
// within its quota's Guard of its window's end, or past it (a late timer, a
// descheduled process), outside the guard. A booking that was due at once
// (Delay 0 when it was made) costs no second call, unless the local clock
// says it may have drifted into its guard since.
//
// If booking again would pass ctx's deadline, the booking is given back and
// the error wraps ErrWouldExceedDeadline; if ctx is cancelled while it
// sleeps, the booking is given back and ctx's error returned. Wait on a
// reservation that is not OK returns an error wrapping ErrWouldExceedDeadline;
// on one given back (Cancel before its time, or a Wait that failed), an error
// wrapping ErrInvalid at once: its units are no longer charged.
func (r *Reservation) Wait(ctx context.Context) error {
	if r.none() {
		return errNilReservation
	}
	if !r.OK() {
		return fmt.Errorf("%w: would wait %s", ErrWouldExceedDeadline, us(r.rep.waitUS))
	}
	if r.givenBack() {
		return errGivenBack
	}
	for range maxWakes {
		if d := r.Delay(); d > 0 {
			if dl, ok := ctx.Deadline(); ok && r.act.After(dl) {
				// Redis booked a turn before the deadline on its clock, but the
				// reply came back late enough that, counted from now, the turn
				// lies past it. The booking is still in the future, so Cancel
				// gives it back; fail now rather than sleep until the deadline
				// and be charged for nothing.
				r.cancelDetached(ctx)
				return fmt.Errorf("%w: would wait %s", ErrWouldExceedDeadline, d)
			}
		}
		// A pending booking is checked a round trip ahead of its time, so
		// that the answer comes back about when the turn does.
		var lead time.Duration
		if r.pending() {
			lead = r.lead()
		}
		if err := r.sleep(ctx, r.Delay()-lead); err != nil {
			return err
		}
		if r.givenBack() {
			return errGivenBack // a Cancel while it slept
		}
		if !r.pending() && !r.tooLate(time.Now()) {
			// Due when it was made (even if a late reply brought it back
			// after the deadline), or confirmed by a wake-up: take it once
			// its time has come, as x/time/rate's WaitN takes a zero delay.
			if err := r.sleep(ctx, r.Delay()); err != nil {
				return err
			}
			if r.givenBack() {
				return errGivenBack
			}
			return nil
		}
		if _, err := r.wake(ctx); err != nil {
			if !errors.Is(err, ErrWouldExceedDeadline) {
				// The call failed (ctx ended at the turn, Options.Timeout, an
				// outage): the units will not be used, and by the time a
				// caller could Cancel, the turn has passed. Give them back now.
				r.abandon(ctx)
			}
			return err
		}
	}
	r.cancelDetached(ctx)
	return fmt.Errorf("%w: booked again %d times", ErrWouldExceedDeadline, maxWakes)
}

// errGivenBack is the error of a Wait of a reservation Cancel was called on
// before its time (whether or not Redis took the units back: a Cancel that
// failed leaves them charged, and Wait still cannot take them).
var errGivenBack = fmt.Errorf("%w: Wait of a reservation Cancel was called on", ErrInvalid)

// maxLead bounds how early a wake-up is sent, and so how far ahead of its
// booking a wake-up may find it standing and let Wait sleep the rest without
// asking again: no more than a request's own round trip leaves a hold placed
// meanwhile unseen, as it would a hold placed while the request is in flight.
const maxLead = 5 * time.Millisecond

// lead is how early r's wake-up is sent: the round trip of its booking,
// at most maxLead.
func (r *Reservation) lead() time.Duration {
	var l time.Duration
	for _, b := range r.each() {
		l = max(l, b.rtt)
	}
	return min(l, maxLead)
}

// sleep sleeps d; if ctx ends first it gives r back and returns ctx's error.
func (r *Reservation) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-r.givenCh():
		return nil // Cancel gave it back: Wait says so
	case <-ctx.Done():
		r.cancelDetached(ctx)
		return ctx.Err()
	}
}

// pending reports whether a booking of r lies in the future on Redis's clock
// and has not been confirmed by a wake-up.
func (r *Reservation) pending() bool {
	for _, b := range r.each() {
		if b.rep.granted && !b.rep.degraded && b.rep.waitUS > 0 {
			return true
		}
	}
	return false
}

// tooLate reports whether a booking of r due when it was made may by now
// fall within its quota's Guard of (or past) the end of its fixed window,
// had this process been descheduled since the reply: Redis's clock is
// estimated as the grant time plus the local time since the reply (short by
// half a round trip, which is what the guard covers). Then Wait asks the
// script, which decides on Redis's clock.
func (r *Reservation) tooLate(now time.Time) bool {
	for _, b := range r.each() {
		if !b.rep.granted || b.rep.degraded || b.rep.grantUS == 0 {
			continue
		}
		est := b.rep.grantUS + now.Sub(b.act).Microseconds()
		p := b.plan
		for i, lim := range p.limits[:p.n] {
			if lim.Algorithm != FixedWindow {
				continue
			}
			per := lim.periodUS()
			if est+p.guards[i] >= (b.rep.grantUS/per+1)*per {
				return true
			}
		}
	}
	return false
}

// abandon gives back every booking of r after a failed wake-up, come due or
// not (force: its units were never used), with a context of its own, and
// marks r cancelled so that a later Cancel does nothing.
func (r *Reservation) abandon(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelled {
		return
	}
	r.markGivenBack()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
	defer cancel()
	_, _ = r.giveBack(cctx, true)
}

// cancelDetached gives r back with a context of its own (ctx may be done).
func (r *Reservation) cancelDetached(ctx context.Context) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
	defer cancel()
	_, _ = r.Cancel(cctx)
}

// wake sends each pending booking's wake-up (wake.lua), not before the
// latest booking time. It reports done when every booking stands and has
// come on Redis's clock. A booking moved (after a hold, or to the time of a
// later group's booking) is replaced by its new one, and the caller sleeps
// again. A booking that would now pass ctx's deadline was given back by its
// wake-up; the others are given back too, and the error wraps
// ErrWouldExceedDeadline.
func (r *Reservation) wake(ctx context.Context) (bool, error) {
	mw, err := maxWait(ctx)
	if err != nil {
		// The deadline came as the turn did: check the holds all the same, on
		// a context of its own, booking again only for at once (1 µs: a
		// booking, with what Cancel needs, rather than an Allow).
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
		defer cancel()
		mw = 1
	}
	parts := r.each()
	var nb int64
	for _, b := range parts {
		nb = max(nb, b.rep.grantUS)
	}
	done := true
	for round := 0; round <= len(parts); round++ {
		moved := false
		for _, b := range parts {
			if b.rep.degraded {
				continue
			}
			b.plan.wake, b.plan.notBefore = b.rep, nb
			nb2, err := r.lim.book(ctx, b.plan, mw)
			b.plan.wake, b.plan.notBefore = nil, 0
			if err != nil {
				return false, err
			}
			rep := nb2.rep
			switch {
			case rep.standing:
				// Its turn comes in rep.waitUS on Redis's clock. Within the
				// lead, Wait sleeps the rest; woken earlier than that (a
				// clock or timer far off), it checks again.
				b.act = nb2.act
				if us(rep.waitUS) <= maxLead {
					b.rep.waitUS = 0
				} else {
					done = false
				}
			case !rep.granted:
				// The wake-up gave the booking back; give back the others.
				b.rep = rep
				for _, o := range parts {
					if o != b {
						cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
						_, _ = o.cancelOne(cctx, true)
						cancel()
					}
				}
				if r.parts != nil {
					r.rep = r.parts[0].rep
				}
				return false, fmt.Errorf("%w: booked again after a hold, would wait %s", ErrWouldExceedDeadline, us(rep.waitUS))
			default:
				b.rep, b.act, b.rtt, done = rep, nb2.act, nb2.rtt, false
				if rep.grantUS > nb {
					nb, moved = rep.grantUS, true
				}
			}
		}
		if !moved {
			break
		}
	}
	r.sync()
	return done, nil
}

// sync brings a reservation across groups up to date with its parts.
func (r *Reservation) sync() {
	if r.parts == nil {
		return
	}
	r.plan, r.rep, r.act = r.parts[0].plan, r.parts[0].rep, r.parts[0].act
	for _, b := range r.parts[1:] {
		if b.act.After(r.act) {
			r.act = b.act
		}
	}
}
