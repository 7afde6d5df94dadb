package limiter

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redquota/redquota/scripts"
)

// Reservation is a booking of units at a time that may lie in the future, made
// in Redis by Reserve or ReserveQuota. Until that time comes, Cancel gives the
// units back.
type Reservation struct {
	lim  *Limiter
	plan *plan
	rep  *reply
	act  time.Time // local time at which the reservation may act

	mu        sync.Mutex
	cancelled bool
}

// OK reports whether the units were booked. A reservation that is not OK
// would have had to wait past the context's deadline; nothing was charged.
func (r *Reservation) OK() bool { return r.rep.granted }

// Delay is how long to wait, from now, before acting on the reservation. When
// OK is false it is how long until the units would have fitted.
func (r *Reservation) Delay() time.Duration { return r.DelayFrom(time.Now()) }

// DelayFrom is Delay measured from t.
func (r *Reservation) DelayFrom(t time.Time) time.Duration {
	d := r.act.Sub(t)
	if d < 0 {
		return 0
	}
	return d
}

// At is the time of the booking on Redis's clock (the clock every process
// shares): when the units are taken. For a fixed window it tells which window
// they count in. Zero when the reservation is not OK or was decided without Redis.
func (r *Reservation) At() time.Time {
	if !r.rep.granted || r.rep.degraded || r.rep.grantUS == 0 {
		return time.Time{}
	}
	return time.UnixMicro(r.rep.grantUS)
}

// Result is the decision on a single-key reservation.
func (r *Reservation) Result() Result { return r.rep.single(r.plan.limits[0]) }

// QuotaResult is the decision on a quota reservation; RetryAfter of a
// granted reservation is 0 — use Delay for the wait.
func (r *Reservation) QuotaResult() QuotaResult { return r.rep.quota(r.plan) }

// Cancel gives the reserved units back if the reservation has not come due
// and is still the last booking of each limit (giving back past a later
// booking could let a newcomer share its slot). It is safe to call more than
// once; only the first call acts.
func (r *Reservation) Cancel(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelled || !r.rep.granted || !time.Now().Before(r.act) {
		r.cancelled = true
		return nil
	}
	r.cancelled = true
	if r.rep.degraded {
		// Decided without Redis: give back what the local limiters booked
		// (FailLocal; nothing under FailOpen).
		for _, rv := range r.rep.local {
			rv.Cancel()
		}
		return nil
	}
	p := r.plan
	if len(r.rep.prior) != priorLen*p.n {
		// Every granted reservation's reply carries them (parseReply checked).
		return fmt.Errorf("%w: reservation has no prior states to restore", ErrBadReply)
	}
	args := make([]any, 0, 1+(4+priorLen)*p.n)
	args = append(args, r.rep.grantUS)
	for i, lim := range p.limits[:p.n] {
		args = append(args, lim.Algorithm.script(), lim.periodUS(), p.costs[i], r.rep.per[i].mark)
		args = append(args, r.rep.prior[priorLen*i:priorLen*(i+1)]...)
	}
	ks := make([]string, p.n)
	for i, k := range p.keys[:p.n] {
		ks[i] = k.key
	}
	if err := scripts.Cancel.Run(ctx, r.lim.client, ks, args...).Err(); err != nil {
		return fmt.Errorf("limiter: cancel.lua: %w", err)
	}
	return nil
}

// Reserve books n units of limit under key at the earliest time they fit, as
// long as that time is before ctx's deadline (any time when ctx has none). The
// reservation's Delay says how long to wait before acting.
func (l *Limiter) Reserve(ctx context.Context, key string, limit Limit, n int) (*Reservation, error) {
	p := new(plan)
	if err := l.single(p, key, limit, n); err != nil {
		return nil, err
	}
	return l.reserveSpan(ctx, p)
}

// ReserveQuota books cost from every limit of q, all or nothing, at the
// earliest time all of it fits, as long as that time is before ctx's deadline.
func (l *Limiter) ReserveQuota(ctx context.Context, q Quota, cost Cost) (*Reservation, error) {
	p := new(plan)
	if err := l.quota(p, q, cost); err != nil {
		return nil, err
	}
	return l.reserveSpan(ctx, p)
}

func kindOf(p *plan) int {
	if p.quota != "" {
		return kindQuota
	}
	return kindSingle
}

func (l *Limiter) reserveSpan(ctx context.Context, p *plan) (*Reservation, error) {
	ctx, span := l.start(ctx, spanReserve, kindOf(p), p)
	r, err := l.reserve(ctx, p)
	var rep *reply
	if r != nil {
		rep = r.rep
	} else {
		rep = new(reply)
	}
	end(span, p, rep, err)
	return r, err
}

func (l *Limiter) reserve(ctx context.Context, p *plan) (*Reservation, error) {
	maxWait := noDeadline
	if dl, ok := ctx.Deadline(); ok {
		maxWait = time.Until(dl).Microseconds()
		if maxWait <= 0 {
			// The deadline has passed even if ctx has not noticed yet.
			return nil, context.DeadlineExceeded
		}
	}
	start := time.Now()
	rep := new(reply)
	err := l.decide(ctx, p, maxWait, rep)
	l.count(ctx, kindOf(p), rep, err)
	if err != nil {
		return nil, err
	}
	// The delay counts from Redis's clock at the decision; measuring it from the
	// moment the call was sent can only make us act later, never early.
	act := start.Add(us(rep.waitUS))
	if rep.granted {
		act = time.Now().Add(us(rep.waitUS))
	}
	return &Reservation{lim: l, plan: p, rep: rep, act: act}, nil
}
