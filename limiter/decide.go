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
	// (see decide.lua).
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
	st := l.singleFor(key, limit.Algorithm) // a known algorithm: validate checked
	refs := st.single.Load()
	if refs == nil {
		h := l.keyFor(keyID{quota: key, kind: holdEntry})
		refs = &singleRefs{hold: h, reg: l.regFor(h, Quota{Name: key}, limit)}
		st.single.Store(refs)
	}
	p.holds[0], p.nq, p.regs[0] = refs.hold, 1, refs.reg
	p.n, p.limits[0], p.costs[0], p.keys[0] = 1, limit, n, st
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
	id := keyID{group: q.Group, quota: q.Name, key: q.key, keyed: q.keyed, kind: holdEntry}
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
		id.name, id.algo, id.kind = nl.Name, nl.Limit.Algorithm, stateEntry
		p.names[p.n], p.limits[p.n], p.costs[p.n] = nl.Name, nl.Limit, c
		p.keys[p.n], p.guards[p.n], p.of[p.n] = l.keyFor(id), guard, uint8(qi)
		p.outside[p.n], p.headroom[p.n] = nil, q.headroomOf(nl.Limit)
		if p.headroom[p.n] > 0 {
			id.kind = outsideEntry
			p.outside[p.n] = l.keyFor(id)
			p.nOutside++
		}
		p.n++
	}
	return nil
}

// reply is a decision script's answer (decide.lua's layout; parseReply).
type reply struct {
	granted  bool
	standing bool  // a wake-up found the booking standing (no hold after it)
	waitUS   int64 // delay until the grant, or retry-after when denied
	by       int64 // 0 none, -j quota j's hold, i = limit i (1-based)
	grantUS  int64 // Redis time of the grant, µs
	leaseUS  int64 // a granted lease's length, µs
	per      [maxQuotaLimits]perLimit
	degraded bool
	// local holds a degraded grant's reservations in the local limiters
	// (FailLocal), which Cancel gives back.
	local []*rate.Reservation
}

// perLimit is one limit's part of a reply: remaining, reset, and the values
// of a booking (all 0 for none) that cancel.lua and wake.lua give back.
type perLimit struct {
	rem, resetUS int64
	booking      [bookingLen]int64 // booking id, mark, four prior-state values
}

// bookingLen is how many values a reply carries per limit for its booking.
const bookingLen = 6

// shortLimitLen is how many values a reply carries per limit when it leaves
// out the booking values (a decision that books nothing may): remaining and
// reset.
const shortLimitLen = 2

// perLimitLen is how many values a reply carries per limit with its booking
// values.
const perLimitLen = shortLimitLen + bookingLen

// headerLen is how many values a reply carries before its limits'.
const headerLen = 5

// noDeadline is the max wait sent when a context has no deadline: far enough
// to mean "any time", small enough for exact Lua arithmetic.
const noDeadline = int64(1) << 50

