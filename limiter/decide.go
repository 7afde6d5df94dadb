package limiter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"golang.org/x/time/rate"

	"github.com/redquota/redquota/internal/keys"
	"github.com/redquota/redquota/scripts"
)

// plan is one decision ready to send: its keys and the limits it charges.
// Fixed-size arrays rather than slices keep a plan on the caller's stack:
// Allow allocates no plan.
type plan struct {
	n      int
	quota  string                 // the quota's label (telemetry); "" for a single key (keys are not recorded)
	names  [MaxQuotaLimits]string // limit names ("" for a single-key limit)
	limits [MaxQuotaLimits]Limit
	costs  [MaxQuotaLimits]int
	keys   [MaxQuotaLimits]*keyEntry // one per limit
	hold   *keyEntry                 // the tag's hold key (and its static token key)
	// leaseUS > 0 asks for a lease of that length (Leaser) instead of a decision.
	leaseUS int64
	// reps > 1 sends reps identical decisions in one call (Options.Coalesce),
	// answered into out.
	reps int
	out  []reply
}

// name is the name of limit i ("" for a single-key limit).
func (p *plan) name(i int) string {
	return p.names[i]
}

func checkKey(key string) error {
	if err := keys.Check(key); err != nil {
		return fmt.Errorf("limiter: key: %w", err)
	}
	return nil
}

func (l *Limiter) head(tag string) string { return keys.Tag(l.opts.Prefix, tag) }

// stateKey is <head>:<algorithm>[:<limit name>]: the algorithm is part of the
// key so that changing a key's algorithm never meets state of another type.
func stateKey(head, name string, a Algorithm) string {
	if name == "" {
		return head + ":" + a.String()
	}
	return head + ":" + a.String() + ":" + keys.Escape(name)
}

func checkCost(limit Limit, n int) error {
	if n <= 0 {
		return fmt.Errorf("%w: n = %d must be > 0", ErrInvalidCost, n)
	}
	if n > limit.Max() {
		return fmt.Errorf("%w: n = %d, %s allows at most %d at once", ErrExceedsLimit, n, limit, limit.Max())
	}
	return nil
}

// single plans n units of limit under key into p.
func (l *Limiter) single(p *plan, key string, limit Limit, n int) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := limit.Validate(); err != nil {
		return err
	}
	if err := checkCost(limit, n); err != nil {
		return err
	}
	p.hold = l.keyFor(key, "", holdAlgorithm)
	p.n, p.limits[0], p.costs[0], p.keys[0] = 1, limit, n, l.keyFor(key, "", limit.Algorithm)
	return nil
}

// quota plans cost against q. Limits the cost does not name are left out.
func (l *Limiter) quota(p *plan, q Quota, cost Cost) error {
	if err := q.Validate(); err != nil {
		return err
	}
	for name, c := range cost {
		if _, ok := q.Find(name); !ok {
			return fmt.Errorf("%w: %q is not a limit of quota %q", ErrUnknownLimit, name, q.Name)
		}
		if c < 0 {
			return fmt.Errorf("%w: %q costs %d", ErrInvalidCost, name, c)
		}
	}
	p.hold = l.keyFor(q.Name, "", holdAlgorithm)
	p.quota, p.n = q.Name, 0
	if q.Label != "" {
		p.quota = q.Label
	}
	for _, nl := range q.Limits {
		c := cost[nl.Name]
		if c == 0 {
			continue
		}
		if err := checkCost(nl.Limit, c); err != nil {
			return fmt.Errorf("quota %q limit %q: %w", q.Name, nl.Name, err)
		}
		p.names[p.n], p.limits[p.n], p.costs[p.n] = nl.Name, nl.Limit, c
		p.keys[p.n] = l.keyFor(q.Name, nl.Name, nl.Limit.Algorithm)
		p.n++
	}
	if p.n == 0 {
		return fmt.Errorf("%w: cost charges no limit of quota %q", ErrInvalidCost, q.Name)
	}
	return nil
}

