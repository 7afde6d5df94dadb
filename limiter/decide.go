package limiter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redquota/redquota/internal/keys"
	"github.com/redquota/redquota/scripts"
)

// plan is one decision ready to send: its keys and the limits it charges.
type plan struct {
	head   string
	names  []string // limit names ("" for a single-key limit)
	limits []Limit
	costs  []int
	keys   []string // hold, token, then one state key per limit
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

// single plans n units of limit under key.
func (l *Limiter) single(key string, limit Limit, n int) (*plan, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if err := limit.Validate(); err != nil {
		return nil, err
	}
	if err := checkCost(limit, n); err != nil {
		return nil, err
	}
	head := l.head(key)
	return &plan{
		head:   head,
		names:  []string{""},
		limits: []Limit{limit},
		costs:  []int{n},
		keys:   []string{head + ":hold", head + ":tok", stateKey(head, "", limit.Algorithm)},
	}, nil
}

// quota plans cost against q. Limits the cost does not name are left out.
func (l *Limiter) quota(q Quota, cost Cost) (*plan, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	for name, c := range cost {
		if _, ok := q.Find(name); !ok {
			return nil, fmt.Errorf("%w: %q is not a limit of quota %q", ErrUnknownLimit, name, q.Name)
		}
		if c < 0 {
			return nil, fmt.Errorf("%w: %q costs %d", ErrInvalidCost, name, c)
		}
	}
	head := l.head(q.Name)
	p := &plan{head: head, keys: []string{head + ":hold", head + ":tok"}}
	for _, nl := range q.Limits {
		c := cost[nl.Name]
		if c == 0 {
			continue
		}
		if err := checkCost(nl.Limit, c); err != nil {
			return nil, fmt.Errorf("quota %q limit %q: %w", q.Name, nl.Name, err)
		}
		p.names = append(p.names, nl.Name)
		p.limits = append(p.limits, nl.Limit)
		p.costs = append(p.costs, c)
		p.keys = append(p.keys, stateKey(head, nl.Name, nl.Limit.Algorithm))
	}
	if len(p.limits) == 0 {
		return nil, fmt.Errorf("%w: cost charges no limit of quota %q", ErrInvalidCost, q.Name)
	}
	return p, nil
}

// reply is quota.lua's answer.
type reply struct {
	granted  bool
	waitUS   int64 // delay until the grant, or retry-after when denied
	by       int64 // 0 none, -1 hold, i = limit i (1-based)
	grantUS  int64 // Redis time of the grant, µs
	per      []perLimit
	degraded bool
}

type perLimit struct{ rem, resetUS, mark int64 }

// noDeadline is the max wait sent when a context has no deadline: far enough
// to mean "any time", small enough for exact Lua arithmetic.
const noDeadline = int64(1) << 50

// decide runs quota.lua for p, reserving up to maxWaitUS ahead (0 = now only).
// When Redis cannot be reached it answers under the failure policy.
func (l *Limiter) decide(ctx context.Context, p *plan, maxWaitUS int64) (*reply, error) {
	done, berr := l.breaker.Allow()
	if berr != nil {
		// Open breaker: Redis was just found unreachable; do not wait on it again.
		return l.fallback(p, maxWaitUS, berr)
	}
	r, err := l.run(ctx, p, maxWaitUS)
	if err != nil && unreachable(ctx, err) {
		done(err)
		return l.fallback(p, maxWaitUS, err)
	}
	done(nil)
	if err != nil {
		return nil, err
	}
	if r.granted {
		l.stats.allowed.Add(1)
	} else {
		l.stats.denied.Add(1)
	}
	return r, nil
}

func (l *Limiter) run(ctx context.Context, p *plan, maxWaitUS int64) (*reply, error) {
	n := len(p.limits)
	args := make([]any, 0, 3+5*n)
	token := ""
	if l.dedupe {
		token = l.tokenPfx + strconv.FormatUint(l.tokenSeq.Add(1), 36)
		p.keys[1] = p.head + ":tok:" + token
	}
	args = append(args, maxWaitUS, token, l.dedupeMS)
	for i, lim := range p.limits {
		args = append(args, lim.Algorithm.script(), lim.periodUS(), lim.Max(), lim.intervalUS(), p.costs[i])
	}
	if l.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.opts.Timeout)
		defer cancel()
	}
	v, err := scripts.Quota.Run(ctx, l.client, p.keys, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("limiter: quota.lua: %w", err)
	}
	return parseReply(v, n)
}

func parseReply(v []any, n int) (*reply, error) {
	if len(v) != 4+3*n {
		return nil, fmt.Errorf("%w: quota.lua returned %d values for %d limits", ErrBadReply, len(v), n)
	}
	ints := make([]int64, len(v))
	for i, x := range v {
		k, ok := x.(int64)
		if !ok {
			return nil, fmt.Errorf("%w: quota.lua value %d is %T, not an integer", ErrBadReply, i, x)
		}
		ints[i] = k
	}
	if ints[0] != 0 && ints[0] != 1 || ints[1] < 0 || ints[2] < -1 || ints[2] > int64(n) {
		return nil, fmt.Errorf("%w: quota.lua header %v", ErrBadReply, ints[:4])
	}
	r := &reply{granted: ints[0] == 1, waitUS: ints[1], by: ints[2], grantUS: ints[3], per: make([]perLimit, n)}
	for i := range n {
		b := 4 + 3*i
		r.per[i] = perLimit{rem: ints[b], resetUS: ints[b+1], mark: ints[b+2]}
	}
	return r, nil
}

func us(v int64) time.Duration { return time.Duration(v) * time.Microsecond }

func (r *reply) single(limit Limit) Result {
	res := Result{Limit: limit, Allowed: r.granted, Degraded: r.degraded}
	if len(r.per) > 0 {
		res.Remaining = int(r.per[0].rem)
		res.ResetAfter = us(r.per[0].resetUS)
	}
	if !r.granted {
		res.RetryAfter = us(r.waitUS)
	}
	return res
}

func (r *reply) quota(p *plan) QuotaResult {
	q := QuotaResult{Allowed: r.granted, Degraded: r.degraded, Limits: make([]LimitResult, len(p.limits))}
	for i, lim := range p.limits {
		res := Result{Limit: lim, Allowed: r.granted, Degraded: r.degraded}
		if i < len(r.per) {
			res.Remaining = int(r.per[i].rem)
			res.ResetAfter = us(r.per[i].resetUS)
			q.ResetAfter = max(q.ResetAfter, res.ResetAfter)
		}
		q.Limits[i] = LimitResult{Name: p.names[i], Result: res}
	}
	if !r.granted {
		q.RetryAfter = us(r.waitUS)
		switch {
		case r.by == -1:
			q.DeniedBy = HoldName
		case r.by >= 1 && int(r.by) <= len(p.names):
			q.DeniedBy = p.names[r.by-1]
			q.Limits[r.by-1].RetryAfter = q.RetryAfter
		}
	}
	return q
}

// unreachable reports whether err means Redis could not be reached or answer
// (so the failure policy applies) rather than a caller's cancellation or a
// script error.
func unreachable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false // the caller gave up; not Redis's fault
	}
	if errors.Is(err, ErrBadReply) {
		return false
	}
	return isNetworkError(err)
}
