package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redquota/redquota/limiter"
)

// acquire charges cs and returns once the request may be sent, with the
// reservation that charged it (nil with FailFast): after minDelay (a retry's
// backoff), at its turn, and outside every hold on its quotas. The limiter
// decides all of it on Redis's clock: Reserve books the turn (each fixed
// window guarded by the quota's Guard), and Reservation.Wait sleeps until it,
// booking again past any hold placed meanwhile. With Options.FailFast the
// charges are taken now or the request is refused.
func (t *Transport) acquire(ctx context.Context, cs []limiter.Charge, minDelay time.Duration) (*limiter.Reservation, error) {
	if err := sleep(ctx, minDelay); err != nil {
		return nil, err
	}
	if t.opts.FailFast {
		res, err := t.lim.Allow(ctx, cs...)
		if err != nil {
			return nil, fmt.Errorf("middleware: %w", err)
		}
		if !res.Allowed {
			return nil, rateLimited{&LimitedError{Quota: res.DeniedQuota, DeniedBy: res.DeniedBy, RetryAfter: res.RetryAfter}}
		}
		return nil, nil
	}
	r, err := t.lim.Reserve(ctx, cs...)
	if err != nil {
		return nil, limited(r, err)
	}
	if err := r.Wait(ctx); err != nil {
		return nil, limited(r, err)
	}
	return r, nil
}

// limited is err, a reservation's error, as a *LimitedError when the turn
// (or the turn after a hold) would come after the context's deadline.
func limited(r *limiter.Reservation, err error) error {
	if !errors.Is(err, limiter.ErrWouldExceedDeadline) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("middleware: %w", err)
	}
	le := &LimitedError{DeniedBy: limiter.HoldName, Err: limiter.ErrWouldExceedDeadline}
	if r != nil {
		qr := r.Result()
		le.Quota, le.RetryAfter = qr.DeniedQuota, qr.RetryAfter
		if qr.DeniedBy != "" {
			le.DeniedBy = qr.DeniedBy
		}
	}
	return rateLimited{le}
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