// reply is quota.lua's answer.
type reply struct {
	granted  bool
	waitUS   int64 // delay until the grant, or retry-after when denied
	by       int64 // 0 none, -1 hold, i = limit i (1-based)
	grantUS  int64 // Redis time of the grant, µs
	per      [MaxQuotaLimits]perLimit
	degraded bool
	// prior holds, for a granted reservation, each limit's four prior-state
	// values (int64s, checked): what Cancel restores. Kept as the reply's own
	// slice, so a decision allocates nothing for it.
	prior []any
	// local holds a degraded grant's reservations in the local limiters
	// (FailLocal), which Cancel gives back.
	local []*rate.Reservation
}

type perLimit struct{ rem, resetUS, mark int64 }

// quotaSHA is quota.lua's SHA1, boxed once.
var quotaSHA any = scripts.Quota.Hash()

// noDeadline is the max wait sent when a context has no deadline: far enough
// to mean "any time", small enough for exact Lua arithmetic.
const noDeadline = int64(1) << 50

// decide runs quota.lua for p, reserving up to maxWaitUS ahead (0 = now only).
// When Redis cannot be reached it answers under the failure policy.
func (l *Limiter) decide(ctx context.Context, p *plan, maxWaitUS int64, r *reply) error {
	var err error
	if l.closed.Load() {
		// Fast path: the breaker (its mutex, its allocation) is touched only
		// when a call fails, or succeeds after failures; a hot key's callers
		// contend on nothing but the connection pool.
		err = l.run(ctx, p, maxWaitUS, r)
		if err != nil && unreachable(ctx, err) {
			l.failing.Store(true)
			if done, berr := l.breaker.Allow(); berr == nil {
				done(err)
			}
			return l.fallback(p, maxWaitUS, err, r)
		}
		if l.failing.Load() && l.failing.CompareAndSwap(true, false) {
			if done, berr := l.breaker.Allow(); berr == nil {
				done(nil)
			}
		}
	} else {
		done, berr := l.breaker.Allow()
		if berr != nil {
			// Open: Redis was just found unreachable; do not wait on it again.
			return l.fallback(p, maxWaitUS, berr, r)
		}
		err = l.run(ctx, p, maxWaitUS, r)
		if err != nil && unreachable(ctx, err) {
			done(err)
			return l.fallback(p, maxWaitUS, err, r)
		}
		done(nil)
	}
	if err != nil {
		if cerr := callerDone(ctx); cerr != nil {
			// The caller's context ended: say so in a way errors.Is sees, even
			// when go-redis reported it as an i/o timeout on the socket.
			return fmt.Errorf("%w: %w", cerr, err)
		}
		return err
	}
	if p.reps > 1 {
		for i := range p.out {
			if p.out[i].granted {
				l.stats.allowed.Add(1)
			} else {
				l.stats.denied.Add(1)
			}
		}
	} else if r.granted {
		l.stats.allowed.Add(1)
	} else {
		l.stats.denied.Add(1)
	}
	return nil
}

func (l *Limiter) run(ctx context.Context, p *plan, maxWaitUS int64, r *reply) error {
	n := p.n
	cmd := make([]any, 0, 5+n+3+5*n)
	cmd = append(cmd, "evalsha", quotaSHA, 2+n, p.hold.boxed)
	if l.dedupe {
		cmd = append(cmd, p.hold.head+":tok:"+l.tokenPfx+strconv.FormatUint(l.tokenSeq.Add(1), 36))
	} else {
		cmd = append(cmd, p.hold.tok)
	}
	for _, k := range p.keys[:n] {
		cmd = append(cmd, k.boxed)
	}
	cmd = append(cmd, maxWaitUS, l.dedupeMS, p.leaseUS)
	for i, lim := range p.limits[:n] {
		a := argsFor(lim)
		cmd = append(cmd, a[0], a[1], a[2], a[3], p.costs[i])
	}
	if p.reps > 1 {
		cmd = append(cmd, p.reps)
	}
	if l.timeout > 0 {
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > l.timeout {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, l.timeout)
			defer cancel()
		}
	}
	v, err := evalCached(ctx, l.decider, scripts.Quota, cmd)
	if err != nil {
		return fmt.Errorf("limiter: quota.lua: %w", err)
	}
	if p.reps > 1 {
		if err := parseBatch(v, p, p.out); err != nil {
			return err
		}
		*r = p.out[0]
		return nil
	}
	return parseReply(v, n, r)
}

// priorLen is how many values a granted reservation's reply carries per limit
// after the 3 of every reply: the limit's state before the booking.
const priorLen = 4

