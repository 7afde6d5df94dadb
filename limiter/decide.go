package limiter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/redquota/redquota/internal/keys"
	"github.com/redquota/redquota/internal/reach"
	"github.com/redquota/redquota/internal/script"
)

// plan is one decision ready to send: its keys and the limits it charges, of
// one or more quotas of one hash slot. Fixed-size arrays rather than slices
// keep a plan on the caller's stack: Allow allocates no plan.
type plan struct {
	n      int
	quota  string                 // the first quota's label (telemetry); "" for a single key (keys are not recorded)
	names  [maxQuotaLimits]string // limit names ("" for a single-key limit)
	limits [maxQuotaLimits]Limit
	costs  [maxQuotaLimits]int
	keys   [maxQuotaLimits]*keyEntry // one per limit
	guards [maxQuotaLimits]int64     // each limit's quota's Guard, µs
	// outside are the outside records of limits that keep headroom
	// (Quota.Headroom), nil for the others; headroom their bounds in units.
	outside  [maxQuotaLimits]*keyEntry
	headroom [maxQuotaLimits]int
	nOutside int
	of       [maxQuotaLimits]uint8 // each limit's quota: an index into holds
	// holds are the hold keys of the plan's quotas, nq of them ([0] also
	// carries the slot's static token key; each its quota's name).
	holds [maxQuotaLimits]*keyEntry
	nq    int
	// notBefore is a µs time (Redis's clock) before which nothing is granted.
	notBefore int64
	// leaseUS > 0 asks for a lease of that length (Leaser) instead of a decision.
	leaseUS int64
	// reps > 1 sends reps identical decisions in one call (Options.Coalesce),
	// answered into out.
	reps int
	out  []reply
	// wake, when set, is a granted booking's reply: the call is its wake-up
	// (see quota.lua).
	wake *reply
	// regs are the registry entries of the plan's quotas (registry.go), one
	// per hold.
	regs [maxQuotaLimits]*regEntry
}

// name is the name of limit i ("" for a single-key limit).
func (p *plan) name(i int) string {
	return p.names[i]
}

// qname is the name of quota j of the plan.
func (p *plan) qname(j int) string { return p.holds[j].quota }

// head is the plan's slot head.
func (p *plan) head() string { return p.holds[0].head }

func checkKey(key string) error {
	return checkPart("key", key)
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
		return fmt.Errorf("%w: n = %d must be > 0", errInvalidCost, n)
	}
	if n > limit.most() {
		return fmt.Errorf("%w: n = %d, %s allows at most %d at once", errExceedsLimit, n, limit, limit.most())
	}
	return nil
}

// single plans n units of limit under key into p.
func (l *Limiter) single(p *plan, key string, limit Limit, n int) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := limit.validate(); err != nil {
		return err
	}
	if err := checkCost(limit, n); err != nil {
		return err
	}
	p.holds[0], p.nq = l.keyFor(keyID{quota: key, algo: holdAlgorithm}), 1
	p.n, p.limits[0], p.costs[0], p.keys[0] = 1, limit, n, l.keyFor(keyID{quota: key, algo: limit.Algorithm})
	p.regs[0] = l.regFor(p.holds[0], Quota{Name: key}, limit)
	return nil
}

// quota plans charge c alone into p.
func (l *Limiter) quota(p *plan, c Charge) error {
	p.n, p.nq, p.nOutside = 0, 0, 0
	if err := l.addQuota(p, c); err != nil {
		return err
	}
	if p.n == 0 && len(c.Quota.limits()) > 0 {
		return fmt.Errorf("%w: cost charges no limit of quota %q", errInvalidCost, c.Quota.Name)
	}
	return nil
}

