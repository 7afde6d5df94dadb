package limiter

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// LeaseOptions configure a Leaser. The zero value works.
type LeaseOptions struct {
	// TTL is how long after Redis grants a lease its units may be spent; units
	// left at its end are dropped (they were charged, so they are never spent
	// late). It also bounds how long a Hold set by another process takes to stop
	// this one. Default 100ms, and never more than a tenth of the shortest of the
	// limits' periods (for GCRA, the time an empty bucket takes to refill).
	// Fixed and counter windows also end every lease at their window's end.
	TTL time.Duration
	// MaxShare is the largest lease as a fraction of each limit's Max. A Leaser
	// holds at most two leases, so one process never sits on more than
	// 2×MaxShare of a limit unspent; the rest stays first come first served
	// for every other process. Default 0.1, at most 1.
	MaxShare float64

	// clock is the Leaser's clock, which times its leases. Default time.Now;
	// tests inject one.
	clock func() time.Time
}

// LeaseStats are counts of a Leaser's work so far.
type LeaseStats struct {
	// Decisions counts Allow calls answered (granted or denied, not errors).
	Decisions int64
	// Local counts decisions answered without Redis: from a lease, or refused
	// because Redis said moments ago that so many units would not fit yet.
	Local int64
	// Calls counts script calls: leases taken or refused, and direct decisions.
	Calls int64
	// Leased counts units taken in leases.
	Leased int64
	// Expired counts leased units dropped unspent (lease end or Close).
	Expired int64
}

// Leaser answers decisions for one key or quota from leases: units taken from
// Redis several at a time, in one script call, and spent in this process
// without a round trip. It takes the next lease in the background before the
// current one runs out.
//
// The global limit still holds at every instant: a lease is charged in Redis
// like any other grant, where it stays counted for as long as any of its units
// may still be spent (see LeaseOptions.TTL), so units spent here plus units
// granted anywhere else never exceed a limit in any of its windows.
//
// A lease's size follows the local rate (about TTL's worth of it), between 1
// unit and MaxShare of the tightest limit. When Redis refuses a lease (the
// limit is nearly used up, or held), the Leaser decides each call directly in
// Redis, one round trip each, until a reply shows room for leases again: near
// the limit no process sits on units the others could use.
//
// The bound needs this process's clock and Redis's to advance at the same
// rate over a lease (not to agree on the time): a lease's deadline here is
// measured from before its call was sent. A clock step on the Redis host
// breaks it, as it breaks any limiter on Redis's clock.
//
// Units already leased are out of Redis's reach: a Hold set by any process
// (a 429) stops this one only when its current leases end, at most TTL later
// (a process that sees the 429 itself and calls Hold is stopped as late), and
// Reset does not take them back. Sliding log limits cannot be leased
// (ErrInvalid). Local
// decisions record no telemetry (script calls do); Stats counts them. A
// Leaser is safe for concurrent use; Close it to stop its background refill.
type Leaser struct {
	lim  *Limiter
	unit plan // one unit's costs
	kind int  // telemetry kind of unit
	most int  // the most units one decision may take (every cost ≤ Max)
	cap  int  // the largest lease
	ttl  time.Duration
	win  []int64 // periods µs of fixed and counter limits (leases end at their windows' ends)

	// stats' counters are added to by every decision, from every goroutine:
	// on a cache line of their own, so that reading most, cap and the rest
	// does not miss (sharing one cost leased decisions from 64 goroutines
	// about 14 %: BENCHMARKS.md, issue 18).
	_     [64]byte
	stats leaseCounters
	_     [64]byte

	wg sync.WaitGroup

	clock func() time.Time // LeaseOptions.clock: time.Now but in tests

	mu     sync.Mutex
	leases [2]lease      // spent in order: [0] ends first
	refill chan struct{} // non-nil while a lease call is in flight; closed when it lands
	scarce bool          // the last lease was refused: decide directly
	closed atomic.Bool   // written under mu
	gen    uint64        // bumped by drop: a lease asked for before it is dropped on landing
	// Demand: units spent in TTL-long buckets, the current one from ws.
	ws        time.Time
	prev, cur int
	lastLen   int // size of the last lease asked for
	// A direct decision of deniedN units was refused until deniedUntil (this
	// clock; Redis's is no earlier), capped at TTL ahead: until then a call of
	// at least as many units is refused here. Other callers' grants only move
	// that time later; Reset, Cancel or a shortened hold could move it earlier,
	// which this misses for at most TTL.
	deniedUntil time.Time
	deniedN     int
}

