package limiter

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redquota/redquota/internal/script"
)

// Reservation is a booking of units at a time that may lie in the future, made
// in Redis by Reserve. Wait sleeps until that time and takes the units;
// Cancel gives them back.
//
// A reservation across several groups (Reserve with quotas of different
// Groups) is one booking per group, all at one time. The zero Reservation
// behaves as the nil one a failed Reserve returns: no booking.
type Reservation struct {
	lim  *Limiter
	plan *plan
	rep  *reply
	act  time.Time     // local time at which the reservation may act
	rtt  time.Duration // the round trip of the call that made the booking
	// parts are the bookings of a reservation across groups, in booking order
	// (this one's plan and rep are parts[0]'s); nil for one group.
	parts []*Reservation
	one   [1]*Reservation // this reservation, for each

	mu        sync.Mutex
	cancelled bool
	gaveBack  bool          // Cancel (or a failed Wait) gave the booking back before its time
	given     chan struct{} // closed when gaveBack is set: ends a Wait's sleep
}

// none reports whether r is no booking: the nil reservation a failed Reserve
// returns, or a zero Reservation (not made by Reserve), which every method
// treats as the nil one.
func (r *Reservation) none() bool { return r == nil || r.rep == nil }

// each returns the reservation's bookings.
func (r *Reservation) each() []*Reservation {
	if r.parts != nil {
		return r.parts
	}
	return r.one[:]
}

// OK reports whether the units were booked. A reservation that is not OK
// would have had to wait past the context's deadline; nothing was charged.
func (r *Reservation) OK() bool {
	if r.none() {
		return false
	}
	for _, b := range r.each() {
		if !b.rep.granted {
			return false
		}
	}
	return true
}

// Delay is how long to wait, from now, before acting on the reservation. When
// OK is false it is how long until the units would have fitted.
func (r *Reservation) Delay() time.Duration {
	if r.none() {
		return 0
	}
	return r.delayFrom(time.Now())
}

// delayFrom is Delay measured from t.
func (r *Reservation) delayFrom(t time.Time) time.Duration {
	d := r.act.Sub(t)
	if d < 0 {
		return 0
	}
	return d
}

// at is the time of the booking on Redis's clock (the clock every process
// shares): when the units are taken. Zero when the reservation is not OK or
// was decided without Redis.
func (r *Reservation) at() time.Time {
	var at time.Time
	for _, b := range r.each() {
		if !b.rep.granted || b.rep.degraded || b.rep.grantUS == 0 {
			return time.Time{}
		}
		if t := time.UnixMicro(b.rep.grantUS); t.After(at) {
			at = t
		}
	}
	return at
}

// Result is the decision the reservation was booked with; RetryAfter of a
// granted reservation is 0 (Delay is its wait), and each fixed or counter
// limit's WindowEnd is the end of the window its units count in.
func (r *Reservation) Result() Result {
	q := Result{}
	if r.none() {
		return q
	}
	for _, b := range r.each() {
		b.rep.addTo(&q, b.plan)
	}
	return q
}

// Cancel gives back what it can of a reservation that has not come due, and
// reports how many units it gave back, summed over the charged limits (0 when
// nothing came back). What comes back follows x/time/rate's CancelAt: what
// bookings made after this one have not already claimed, per algorithm:
//   - every algorithm: all of it while this booking is still each limit's
//     last charge;
//   - GCRA: its cost less the units booked after it;
//   - SlidingWindow: all of it (its entry leaves the log);
//   - FixedWindow: all of it while its window is the latest one booked, none
//     once a later booking went to a later window (no grant can land in an
//     earlier window any more);
//   - SlidingWindowCounter: as FixedWindow, and also while its window is the
//     one before the latest (its units weigh on that one).
//
// A limit whose count Sync raised while the booking was pending gives
// nothing back (the server's count may rest on it). A reservation decided
// without Redis gives its local units back and reports 0. Cancel is safe to
// call more than once; only the first call acts. A reservation Cancel gave
// back before its time can no longer be waited for: its Wait returns an error
// wrapping ErrInvalid. A ctx already done (the usual reason to cancel) does
// not stop it: it gives back on a context of its own, bounded by a second.
func (r *Reservation) Cancel(ctx context.Context) (int, error) {
	if r.none() {
		return 0, nil
	}
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
		defer cancel()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelled || !r.OK() || !time.Now().Before(r.act) {
		r.cancelled = true
		return 0, nil
	}
	r.markGivenBack()
	return r.giveBack(ctx, false)
}