// addQuota adds charge ch to p, whose quotas must share its quota's slot.
// Limits the cost does not name (or names with 0) are left out; a quota
// whose cost charges none of its limits, or that has none (with an empty
// cost), adds only its hold: the call waits for it, charging it nothing.
func (l *Limiter) addQuota(p *plan, ch Charge) error {
	q, cost := ch.Quota, ch.Cost
	limits := q.limits()
	holdOnly := len(limits) == 0
	if holdOnly {
		if err := q.validateID(); err != nil {
			return err
		}
		if len(cost) > 0 {
			return fmt.Errorf("%w: %q has no limits to charge a cost to", errEmptyQuota, q.Name)
		}
	} else if err := q.Validate(); err != nil {
		return err
	}
	for name, c := range cost {
		if _, ok := q.find(name); !ok {
			return fmt.Errorf("%w: %q is not a limit of quota %q", errUnknownLimit, name, q.Name)
		}
		if c < 0 {
			return fmt.Errorf("%w: %q costs %d", errInvalidCost, name, c)
		}
	}
	id := keyID{group: q.Group, quota: q.Name, key: q.key, keyed: q.keyed, algo: holdAlgorithm}
	hold := l.keyFor(id)
	for _, h := range p.holds[:p.nq] {
		if h == hold || h.key == hold.key {
			return fmt.Errorf("%w: quota %q charged twice in one call", errDuplicateLimit, q.Name)
		}
	}
	if p.nq > 0 && p.holds[0].head != hold.head {
		return fmt.Errorf("limiter: quota %q is not in the slot of %q", q.Name, p.qname(0))
	}
	if p.nq == 0 {
		// A single key's quota (one limit named "") is named by its key,
		// which never reaches telemetry.
		p.quota = q.Label
		if _, single := q.keyLimit(); p.quota == "" && !single {
			p.quota = q.Name
		}
	}
	qi := p.nq
	p.holds[qi] = hold
	p.regs[qi] = l.regFor(hold, q, Limit{})
	p.nq++
	guard := q.Guard.Microseconds()
	each := ch.each()
	for _, nl := range limits {
		c := each
		if cost != nil {
			c = cost[nl.Name]
		}
		if c == 0 {
			continue
		}
		if err := checkCost(nl.Limit, c); err != nil {
			return fmt.Errorf("quota %q limit %q: %w", q.Name, nl.Name, err)
		}
		if p.n == maxQuotaLimits {
			return fmt.Errorf("%w: more than %d limits charged in one call", errInvalidLimit, maxQuotaLimits)
		}
		id.name, id.algo = nl.Name, nl.Limit.Algorithm
		p.names[p.n], p.limits[p.n], p.costs[p.n] = nl.Name, nl.Limit, c
		p.keys[p.n], p.guards[p.n], p.of[p.n] = l.keyFor(id), guard, uint8(qi)
		p.outside[p.n], p.headroom[p.n] = nil, q.headroomOf(nl.Limit)
		if p.headroom[p.n] > 0 {
			id.algo = outsideAlgorithm
			p.outside[p.n] = l.keyFor(id)
			p.nOutside++
		}
		p.n++
	}
	return nil
}