// Test seams, nil and 0 but in tests (lease_test.go, which sets them for one
// test at a time): leaseSpent hears of every unit spent (under the Leaser's
// lock: local spends at its clock, direct ones at Redis's grant time), and
// direct decisions may wait up to leaseDirectMaxUS (1 µs makes Redis reply
// the grant time).
var (
	leaseSpent       func(t time.Time, n int, redisUS int64)
	leaseDirectMaxUS int64
)

type lease struct {
	units    int
	deadline time.Time // local monotonic time before which the units may be spent
}

type leaseCounters struct {
	decisions, local, calls, leased, expired atomic.Int64
}

// NewLeaser returns a Leaser of charge c: each unit it grants takes c's cost
// from c's quota, all or nothing, as Allow(ctx, c) does, e.g.
// NewLeaser(limiter.Key(key, limit).Take(1), opts) for one unit of limit under key,
// or NewLeaser(limiter.Charge{Quota: q, Cost: limiter.Cost{"weight": 1, "raw": 1}}, opts).
func (l *Limiter) NewLeaser(c Charge, opts LeaseOptions) (*Leaser, error) {
	ls := &Leaser{lim: l, kind: kindQuota}
	if c.plain() {
		ls.kind = kindSingle
		limit, _ := c.Quota.keyLimit()
		if err := l.single(&ls.unit, c.Quota.Name, limit, c.each()); err != nil {
			return nil, err
		}
	} else if err := l.quota(&ls.unit, c); err != nil {
		return nil, err
	}
	if err := ls.init(opts); err != nil {
		return nil, err
	}
	return ls, nil
}

func (ls *Leaser) init(opts LeaseOptions) error {
	if opts.MaxShare < 0 || opts.MaxShare > 1 || math.IsNaN(opts.MaxShare) {
		return fmt.Errorf("%w: lease MaxShare %v outside (0, 1]", errInvalidLimit, opts.MaxShare)
	}
	if opts.TTL < 0 {
		return fmt.Errorf("%w: lease TTL %s", errInvalidDuration, opts.TTL)
	}
	if opts.MaxShare == 0 {
		opts.MaxShare = 0.1
	}
	if opts.TTL == 0 {
		opts.TTL = 100 * time.Millisecond
	}
	p := &ls.unit
	ls.most, ls.cap, ls.ttl = math.MaxInt, math.MaxInt, opts.TTL
	for i, lim := range p.limits[:p.n] {
		horizon := lim.Period
		switch lim.Algorithm {
		case SlidingWindow:
			return fmt.Errorf("%w: %s", errLeaseAlgorithm, lim)
		case GCRA:
			horizon = us(int64(lim.most()) * lim.intervalUS())
		default:
			ls.win = append(ls.win, lim.periodUS())
		}
		ls.ttl = min(ls.ttl, horizon/10)
		most := lim.most() / p.costs[i]
		ls.most = min(ls.most, most)
		ls.cap = min(ls.cap, int(opts.MaxShare*float64(most)))
	}
	ls.ttl = max(ls.ttl, time.Microsecond)
	ls.cap = max(ls.cap, 1)
	ls.clock = opts.clock
	if ls.clock == nil {
		ls.clock = time.Now
	}
	return nil
}

