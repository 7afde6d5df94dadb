package limiter

import (
	"cmp"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/redquota/redquota/internal/reach"
)

// FailurePolicy is what a decision answers when Redis cannot be reached.
type FailurePolicy uint8

const (
	// FailClosed returns an error wrapping ErrUnavailable. The default.
	FailClosed FailurePolicy = iota
	// FailOpen allows every call, marked Degraded and counted.
	FailOpen
	// FailLocal decides with an in-process golang.org/x/time/rate limiter per
	// limit, holding Options.LocalShare of the limit, marked Degraded. A cost
	// above what that share can hold at once is an error wrapping
	// ErrUnavailable; Cancel gives a reservation's local units back.
	FailLocal
)

// String names the policy.
func (p FailurePolicy) String() string {
	switch p {
	case FailClosed:
		return "fail_closed"
	case FailOpen:
		return "fail_open"
	case FailLocal:
		return "local"
	}
	return "policy(" + strconv.Itoa(int(p)) + ")"
}

// redisErr is what a caller sees of an error from Redis, or of a failure to
// reach it, during op: prefixed with the package, an authentication failure
// wrapping ErrAuth, and no internal script name.
func redisErr(op string, err error) error {
	if aerr := reach.Auth(err); aerr != nil {
		err = aerr
	}
	return fmt.Errorf("limiter: %s: %w", op, err)
}

// fallback answers a decision under the failure policy; cause is why Redis was not asked.
func (l *Limiter) fallback(p *plan, maxWaitUS int64, cause error, r *reply) error {
	if p.reps > 1 {
		// A coalesced call: each caller in it gets the policy's answer of its own.
		return &batchUnreachable{cause}
	}
	l.stats.unavailable.Add(1)
	switch l.opts.Failure {
	case FailOpen:
		l.stats.failOpen.Add(1)
		*r = reply{granted: true, degraded: true}
		return nil
	case FailLocal:
		l.stats.local.Add(1)
		return l.localDecide(p, maxWaitUS, cause, r)
	}
	return fmt.Errorf("%w (fail closed): %w", ErrUnavailable, cause)
}

// localDecide takes the plan's costs from in-process limiters holding
// LocalShare of each limit, all or nothing. A cost above a local limiter's
// burst can never fit in it: that is an error wrapping errExceedsLocalShare
// (and ErrUnavailable), not a denial with a wait that would never end.
// A granted decision keeps its local reservations, for Reservation.Cancel.
func (l *Limiter) localDecide(p *plan, maxWaitUS int64, cause error, r *reply) error {
	// A sweep (localLimiters) waits for the decisions under way: none of
	// them charges a limiter that is dropped meanwhile.
	l.local.rw.RLock()
	defer l.local.sweepIfDue()
	defer l.local.rw.RUnlock()
	var lls [maxQuotaLimits]*rate.Limiter
	for i, lim := range p.limits[:p.n] {
		lls[i] = l.localFor(p.keys[i].key, lim)
		if b := lls[i].Burst(); p.costs[i] > b {
			return fmt.Errorf("%w: %d units of %s, the local share %g holds %d: %w",
				errExceedsLocalShare, p.costs[i], lim, l.opts.LocalShare, b, cause)
		}
	}
	now := time.Now()
	rs := make([]*rate.Reservation, p.n)
	*r = reply{granted: true, degraded: true}
	var wait time.Duration
	for i := range p.limits[:p.n] {
		rs[i] = lls[i].ReserveN(now, p.costs[i])
		if d := rs[i].DelayFrom(now); d > wait {
			wait, r.by = d, int64(i+1)
		}
		r.per[i].rem = int64(lls[i].TokensAt(now))
	}
	r.waitUS = wait.Microseconds()
	if wait > us(maxWaitUS) {
		for _, rv := range rs {
			rv.CancelAt(now)
		}
		r.granted = false
		return nil
	}
	r.by = 0
	r.local = rs
	return nil
}

// localLimiters are FailLocal's in-process limiters, one per state key,
// bounded: past max entries (keyCacheMax, unless tests lower it) those that
// are full again are dropped, which loses nothing (a new one starts full),
// and past twice max all are (a process deciding more distinct keys locally
// than that gives each its local share again, rather than growing without
// bound through an outage).
type localLimiters struct {
	m    sync.Map // state key → *rate.Limiter
	n    atomic.Int64
	next atomic.Int64 // the count past which the next sweep runs; 0: the bound
	max  int64
	rw   sync.RWMutex // decisions read-lock it, a sweep write-locks it
}

// localFor returns the in-process limiter standing in for the limit at key.
// The caller holds l.local.rw's read lock.
func (l *Limiter) localFor(key string, lim Limit) *rate.Limiter {
	ll := &l.local
	if v, ok := ll.m.Load(key); ok {
		return v.(*rate.Limiter)
	}
	share := l.opts.LocalShare
	every := rate.Limit(float64(lim.Rate) * share / lim.Period.Seconds())
	burst := max(int(float64(lim.most())*share), 1)
	v, loaded := ll.m.LoadOrStore(key, rate.NewLimiter(every, burst))
	if !loaded {
		ll.n.Add(1)
	}
	return v.(*rate.Limiter)
}

// sweepIfDue sweeps when the count passed the next sweep's (not holding rw).
func (ll *localLimiters) sweepIfDue() {
	if ll.n.Load() > cmp.Or(ll.next.Load(), ll.max, keyCacheMax) {
		ll.sweep()
	}
}

// sweep drops the local limiters that are full again, or all of them when
// that leaves more than twice the bound. The next sweep waits for a quarter
// of the bound more (a sweep's cost is spread over that many new keys), at
// most until twice the bound.
func (ll *localLimiters) sweep() {
	ll.rw.Lock()
	defer ll.rw.Unlock()
	bound := cmp.Or(ll.max, keyCacheMax)
	if ll.n.Load() <= cmp.Or(ll.next.Load(), bound) {
		return // swept meanwhile
	}
	defer func() { ll.next.Store(min(max(bound, ll.n.Load()+bound/4), 2*bound)) }()
	now := time.Now()
	ll.m.Range(func(k, v any) bool {
		rl := v.(*rate.Limiter)
		if rl.TokensAt(now) >= float64(rl.Burst()) {
			ll.m.Delete(k)
			ll.n.Add(-1)
		}
		return true
	})
	if ll.n.Load() > 2*bound {
		ll.m.Clear()
		ll.n.Store(0)
	}
}