// markGivenBack records, under r.mu, that the booking is given back, and
// wakes a Wait sleeping on it.
func (r *Reservation) markGivenBack() {
	r.cancelled, r.gaveBack = true, true
	if r.given != nil {
		close(r.given)
	}
}

// givenBack reports whether the booking was given back before its time.
func (r *Reservation) givenBack() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gaveBack
}

// givenCh is closed once the booking is given back.
func (r *Reservation) givenCh() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.given == nil {
		r.given = make(chan struct{})
		if r.gaveBack {
			close(r.given)
		}
	}
	return r.given
}

// wasCancelled reports whether Cancel was called: a booking it may have
// given back must not be taken for one the server counted (its count would
// lower ours by its units once more), so Sync then only raises.
func (r *Reservation) wasCancelled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancelled
}

// giveBack cancels every booking of r; force gives back even bookings that
// have come due (their units were not used).
func (r *Reservation) giveBack(ctx context.Context, force bool) (int, error) {
	total := 0
	var first error
	for _, b := range r.each() {
		n, err := b.cancelOne(ctx, force)
		total += n
		if err != nil && first == nil {
			first = err
		}
	}
	return total, first
}

// cancelOne gives back one group's booking.
func (r *Reservation) cancelOne(ctx context.Context, force bool) (int, error) {
	if !r.rep.granted {
		return 0, nil
	}
	if r.rep.degraded {
		// Decided without Redis: give back what the local limiters booked
		// (FailLocal; nothing under FailOpen).
		for _, rv := range r.rep.local {
			rv.Cancel()
		}
		return 0, nil
	}
	p := r.plan
	if p.n == 0 {
		return 0, nil // only waited for a hold: nothing was charged
	}
	forced := "0"
	if force {
		forced = "1"
	}
	args := make([]any, 0, 3+(4+bookingLen)*p.n)
	args = append(args, r.rep.grantUS, forced, r.lim.dedupeMS)
	for i, lim := range p.limits[:p.n] {
		args = append(args, lim.Algorithm.script(), lim.periodUS(), lim.intervalUS(), p.costs[i])
		for _, x := range r.rep.per[i].booking {
			args = append(args, x)
		}
	}
	ks := make([]string, 1+p.n)
	ks[0] = r.lim.tokenKey(p.holds[0]).(string) // a string, boxed
	for i, k := range p.keys[:p.n] {
		ks[1+i] = k.key
	}
	v, err := r.lim.scriptInt(ctx, "cancel", script.Cancel, ks, args...)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, fmt.Errorf("%w: cancel.lua gave back %d units", ErrBadReply, v)
	}
	return int(v), nil
}

// Sync raises the count of the charged limit named limit to used, what the
// server reports it has counted in its answer to the request this
// reservation charged (a usage header such as X-MBX-USED-WEIGHT-1m), only
// while that charge still counts on Redis's clock: for FixedWindow and
// SlidingWindowCounter limits while Redis's current window is the one the
// reservation was charged in, for GCRA and SlidingWindow within Period of the
// charge. It never lowers the count (but see Limit.Lowers: such a limit's
// count may go down, to used plus the units of the window's other bookings
// that may still reach the server, and used 0 is a count), and reports
// whether it raised it. With
// several quotas charging limits of one name, it is the first one's, in
// charge order within a Group (and, across groups, groups by key order),
// unless quota names the quota whose limit it is ("" for any; a Key's
// limit has no name: Sync(ctx, "", "", used)).
// used above the limit is taken as the limit. A reservation decided without
// Redis syncs nothing.
func (r *Reservation) Sync(ctx context.Context, quota, limit string, used int) (bool, error) {
	if r.none() {
		return false, errNilReservation
	}
	if used < 0 {
		return false, fmt.Errorf("%w: used %d must be ≥ 0", errInvalidCost, used)
	}
	for _, b := range r.each() {
		p := b.plan
		for i := range p.n {
			if p.names[i] != limit || (quota != "" && p.qname(int(p.of[i])) != quota) {
				continue
			}
			if !b.rep.granted || b.rep.degraded || b.rep.grantUS == 0 {
				return false, nil
			}
			if id := b.rep.per[i].booking[0]; p.limits[i].Lowers && id > 0 && !r.wasCancelled() {
				return r.lim.syncLower(ctx, p.keys[i].key, p.limits[i], used, b.rep.grantUS, id, p.costs[i])
			}
			if used == 0 {
				return false, nil
			}
			var outside string
			if p.outside[i] != nil {
				outside = p.outside[i].key
			}
			return r.lim.sync(ctx, p.keys[i].key, p.limits[i], used, b.rep.grantUS, outside, p.headroom[i])
		}
	}
	return false, fmt.Errorf("%w: %q (quota %q) is not a limit this reservation charged", errUnknownLimit, limit, quota)
}

