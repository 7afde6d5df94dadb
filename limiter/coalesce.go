package limiter

import (
	"context"
	"fmt"
	"sync"
)

// maxCoalesce is the most decisions one coalesced script call carries.
const maxCoalesce = 256

// coalescer merges concurrent Allow/AllowN calls that are the same decision
// (same key, same GCRA limit, same n) into one script call: while a call for
// a decision is in flight, later callers queue; when it lands, the queue goes
// out as the next call, led by the first caller in it (group commit). No timer:
// a lone caller goes out at once.
type coalescer struct {
	mu     sync.Mutex
	groups map[coalesceKey]*coalesceGroup
}

type coalesceKey struct {
	key   *keyEntry
	limit Limit
	n     int
}

type coalesceGroup struct {
	queue []*coalesceWaiter
}

type coalesceWaiter struct {
	done chan struct{}
	lead []*coalesceWaiter // set when this waiter leads the next call
	rep  reply
	err  error
	// own is set when the waiter must decide alone (the coalesced call failed
	// or was answered by the failure policy).
	own bool
}

// coalesced decides p (one GCRA limit, max wait 0) through the coalescer.
func (l *Limiter) coalesced(ctx context.Context, p *plan, r *reply) error {
	c := l.coalesce
	k := coalesceKey{p.keys[0], p.limits[0], p.costs[0]}
	w := &coalesceWaiter{}
	c.mu.Lock()
	g, busy := c.groups[k]
	if !busy {
		g = &coalesceGroup{}
		c.groups[k] = g
		w.lead = []*coalesceWaiter{w}
	} else {
		w.done = make(chan struct{}) // only a queued caller waits
		g.queue = append(g.queue, w)
	}
	c.mu.Unlock()
	if busy {
		<-w.done // bounded by the call in flight (and its Timeout)
	}
	if w.lead != nil {
		l.leadBatch(ctx, p, k, g, w.lead)
	}
	if w.own {
		return l.decide(ctx, p, 0, r)
	}
	*r = w.rep
	return w.err
}

// leadBatch sends batch as one call, answers every waiter in it, and hands
// the queue that built up meanwhile to its first waiter.
func (l *Limiter) leadBatch(ctx context.Context, p *plan, k coalesceKey, g *coalesceGroup, batch []*coalesceWaiter) {
	var head reply
	bp := p
	if len(batch) > 1 {
		bp = new(plan)
		*bp = *p
		bp.reps, bp.out = len(batch), make([]reply, len(batch))
	}
	err := l.decide(context.WithoutCancel(ctx), bp, 0, &head)
	for i, w := range batch {
		switch {
		case err != nil || head.degraded:
			// Decide alone: the failure policy (or the error) per caller.
			w.own = true
		case len(batch) == 1:
			w.rep = head
		default:
			w.rep = bp.out[i]
		}
	}
	c := l.coalesce
	c.mu.Lock()
	var next []*coalesceWaiter
	if len(g.queue) == 0 {
		delete(c.groups, k)
	} else {
		n := min(len(g.queue), maxCoalesce)
		next, g.queue = g.queue[:n:n], g.queue[n:]
	}
	c.mu.Unlock()
	if next != nil {
		next[0].lead = next
		close(next[0].done)
	}
	for _, w := range batch[1:] {
		close(w.done)
	}
}

// parseBatch reads quota.lua's coalesced reply into out, one reply per
// decision (see the script's header).
func parseBatch(v []any, p *plan, out []reply) error {
	if len(v) != 9 {
		return fmt.Errorf("%w: quota.lua returned %d values for %d coalesced decisions", ErrBadReply, len(v), len(out))
	}
	var x [9]int64
	for i, a := range v {
		k, ok := a.(int64)
		if !ok {
			return fmt.Errorf("%w: quota.lua value %d is %T, not an integer", ErrBadReply, i, a)
		}
		x[i] = k
	}
	g := int(x[0])
	if g < 0 || g > len(out) || x[1] < 0 || x[2] < -1 || x[2] > 1 || x[5] < 0 || x[7] < 0 || x[8] < 0 {
		return fmt.Errorf("%w: quota.lua coalesced header %d %d %d", ErrBadReply, x[0], x[1], x[2])
	}
	c, e := int64(p.costs[0]), p.limits[0].intervalUS()
	for i := range out {
		if i < g {
			out[i] = reply{granted: true}
			out[i].per[0] = perLimit{rem: max(x[4]-int64(i)*c, 0), resetUS: x[5] + int64(i)*c*e}
			continue
		}
		out[i] = reply{waitUS: x[1], by: x[2]}
		out[i].per[0] = perLimit{rem: x[7], resetUS: x[8]}
	}
	return nil
}