// reply is quota.lua's answer.
type reply struct {
	granted  bool
	standing bool  // a wake-up found the booking standing (no hold after it)
	waitUS   int64 // delay until the grant, or retry-after when denied
	by       int64 // 0 none, -1 hold, i = limit i (1-based)
	grantUS  int64 // Redis time of the grant, µs
	per      [maxQuotaLimits]perLimit
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
var quotaSHA any = script.Quota.Hash()

// noDeadline is the max wait sent when a context has no deadline: far enough
// to mean "any time", small enough for exact Lua arithmetic.
const noDeadline = int64(1) << 50

// decide runs quota.lua for p, reserving up to maxWaitUS ahead (0 = now only).
// When Redis cannot be reached it answers under the failure policy.
func (l *Limiter) decide(ctx context.Context, p *plan, maxWaitUS int64, r *reply) error {
	// After the call: the definition's write must not take the pool's warm
	// connection from the decision (registry.go).
	defer l.register(p)
	var err error
	var gen int64 // restarts seen before the call (Options.RestartSpent)
	if l.restart != nil {
		gen = l.restart.restarts.Load()
	}
	if l.closed.Load() {
		// Fast path: the breaker (its mutex, its allocation) is touched only
		// when a call fails, or succeeds after failures; a hot key's callers
		// contend on nothing but the connection pool.
		err = l.run(ctx, p, maxWaitUS, r)
		if err != nil && unreachable(ctx, err) {
			l.keepCause(err)
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
			return l.fallback(p, maxWaitUS, l.openErr(berr), r)
		}
		err = l.run(ctx, p, maxWaitUS, r)
		if err != nil && unreachable(ctx, err) {
			l.keepCause(err)
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
	if l.restart != nil && l.afterDecision(ctx, p, gen) && p.wake == nil {
		return l.decide(ctx, p, maxWaitUS, r) // made on a restarted Redis's empty state: again, charged
	}
	if p.wake != nil {
		// A wake-up: its booking was counted when it was made.
		return nil
	}
	l.observe(p, r) // telemetry: limits' usage, hold left
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

// tokenKey is the token key of one script call in the slot of hold entry h:
// a key of its own when dedupe is on, else the slot's static one (the
// scripts then neither read nor write it).
func (l *Limiter) tokenKey(h *keyEntry) any {
	if l.dedupe {
		return l.newToken(h)
	}
	return h.tok
}

func (l *Limiter) newToken(h *keyEntry) string {
	return h.head + ":tok:" + l.tokenPfx + strconv.FormatUint(l.tokenSeq.Add(1), 36)
}

// decisionToken is tokenKey for a decision (quota.lua), which carries a
// token only when decideDedupe is on.
func (l *Limiter) decisionToken(h *keyEntry) any {
	if l.decideDedupe {
		return l.newToken(h)
	}
	return h.tok
}

func (l *Limiter) run(ctx context.Context, p *plan, maxWaitUS int64, r *reply) error {
	n, nq := p.n, p.nq
	size := 4 + nq + n + p.nOutside + 5 + 6*n
	if p.wake != nil {
		size += 1 + 5*n
	}
	if p.reps > 1 {
		size++
	}
	e := evalCalls.Get().(*evalCall)
	if cap(e.cmd) < size {
		e.cmd = make([]any, 0, size)
	}
	if l.plain(p, maxWaitUS) {
		return l.runPlain(ctx, p, e, r)
	}
	cmd := e.cmd[:0]
	cmd = append(cmd, "evalsha", quotaSHA, 1+nq+n+p.nOutside, p.holds[0].boxed)
	cmd = append(cmd, l.decisionToken(p.holds[0]))
	for _, h := range p.holds[1:nq] {
		cmd = append(cmd, h.boxed)
	}
	for _, k := range p.keys[:n] {
		cmd = append(cmd, k.boxed)
	}
	var holds any = nq
	if p.nOutside > 0 {
		// "h i1 i2 …": the limits whose outside records follow (quota.lua).
		b := strconv.AppendInt(nil, int64(nq), 10)
		for i, k := range p.outside[:n] {
			if k != nil {
				cmd = append(cmd, k.boxed)
				b = strconv.AppendInt(append(b, ' '), int64(i+1), 10)
			}
		}
		holds = string(b)
	}
	cmd = append(cmd, maxWaitUS, l.decideMS, p.leaseUS, p.notBefore, holds)
	for i, lim := range p.limits[:n] {
		a := argsFor(lim, p.guards[i])
		cmd = append(cmd, a[0], a[1], a[2], a[3], p.costs[i], a[4])
	}
	if p.reps > 1 {
		cmd = append(cmd, p.reps)
	}
	if w := p.wake; w != nil {
		cmd = append(cmd, w.grantUS)
		for i := range n {
			cmd = append(cmd, w.per[i].mark)
			cmd = append(cmd, w.prior[priorLen*i:priorLen*(i+1)]...)
		}
	}
	v, err := l.send(ctx, e, script.Quota, cmd)
	if err != nil {
		return err
	}
	if p.reps > 1 {
		if err := parseBatch(v, p, p.out); err != nil {
			return err
		}
		*r = p.out[0]
		return nil
	}
	if err := parseReply(v, n, nq, r); err != nil {
		return err
	}
	if r.granted && !r.standing && p.leaseUS == 0 {
		r.windowResets(p)
	}
	if r.standing && p.wake == nil {
		return fmt.Errorf("%w: quota.lua answered a wake-up to a decision", ErrBadReply)
	}
	return nil
}

// send runs cmd, a call of script s built in e's buffer, bounded as Options
// say, and returns its reply; e goes back for reuse.
func (l *Limiter) send(ctx context.Context, e *evalCall, s *redis.Script, cmd []any) ([]any, error) {
	e.c, e.s, e.cmd = l.decider, s, cmd
	if l.ack != nil {
		// Options.ReplicaAck (replicaack.go): its own pipeline, e not used.
		v, err := l.acked(ctx, s, cmd)
		if err != nil {
			return nil, redisErr("decision", err)
		}
		clear(e.cmd)
		e.c, e.s = nil, nil
		evalCalls.Put(e)
		return v, nil
	}
	var err error
	if l.timeoutInline {
		err = l.watch.CallInline(ctx, l.timeout, e.fn)
	} else if l.timeout > 0 || l.watch.Waits() {
		err = l.watch.Call(ctx, l.timeout, e.fn)
	} else {
		err = e.fn(ctx)
	}
	if err != nil {
		// e is not reused, nor its reply read: a call its bound ended may
		// still be running (reach.Watch.Call leaves it to finish alone).
		return nil, redisErr("decision", err)
	}
	v := e.v
	clear(e.cmd)
	e.c, e.s, e.v = nil, nil, nil
	evalCalls.Put(e)
	return v, nil
}

// allowSHA is allow.lua's SHA1, boxed once.
var allowSHA any = script.Allow.Hash()

// plain reports whether p can go to allow.lua: one GCRA limit under one
// hold, granted now or not at all, on a client that needs no retry dedupe.
// allow.lua decides it as quota.lua would, with fewer keys, arguments and
// reply values.
func (l *Limiter) plain(p *plan, maxWaitUS int64) bool {
	return !l.decideDedupe && p.n == 1 && p.nq == 1 && p.nOutside == 0 && p.limits[0].Algorithm == GCRA &&
		maxWaitUS == 0 && p.leaseUS == 0 && p.notBefore == 0 && p.reps <= 1 && p.wake == nil
}

// runPlain decides p with allow.lua.
func (l *Limiter) runPlain(ctx context.Context, p *plan, e *evalCall, r *reply) error {
	a := argsFor(p.limits[0], 0)
	cmd := append(e.cmd[:0], "evalsha", allowSHA, 2, p.holds[0].boxed, p.keys[0].boxed, a[2], a[3], p.costs[0])
	v, err := l.send(ctx, e, script.Allow, cmd)
	if err != nil {
		return err
	}
	return parsePlain(v, r)
}

// parsePlain reads allow.lua's reply into r.
func parsePlain(v []any, r *reply) error {
	if len(v) != 4 {
		return fmt.Errorf("%w: allow.lua returned %d values, not 4", ErrBadReply, len(v))
	}
	var x [4]int64
	for i := range v {
		k, ok := v[i].(int64)
		if !ok {
			return fmt.Errorf("%w: allow.lua value %d is %T, not an integer", ErrBadReply, i, v[i])
		}
		x[i] = k
	}
	if x[0] < -1 || x[0] > 1 || x[1] < 0 || x[2] < 0 || x[3] < 0 || (x[0] == 1) != (x[1] == 0) {
		return fmt.Errorf("%w: allow.lua reply %v", ErrBadReply, x)
	}
	*r = reply{granted: x[0] == 1, waitUS: x[1]}
	switch x[0] {
	case 0:
		r.by = 1
	case -1:
		r.by = -1
	}
	r.per[0] = perLimit{rem: x[2], resetUS: x[3]}
	return nil
}

// priorLen is how many values a granted reservation's reply carries per limit
// after the 3 of every reply: the limit's state before the booking.
const priorLen = 4

// parseReply reads quota.lua's reply for n limits of nq quotas into r.
func parseReply(v []any, n, nq int, r *reply) error {
	withPrior := n > 0 && len(v) == 4+(3+priorLen)*n
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
	if ints[0] < 0 || ints[0] > 2 || ints[1] < 0 || ints[2] < -int64(nq) || ints[2] > int64(n) {
		return fmt.Errorf("%w: quota.lua header %d %d %d", ErrBadReply, ints[0], ints[1], ints[2])
	}
	*r = reply{granted: ints[0] >= 1, standing: ints[0] == 2, waitUS: ints[1], by: ints[2], grantUS: ints[3]}
	for i := range n {
		b := 4 + 3*i
		r.per[i] = perLimit{rem: ints[b], resetUS: ints[b+1], mark: ints[b+2]}
	}
	if withPrior {
		r.prior = v[4+3*n:]
	}
	return nil
}

// windowResets fills in the reset of each fixed and counter limit of a
// grant, which quota.lua leaves out (0) since the grant time t and wait give
// it: the end of t's window (one period later for the counter) less Redis's
// time of the decision, t - wait.
func (r *reply) windowResets(p *plan) {
	for i, lim := range p.limits[:p.n] {
		if lim.Algorithm != FixedWindow && lim.Algorithm != SlidingWindowCounter {
			continue
		}
		per := lim.periodUS()
		ends := (r.grantUS/per + 1) * per
		if lim.Algorithm == SlidingWindowCounter {
			ends += per
		}
		r.per[i].resetUS = ends - (r.grantUS - r.waitUS)
	}
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

// result is the Result of the decision r on p.
func (r *reply) result(p *plan) Result {
	q := Result{Limits: make([]LimitResult, 0, p.n)}
	r.addTo(&q, p)
	return q
}

// addTo adds the decision r on p to q: one group's part of a decision on
// several quotas (q starts allowed when it has no limits yet).
func (r *reply) addTo(q *Result, p *plan) {
	if len(q.Limits) == 0 {
		q.Allowed = true
	}
	q.Allowed = q.Allowed && r.granted
	q.Degraded = q.Degraded || r.degraded
	// Redis's time of the decision (now) or of the booking (a granted
	// reservation); 0 when unknown.
	at := r.grantUS
	if !r.granted && at != 0 {
		at -= r.waitUS
	}
	for i, lim := range p.limits[:p.n] {
		lr := LimitResult{Name: p.name(i), Quota: p.qname(int(p.of[i])), Limit: lim, Allowed: r.granted,
			Remaining: int(r.per[i].rem), ResetAfter: us(r.per[i].resetUS)}
		q.ResetAfter = max(q.ResetAfter, lr.ResetAfter)
		if len(q.Limits) == 0 || lr.Remaining < q.Remaining {
			q.Remaining = lr.Remaining
		}
		if at > 0 && !r.degraded && p.leaseUS == 0 && (lim.Algorithm == FixedWindow || lim.Algorithm == SlidingWindowCounter) {
			per := lim.periodUS()
			lr.WindowEnd = time.UnixMicro((at/per + 1) * per)
		}
		if !r.granted && r.by >= 1 && int(r.by) == i+1 {
			lr.RetryAfter = us(r.waitUS)
		}
		q.Limits = append(q.Limits, lr)
	}
	if !r.granted && us(r.waitUS) >= q.RetryAfter {
		q.RetryAfter = us(r.waitUS)
		switch {
		case r.by < 0 && int(-r.by) <= p.nq:
			q.DeniedBy, q.DeniedQuota = HoldName, p.qname(int(-r.by-1))
		case r.by >= 1 && int(r.by) <= p.n:
			q.DeniedBy, q.DeniedQuota = p.name(int(r.by-1)), p.qname(int(p.of[r.by-1]))
		}
	}
}

// callerDone returns ctx's error, or context.DeadlineExceeded once its
// deadline has passed even if ctx has not noticed yet; nil while it runs.
func callerDone(ctx context.Context) error { return reach.CallerDone(ctx) }

// unreachable reports whether err means Redis could not be reached or answer
// (so the failure policy applies) rather than a caller's cancellation or a
// script error.
func unreachable(ctx context.Context, err error) bool {
	return !errors.Is(err, ErrBadReply) && reach.Unreachable(ctx, err)
}

// evalCall is one quota.lua call, kept for reuse (evalCalls) so that a
// decision neither builds a closure nor allocates its command.
type evalCall struct {
	c   Client
	s   *redis.Script
	cmd []any
	v   []any                       // the reply, read only when fn returned nil
	fn  func(context.Context) error // call, bound once
}

var evalCalls = sync.Pool{New: func() any {
	e := new(evalCall)
	e.fn = e.call
	return e
}}

func (e *evalCall) call(ctx context.Context) error {
	var err error
	e.v, err = evalCached(ctx, e.c, e.s, e.cmd)
	return err
}

// keepCause remembers err, which found Redis unreachable, for the open
// breaker's errors.
func (l *Limiter) keepCause(err error) { l.lastCause.Store(&err) }