// Refused tells the limiter that the server refused the request this
// reservation charged (a 429 or 418): for the limits that keep headroom for
// clients outside the fleet (Quota.Headroom), its units, counted as the
// fleet's, were never counted by the server. Compared with the server's
// counts, they would hide as much of what others spent, and leave the
// headroom too small, which draws more refusals. It changes no count, and
// calls Redis only for such limits, while the charge's window lasts.
func (r *Reservation) Refused(ctx context.Context) error {
	if r.none() {
		return nil
	}
	for _, b := range r.each() {
		p := b.plan
		if p.nOutside == 0 || !b.rep.granted || b.rep.degraded || b.rep.grantUS == 0 {
			continue
		}
		for i := range p.n {
			if p.outside[i] == nil {
				continue
			}
			if err := r.lim.refused(ctx, p.keys[i].key, p.limits[i], p.costs[i], b.rep.grantUS, p.outside[i].key, p.headroom[i]); err != nil {
				return err
			}
		}
	}
	return nil
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

// maxWait is how far ahead, in µs, ctx lets a booking lie.
func maxWait(ctx context.Context) (int64, error) {
	if dl, ok := ctx.Deadline(); ok {
		w := time.Until(dl).Microseconds()
		if w <= 0 {
			// The deadline has passed even if ctx has not noticed yet.
			return 0, context.DeadlineExceeded
		}
		return w, nil
	}
	return noDeadline, nil
}

func (l *Limiter) reserve(ctx context.Context, p *plan) (*Reservation, error) {
	mw, err := maxWait(ctx)
	if err != nil {
		return nil, err
	}
	r, err := l.book(ctx, p, mw)
	if err != nil {
		return nil, err
	}
	if !r.rep.granted {
		return r, fmt.Errorf("%w: would wait %s", ErrWouldExceedDeadline, us(r.rep.waitUS))
	}
	return r, nil
}

// book runs one group's decision with maxWaitUS and returns it as a reservation.
func (l *Limiter) book(ctx context.Context, p *plan, maxWaitUS int64) (*Reservation, error) {
	start := time.Now()
	rep := new(reply)
	err := l.decide(ctx, p, maxWaitUS, rep)
	if p.wake == nil {
		l.count(ctx, kindOf(p), rep, err)
	}
	if err != nil {
		return nil, err
	}
	// The delay counts from Redis's clock at the decision; measuring it from the
	// moment the reply came can only make us act later, never early.
	act := start.Add(us(rep.waitUS))
	replied := time.Now()
	if rep.granted {
		act = replied.Add(us(rep.waitUS))
	}
	r := newReservation(l, p, rep, act)
	r.rtt = replied.Sub(start)
	return r, nil
}

// newReservation returns the reservation of one group's booking.
func newReservation(l *Limiter, p *plan, rep *reply, act time.Time) *Reservation {
	r := &Reservation{lim: l, plan: p, rep: rep, act: act}
	r.one[0] = r
	return r
}

// errNilReservation is the error of Wait and Sync on the nil reservation a
// failed Reserve returns (or a zero Reservation).
var errNilReservation = fmt.Errorf("%w: no reservation (Reserve failed)", ErrInvalid)