// Allow reports whether n units may be spent now, and spends them if so. It
// answers from a lease when it can (no round trip); otherwise it waits for the
// lease call in flight, takes a lease itself, or decides in Redis directly. A
// ctx already cancelled or past its deadline takes nothing: its error is
// returned.
func (ls *Leaser) Allow(ctx context.Context, n int) (bool, error) {
	if n <= 0 {
		return false, fmt.Errorf("%w: n = %d must be > 0", errInvalidCost, n)
	}
	if n > ls.most {
		return false, fmt.Errorf("%w: n = %d, at most %d units at once", errExceedsLimit, n, ls.most)
	}
	if ls.closed.Load() {
		return false, ErrLeaserClosed
	}
	if err := ctx.Err(); err != nil {
		return false, err // the caller has gone: take nothing, as Limiter.Allow
	}
	if n > ls.cap {
		return ls.direct(ctx, n)
	}
	for attempt := 0; ; attempt++ {
		ls.mu.Lock()
		if ls.closed.Load() {
			ls.mu.Unlock()
			return false, ErrLeaserClosed
		}
		now := ls.clock()
		ls.expire(now)
		if ls.take(n) {
			ls.roll(now)
			ls.cur += n
			if leaseSpent != nil {
				leaseSpent(now, n, 0)
			}
			if ls.refill == nil && !ls.scarce && ls.lastLen >= 2 && ls.leases[0].units+ls.leases[1].units < ls.lastLen/2 {
				// Running low: fetch the next lease while this one is spent.
				k, gen := ls.target(now, 0), ls.gen
				ch := make(chan struct{})
				ls.refill = ch
				ls.wg.Add(1)
				go func() {
					defer ls.wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					defer cancel()
					_, _ = ls.fetch(ctx, k, ch, gen)
				}()
			}
			ls.mu.Unlock()
			ls.stats.decisions.Add(1)
			ls.stats.local.Add(1)
			return true, nil
		}
		if n >= ls.deniedN && now.Before(ls.deniedUntil) {
			ls.mu.Unlock()
			ls.stats.decisions.Add(1)
			ls.stats.local.Add(1)
			return false, nil
		}
		if ls.scarce || attempt >= 3 {
			// Leases are refused, or keep going to other callers: decide here.
			ls.mu.Unlock()
			return ls.direct(ctx, n)
		}
		if ch := ls.refill; ch != nil {
			ls.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return false, ctx.Err()
			}
			continue
		}
		k, gen := ls.target(now, n), ls.gen
		ch := make(chan struct{})
		ls.refill = ch
		ls.mu.Unlock()
		ok, err := ls.fetch(ctx, k, ch, gen)
		if err != nil {
			return false, err
		}
		if !ok {
			// Refused: this call may still fit on its own.
			return ls.direct(ctx, n)
		}
	}
}

// expire drops leases past their end. Callers hold mu.
func (ls *Leaser) expire(now time.Time) {
	for i := range ls.leases {
		if ls.leases[i].units > 0 && !now.Before(ls.leases[i].deadline) {
			ls.stats.expired.Add(int64(ls.leases[i].units))
			ls.leases[i].units = 0
		}
	}
	if ls.leases[0].units == 0 {
		ls.leases[0], ls.leases[1] = ls.leases[1], lease{}
	}
}

// take spends n units from the leases, the earlier-ending first, if they hold
// that many. Callers hold mu.
func (ls *Leaser) take(n int) bool {
	a, b := &ls.leases[0], &ls.leases[1]
	if a.units+b.units < n {
		return false
	}
	from := min(a.units, n)
	a.units -= from
	b.units -= n - from
	if a.units == 0 {
		*a, *b = *b, lease{}
	}
	return true
}

// roll moves the demand buckets to now. Callers hold mu.
func (ls *Leaser) roll(now time.Time) {
	switch el := now.Sub(ls.ws); {
	case el >= 2*ls.ttl || el < 0:
		ls.ws, ls.prev, ls.cur = now, 0, 0
	case el >= ls.ttl:
		ls.ws, ls.prev, ls.cur = ls.ws.Add(ls.ttl), ls.cur, 0
	}
}

// target sizes the next lease: the units spent over the last TTL (estimated
// from two buckets, as a sliding window counter does), scaled to the lease's
// span, at least need and at most cap. A lease that runs out early is followed
// by one twice its size (everything spent since is in the estimate), so a busy
// Leaser reaches cap in a few calls; a sparse one takes leases of what it needs.
// Callers hold mu.
func (ls *Leaser) target(now time.Time, need int) int {
	ls.roll(now)
	frac := float64(now.Sub(ls.ws)) / float64(ls.ttl)
	demand := float64(ls.prev)*(1-frac) + float64(ls.cur)
	span := ls.ttl
	for _, p := range ls.win {
		// Leases end at the window's end: size for what is left of it (Redis
		// clips the lease there whatever this clock says).
		span = min(span, us(p-now.UnixMicro()%p))
	}
	k := int(math.Ceil(demand * float64(span) / float64(ls.ttl)))
	k = min(max(k, need, 1), ls.cap)
	ls.lastLen = k
	return k
}