// decide runs decide.lua for p, reserving up to maxWaitUS ahead (0 = now only).
// When Redis cannot be reached it answers under the failure policy.
func (l *Limiter) decide(ctx context.Context, p *plan, maxWaitUS int64, r *reply) error {
	// After the call: a due definition is only queued for the registry's
	// writer (registry.go), and not before the decision's round trip.
	defer l.register(p)
	var err error
	// watch: the call checks for a restart (restart.go); gen is the resyncs
	// done before it.
	var gen int64
	watch := l.restart.on()
	// sent: when the call went, on the kept holds' clock, while one is in
	// force (0 otherwise: then nothing is read).
	var sent time.Duration
	if watch {
		gen = l.restart.resynced.Load()
		if l.restart.holds.inForce() {
			sent = l.restart.holds.since()
		}
	}
	// The call goes through the path (send): its breaker, bound and
	// classifier. With the breaker open (Redis was just found down) it
	// answers at once, without waiting on Redis again.
	err = l.run(ctx, p, maxWaitUS, r)
	if err != nil && (errors.Is(err, reach.ErrOpen) || unreachable(ctx, err)) {
		return l.fallback(p, maxWaitUS, err, r)
	}
	if err != nil {
		if cerr := callerDone(ctx); cerr != nil {
			// The caller's context ended: say so in a way errors.Is sees, even
			// when go-redis reported it as an i/o timeout on the socket.
			return fmt.Errorf("%w: %w", cerr, err)
		}
		return err
	}
	if watch && l.afterDecision(ctx, p, gen) && (p.wake == nil || r.standing) {
		// Made on a restarted Redis's empty state: again, charged. A wake-up
		// that found its booking standing wrote nothing, and may have stood
		// only because the holds were not back yet: it is made again too.
		// (One that booked anew wakes again at its new turn.)
		return l.decide(ctx, p, maxWaitUS, r)
	}
	if p.wake != nil {
		// A wake-up: its booking was counted when it was made.
		return nil
	}
	if !r.granted && r.by < 0 {
		l.sawHold(ctx, p, r, watch) // kept, to be placed again (rehold.go)
	} else if sent > 0 {
		l.sawNoHold(p, r, sent) // a kept hold found released
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

// decisionToken is tokenKey for a decision (decide.lua), which carries a
// token only when decideDedupe is on.
func (l *Limiter) decisionToken(h *keyEntry) any {
	if l.decideDedupe {
		return l.newToken(h)
	}
	return h.tok
}

func (l *Limiter) run(ctx context.Context, p *plan, maxWaitUS int64, r *reply) error {
	n := p.n
	e := evalCalls.Get().(*evalCall)
	if size := 4 + p.nq + n + p.nOutside + 4 + 6*n + 2 + bookingLen*n; cap(e.cmd) < size {
		e.cmd = make([]any, 0, size)
	}
	switch {
	case l.plain(p, maxWaitUS):
		return l.runPlain(ctx, p, maxWaitUS, e, r)
	case p.reps > 1:
		if err := l.sendBatch(ctx, p, e); err != nil {
			return err
		}
		*r = p.out[0]
		return nil
	}
	s, tail := script.Decide, any(maxWaitUS)
	switch {
	case p.wake != nil:
		s = script.Wake
	case p.leaseUS > 0:
		s, tail = script.Lease, p.leaseUS
	}
	cmd := l.quotaCall(e.cmd[:0], p, s)
	cmd = append(cmd, tail)
	if w := p.wake; w != nil {
		cmd = append(cmd, w.grantUS)
		for i := range n {
			for _, x := range w.per[i].booking {
				cmd = append(cmd, x)
			}
		}
	}
	v, err := l.send(ctx, e, s, cmd)
	if err != nil {
		return err
	}
	if err := parseReply(v, n, p.nq, 2, r); err != nil {
		return err
	}
	if r.granted && !r.standing && p.leaseUS == 0 {
		r.windowResets(p)
	}
	if r.standing && p.wake == nil {
		return fmt.Errorf("%w: a decision was answered as a wake-up", ErrBadReply)
	}
	return nil
}

// quotaCall appends to cmd the call of s, a script of the quota layout
// (quota_layout.lua), for p, up to the script's own arguments.
func (l *Limiter) quotaCall(cmd []any, p *plan, s *redis.Script) []any {
	n, nq := p.n, p.nq
	cmd = append(cmd, "evalsha", shaOf(s), 1+nq+n+p.nOutside, l.decisionToken(p.holds[0]))
	for _, h := range p.holds[:nq] {
		cmd = append(cmd, h.boxed)
	}
	for _, k := range p.keys[:n] {
		cmd = append(cmd, k.boxed)
	}
	var holds any = nq
	if p.nOutside > 0 {
		// "h i1 i2 …": the limits whose outside records follow.
		b := strconv.AppendInt(nil, int64(nq), 10)
		for i, k := range p.outside[:n] {
			if k != nil {
				cmd = append(cmd, k.boxed)
				b = strconv.AppendInt(append(b, ' '), int64(i+1), 10)
			}
		}
		holds = string(b)
	}
	cmd = append(cmd, l.decideMS, holds, p.notBefore)
	for i, lim := range p.limits[:n] {
		a := argsFor(lim, p.guards[i])
		cmd = append(cmd, a[0], a[1], a[2], a[3], p.costs[i], a[4])
	}
	return cmd
}

// sendBatch decides p.reps identical decisions of p (one GCRA limit, one
// hold) with batch.lua into p.out.
func (l *Limiter) sendBatch(ctx context.Context, p *plan, e *evalCall) error {
	a := argsFor(p.limits[0], 0)
	cmd := append(e.cmd[:0], "evalsha", shaOf(script.Batch), 3, l.decisionToken(p.holds[0]), p.holds[0].boxed, p.keys[0].boxed,
		l.decideMS, a[2], a[3], p.costs[0], p.reps)
	v, err := l.send(ctx, e, script.Batch, cmd)
	if err != nil {
		return err
	}
	return parseBatch(v, p, p.out)
}

// send runs cmd, a call of script s built in e's buffer, bounded as Options
// say, and returns its reply; e goes back for reuse.
func (l *Limiter) send(ctx context.Context, e *evalCall, s *redis.Script, cmd []any) (any, error) {
	e.c, e.s, e.cmd, e.f = l.decider, s, cmd, l.functions
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
	if l.auto != nil {
		e.via = l.auto.enter()
		defer l.auto.leave()
	}
	if err := l.path.Do(ctx, e.fn); err != nil {
		// e is not reused, nor its reply read: a call its bound ended may
		// still be running (reach.Watch.Call leaves it to finish alone).
		return nil, redisErr("decision", err)
	}
	v := e.v
	clear(e.cmd)
	e.c, e.s, e.v, e.f, e.via = nil, nil, nil, nil, nil
	evalCalls.Put(e)
	return v, nil
}

// boxedSHA holds every script's SHA1, boxed once: a call allocates none.
var boxedSHA = func() map[*redis.Script]any {
	m := map[*redis.Script]any{}
	for _, s := range script.All() {
		m[s] = s.Hash()
	}
	return m
}()

// shaOf is s's SHA1, boxed.
func shaOf(s *redis.Script) any { return boxedSHA[s] }

// boxedFunc holds the name of each script's function in the library
// (script.Function), boxed once; scripts not in it have none.
var boxedFunc = func() map[*redis.Script]any {
	m := map[*redis.Script]any{}
	for _, s := range script.All() {
		if name := script.Function(s); name != "" {
			m[s] = name
		}
	}
	return m
}()

// funcOf is the name of s's function in the library, boxed; nil if none.
func funcOf(s *redis.Script) any { return boxedFunc[s] }

// plain reports whether p can go to allow.lua: one GCRA limit under one
// hold, granted now or booked up to maxWaitUS ahead, on a client that needs
// no retry dedupe.
// allow.lua decides it as decide.lua would, with fewer keys, arguments and
// reply values.
func (l *Limiter) plain(p *plan, maxWaitUS int64) bool {
	return !l.decideDedupe && p.n == 1 && p.nq == 1 && p.nOutside == 0 && p.limits[0].Algorithm == GCRA &&
		p.leaseUS == 0 && p.notBefore == 0 && p.reps <= 1 && p.wake == nil
}

// runPlain decides p with allow.lua.
func (l *Limiter) runPlain(ctx context.Context, p *plan, maxWaitUS int64, e *evalCall, r *reply) error {
	lim := p.limits[0]
	a := argsFor(lim, 0)
	c, interval := int64(p.costs[0]), lim.intervalUS()
	// inc, c·e: e, boxed once, for a cost of 1 (the common call); boxing
	// another allocates.
	inc := a[3]
	if c != 1 {
		inc = c * interval
	}
	cmd := append(e.cmd[:0], "evalsha", shaOf(script.Allow), 2, p.holds[0].boxed, p.keys[0].boxed, a[5], inc, a[6])
	if maxWaitUS > 0 {
		cmd = append(cmd, maxWaitUS)
	}
	v, err := l.send(ctx, e, script.Allow, cmd)
	if err != nil {
		return err
	}
	return parsePlain(v, maxWaitUS, int64(lim.most())*interval, interval, c*interval, r)
}

// parsePlain reads allow.lua's reply to a call charging inc µs (cost c: c·e)
// to a GCRA limit of span µs (m units, one every e µs) into r. An Allow's
// grant or denial by the limit is one integer, the state's tat less Redis's
// time (see the script); every other reply is parseReply's layout, with no
// wait on a grant when maxWaitUS is 0 (a grant now) and none beyond it, and a
// grant with maxWaitUS > 0 (a booking) in the long form, with its booking
// values. Either way the script sends the reset (tat less now) and leaves the
// units left to this side, which finds them as gcra.lua's gcra_left does.
func parsePlain(v any, maxWaitUS, span, e, inc int64, r *reply) error {
	if x, ok := v.(int64); ok {
		switch {
		case maxWaitUS != 0 || x > span:
			return fmt.Errorf("%w: allow.lua answered %d to a call with a max wait of %d µs on a span of %d µs", ErrBadReply, x, maxWaitUS, span)
		case x >= 0:
			*r = reply{granted: true}
			r.per[0].resetUS = x
		default:
			*r = reply{waitUS: -x, by: 1}
			r.per[0].resetUS = -x + span - inc
		}
	} else {
		if err := parseReply(v, 1, 1, 1, r); err != nil {
			return fmt.Errorf("allow.lua: %w", err)
		}
		if r.granted && r.waitUS > maxWaitUS {
			w := r.waitUS
			*r = reply{}
			return fmt.Errorf("%w: allow.lua granted with a wait of %d µs, beyond the max wait of %d µs", ErrBadReply, w, maxWaitUS)
		}
		if r.granted && maxWaitUS > 0 && len(v.([]any)) != headerLen+perLimitLen {
			*r = reply{}
			return fmt.Errorf("%w: allow.lua booked without its booking values", ErrBadReply)
		}
	}
	r.per[0].rem = max(span-r.per[0].resetUS, 0) / e
	return nil
}

// parseReply reads a decision script's reply for n limits of nq quotas into
// r: the one layout of decide.lua, lease.lua, wake.lua, allow.lua and
// batch.lua ({status, wait µs, denied by, grant time µs, lease µs, then
// perLimitLen values per limit: remaining, reset µs, bookingLen booking
// values}). A reply that books nothing may leave out every limit's booking
// values (all 0), sending shortLimitLen values per limit: so a reply has
// headerLen+perLimitLen·n or headerLen+shortLimitLen·n values. status is at
// most maxStatus (2, a standing wake-up; batch.lua's count of grants); it is
// kept in r as granted (≥ 1) and standing (2 when maxStatus is 2). A denial
// (status 0) has a wait.
func parseReply(raw any, n, nq int, maxStatus int64, r *reply) error {
	v, ok := raw.([]any)
	if !ok {
		return fmt.Errorf("%w: %T, not a list", ErrBadReply, raw)
	}
	stride := perLimitLen
	if n > 0 && len(v) == headerLen+shortLimitLen*n {
		stride = shortLimitLen
	}
	if n < 0 || n > maxReplyLimits || len(v) != headerLen+stride*n {
		return fmt.Errorf("%w: %d values for %d limits", ErrBadReply, len(v), n)
	}
	var x [headerLen + perLimitLen*maxReplyLimits]int64
	for i, a := range v {
		k, ok := a.(int64)
		if !ok {
			return fmt.Errorf("%w: value %d is %T, not an integer", ErrBadReply, i, a)
		}
		x[i] = k
	}
	if x[0] < 0 || x[0] > maxStatus || x[1] < 0 || x[2] < -int64(nq) || x[2] > int64(n) || x[4] < 0 || (x[0] == 0 && x[1] == 0) {
		return fmt.Errorf("%w: header %d %d %d %d %d", ErrBadReply, x[0], x[1], x[2], x[3], x[4])
	}
	*r = reply{granted: x[0] >= 1, standing: maxStatus == 2 && x[0] == 2, waitUS: x[1], by: x[2], grantUS: x[3], leaseUS: x[4]}
	for i := range n {
		b := x[headerLen+stride*i:]
		if b[0] < 0 || b[1] < 0 {
			*r = reply{}
			return fmt.Errorf("%w: limit %d remaining %d reset %d", ErrBadReply, i+1, b[0], b[1])
		}
		r.per[i].rem, r.per[i].resetUS = b[0], b[1]
		if stride == perLimitLen {
			copy(r.per[i].booking[:], b[shortLimitLen:perLimitLen])
		}
	}
	return nil
}

// windowResets fills in the reset of each fixed and counter limit of a
// grant, which decide.lua leaves out (0) since the grant time t and wait give
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

// evalCall is one decide.lua call, kept for reuse (evalCalls) so that a
// decision neither builds a closure nor allocates its command.
type evalCall struct {
	c   Client
	s   *redis.Script
	cmd []any
	f   *reach.Functions
	via reach.Processor             // sends the call instead of c (autopipe.go); nil: c
	v   any                         // the reply, read only when fn returned nil
	fn  func(context.Context) error // call, bound once
}

var evalCalls = sync.Pool{New: func() any {
	e := new(evalCall)
	e.fn = e.call
	return e
}}

func (e *evalCall) call(ctx context.Context) error {
	var err error
	e.v, err = reach.Eval(ctx, e.c, e.via, e.f, funcOf(e.s), script.Source(e.s), e.cmd)
	return err
}
