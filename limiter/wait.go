package limiter

import (
	"context"
	"fmt"
	"time"
)

// cancelTimeout bounds the call that gives a reservation back after the
// caller's context was cancelled (that context can no longer carry it).
const cancelTimeout = time.Second

// Wait is shorthand for WaitN(ctx, key, limit, 1).
func (l *Limiter) Wait(ctx context.Context, key string, limit Limit) error {
	return l.WaitN(ctx, key, limit, 1)
}

// WaitN blocks until n units of limit under key are taken. It books its turn
// in Redis in the same call that checks, then sleeps exactly until it: no
// polling, and waiters across processes are served first come first served.
//
// It returns at once, charging nothing, when n exceeds what the limit can
// ever allow (ErrExceedsLimit) or when its turn would come after ctx's
// deadline (ErrWouldExceedDeadline). If ctx is cancelled while it sleeps, the
// booking is given back and ctx's error returned.
func (l *Limiter) WaitN(ctx context.Context, key string, limit Limit, n int) error {
	p := new(plan)
	if err := l.single(p, key, limit, n); err != nil {
		return err
	}
	return l.wait(ctx, p)
}

// WaitQuota blocks until cost is taken from every limit of q, all or nothing,
// with WaitN's semantics.
func (l *Limiter) WaitQuota(ctx context.Context, q Quota, cost Cost) error {
	p := new(plan)
	if err := l.quota(p, q, cost); err != nil {
		return err
	}
	return l.wait(ctx, p)
}

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
	if !r.OK() {
		return fmt.Errorf("%w: would wait %s", ErrWouldExceedDeadline, us(r.rep.waitUS))
	}
	d := r.Delay()
	if d <= 0 {
		// The turn has come (even if a late reply brought it back after the
		// deadline): take it, as x/time/rate's WaitN takes a zero delay. It
		// cannot be given back any more, so failing would waste it.
		l.recordWait(ctx, kind, 0, span)
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && r.act.After(dl) {
		// Redis booked a turn before the deadline on its clock, but the reply
		// came back late enough that, counted from now, the turn lies past it.
		// The booking is still in the future, so Cancel gives it back; fail now
		// rather than sleep until the deadline and be charged for nothing.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
		defer cancel()
		_ = r.Cancel(cctx)
		return fmt.Errorf("%w: would wait %s", ErrWouldExceedDeadline, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	start := time.Now()
	select {
	case <-t.C:
		l.recordWait(ctx, kind, time.Since(start), span)
		return nil
	case <-ctx.Done():
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
		defer cancel()
		_ = r.Cancel(cctx)
		return ctx.Err()
	}
}