// fetch asks Redis for a lease of k units, installs it if granted (unless
// drop or Close came after gen), and closes ch (the in-flight marker). It
// reports whether the lease was granted.
func (ls *Leaser) fetch(ctx context.Context, k int, ch chan struct{}, gen uint64) (bool, error) {
	p := ls.unit
	for i := range p.costs[:p.n] {
		p.costs[i] *= k
	}
	p.leaseUS = ls.ttl.Microseconds()
	sent := ls.clock()
	var rep reply
	err := ls.lim.decide(ctx, &p, 0, &rep)
	ls.lim.count(ctx, ls.kind, &rep, err)
	ls.stats.calls.Add(1)

	ls.mu.Lock()
	defer ls.mu.Unlock()
	defer close(ch)
	ls.refill = nil
	switch {
	case err != nil:
		return false, err
	case !rep.granted:
		ls.scarce = true
		return false, nil
	}
	ls.stats.leased.Add(int64(k))
	if ls.closed.Load() || ls.gen != gen {
		ls.stats.expired.Add(int64(k))
		return true, nil
	}
	// The lease ends no later than its length after it was sent: Redis
	// granted it after that moment, so this clock's deadline comes first.
	length := min(us(rep.leaseUS), ls.ttl)
	if rep.degraded {
		// Granted by the failure policy, not Redis: end it where Redis would.
		length = ls.ttl
		for _, p := range ls.win {
			length = min(length, us(p-sent.UnixMicro()%p))
		}
	}
	ls.install(lease{units: k, deadline: sent.Add(length)}, ls.clock())
	return true, nil
}

// install adds l to the leases held, keeping at most two, the one that ends
// first in [0]. Callers hold mu.
func (ls *Leaser) install(l lease, now time.Time) {
	ls.expire(now)
	if !now.Before(l.deadline) {
		ls.stats.expired.Add(int64(l.units))
		return
	}
	a, b := &ls.leases[0], &ls.leases[1]
	switch {
	case a.units == 0:
		*a = l
	case b.units == 0:
		*b = l
	default:
		// Three leases: merge the two that end first under the earlier end
		// (their units may be spent only while both are valid).
		if l.deadline.Before(b.deadline) {
			*b, l = l, *b
		}
		a.units += b.units
		a.deadline = minTime(a.deadline, b.deadline)
		*b = l
	}
	if b.units > 0 && b.deadline.Before(a.deadline) {
		*a, *b = *b, *a
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// direct decides n units in Redis, one round trip, without a lease. A grant
// that leaves room for a whole lease ends scarce mode.
func (ls *Leaser) direct(ctx context.Context, n int) (bool, error) {
	p := ls.unit
	for i := range p.costs[:p.n] {
		p.costs[i] *= n
	}
	var rep reply
	sent := ls.clock()
	err := ls.lim.decide(ctx, &p, leaseDirectMaxUS, &rep)
	ls.lim.count(ctx, ls.kind, &rep, err)
	ls.stats.calls.Add(1)
	if err != nil {
		return false, err
	}
	ls.stats.decisions.Add(1)
	if rep.degraded {
		return rep.granted, nil
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if !rep.granted {
		if until := sent.Add(min(us(rep.waitUS), ls.ttl)); n <= ls.deniedN || until.After(ls.deniedUntil) {
			ls.deniedUntil, ls.deniedN = until, n
		}
		return false, nil
	}
	if leaseSpent != nil {
		leaseSpent(sent, n, rep.grantUS)
	}
	room := true
	for i := range p.n {
		if rep.per[i].rem < int64(ls.cap)*int64(ls.unit.costs[i]) {
			room = false
		}
	}
	if room {
		ls.scarce = false
	}
	return true, nil
}

// drop discards the units this process holds, and any lease already asked
// for: nothing more is spent from them (they stay charged in Redis). It also
// forgets denials cached from Redis.
func (ls *Leaser) drop() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.dropLocked()
}

func (ls *Leaser) dropLocked() {
	for i := range ls.leases {
		ls.stats.expired.Add(int64(ls.leases[i].units))
		ls.leases[i] = lease{}
	}
	ls.gen++
	ls.deniedUntil, ls.deniedN = time.Time{}, 0
}

// held returns the units this process holds unspent and unexpired.
func (ls *Leaser) held() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.expire(ls.clock())
	return ls.leases[0].units + ls.leases[1].units
}

// Close drops the units held, waits for a background lease call in flight
// and refuses later decisions (ErrLeaserClosed); a lease landing after Close
// is dropped. Units held at Close stay charged in Redis
// until they age out as any grant does; nothing needs cleaning up if the
// process dies instead.
func (ls *Leaser) Close() error {
	ls.mu.Lock()
	ls.closed.Store(true)
	ls.dropLocked()
	ls.mu.Unlock()
	ls.wg.Wait()
	return nil
}

// Stats returns the counts of the Leaser's work so far.
func (ls *Leaser) Stats() LeaseStats {
	return LeaseStats{
		Decisions: ls.stats.decisions.Load(),
		Local:     ls.stats.local.Load(),
		Calls:     ls.stats.calls.Load(),
		Leased:    ls.stats.leased.Load(),
		Expired:   ls.stats.expired.Load(),
	}
}