func parseReply(v []any, n int, r *reply) error {
	withPrior := len(v) == 4+(3+priorLen)*n
	if len(v) != 4+3*n && !withPrior {
		return fmt.Errorf("%w: quota.lua returned %d values for %d limits", ErrBadReply, len(v), n)
	}
	var ints [4 + 3*maxReplyLimits]int64
	if n > maxReplyLimits {
		return fmt.Errorf("%w: %d limits, at most %d", ErrBadReply, n, maxReplyLimits)
	}
	if withPrior {
		for i, x := range v[4+3*n:] {
			if _, ok := x.(int64); !ok {
				return fmt.Errorf("%w: quota.lua value %d is %T, not an integer", ErrBadReply, 4+3*n+i, x)
			}
		}
		if v[0] != int64(1) {
			return fmt.Errorf("%w: quota.lua sent prior states with a denial", ErrBadReply)
		}
	}
	for i, x := range v[:4+3*n] {
		k, ok := x.(int64)
		if !ok {
			return fmt.Errorf("%w: quota.lua value %d is %T, not an integer", ErrBadReply, i, x)
		}
		ints[i] = k
	}
	if ints[0] != 0 && ints[0] != 1 || ints[1] < 0 || ints[2] < -1 || ints[2] > int64(n) {
		return fmt.Errorf("%w: quota.lua header %d %d %d", ErrBadReply, ints[0], ints[1], ints[2])
	}
	*r = reply{granted: ints[0] == 1, waitUS: ints[1], by: ints[2], grantUS: ints[3]}
	for i := range n {
		b := 4 + 3*i
		r.per[i] = perLimit{rem: ints[b], resetUS: ints[b+1], mark: ints[b+2]}
	}
	if withPrior {
		r.prior = v[4+3*n:]
	}
	return nil
}

// us converts µs to a Duration, saturating rather than wrapping: a value
// beyond ±292 years (no real wait, but a corrupt or foreign state could make
// one) must not come back as a negative or short wait.
func us(v int64) time.Duration {
	switch {
	case v > math.MaxInt64/int64(time.Microsecond):
		return math.MaxInt64
	case v < math.MinInt64/int64(time.Microsecond):
		return math.MinInt64
	}
	return time.Duration(v) * time.Microsecond
}

func (r *reply) single(limit Limit) Result {
	res := Result{Limit: limit, Allowed: r.granted, Degraded: r.degraded}
	res.Remaining = int(r.per[0].rem)
	res.ResetAfter = us(r.per[0].resetUS)
	if !r.granted {
		res.RetryAfter = us(r.waitUS)
	}
	return res
}

func (r *reply) quota(p *plan) QuotaResult {
	q := QuotaResult{Allowed: r.granted, Degraded: r.degraded, Limits: make([]LimitResult, p.n)}
	for i, lim := range p.limits[:p.n] {
		res := Result{Limit: lim, Allowed: r.granted, Degraded: r.degraded}
		res.Remaining = int(r.per[i].rem)
		res.ResetAfter = us(r.per[i].resetUS)
		q.ResetAfter = max(q.ResetAfter, res.ResetAfter)
		q.Limits[i] = LimitResult{Name: p.name(i), Result: res}
	}
	if !r.granted {
		q.RetryAfter = us(r.waitUS)
		switch {
		case r.by == -1:
			q.DeniedBy = HoldName
		case r.by >= 1 && int(r.by) <= p.n:
			q.DeniedBy = p.name(int(r.by - 1))
			q.Limits[r.by-1].RetryAfter = q.RetryAfter
		}
	}
	return q
}

// callerDone returns ctx's error, or context.DeadlineExceeded once its
// deadline has passed even if ctx has not noticed yet; nil while it runs.
func callerDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// unreachable reports whether err means Redis could not be reached or answer
// (so the failure policy applies) rather than a caller's cancellation or a
// script error.
func unreachable(ctx context.Context, err error) bool {
	// With ContextTimeoutEnabled go-redis sets socket deadlines from the
	// context, so a caller's deadline can surface as an i/o timeout a moment
	// before ctx.Err() reports it: still the caller's deadline, not a dead Redis.
	if callerDone(ctx) != nil {
		return false
	}
	if errors.Is(err, ErrBadReply) {
		return false
	}
	return isNetworkError(err)
}
