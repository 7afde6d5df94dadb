package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// maxCoalesce is the most decisions one coalesced script call carries.
const maxCoalesce = 256

// coalescer merges concurrent single-key Allow calls that are the same decision
// (same key, same GCRA limit, same n) into one script call: while a call for
// a decision is in flight, later callers queue; when it lands, the queue goes
// out as the next call (group commit). No timer: a lone caller goes out at
// once, with its own context, as without coalescing. Queued callers keep
// their own deadlines: one that gives up before its call is sent is dropped
// from it (and not charged).
type coalescer struct {
	mu     sync.Mutex
	groups map[coalesceKey]*coalesceGroup
}

type coalesceKey struct {
	key   *keyEntry
	limit Limit
	n     int
}

// coalesceGroup exists while a call for its key is in flight.
type coalesceGroup struct {
	queue []*coalesceWaiter
}

// Waiter states.
const (
	waiting   int32 = iota
	claimed         // taken into a call: it will be answered
	abandoned       // its caller gave up first: skipped
)

type coalesceWaiter struct {
	ctx   context.Context
	state atomic.Int32
	done  chan struct{}
	rep   reply
	err   error
}

// batchUnreachable is decide's answer for a coalesced call when Redis cannot
// be reached: the failure policy is then applied per caller, with cause.
type batchUnreachable struct{ cause error }

func (e *batchUnreachable) Error() string { return "limiter: coalesced call: " + e.cause.Error() }
func (e *batchUnreachable) Unwrap() error { return e.cause }

// coalesced decides p (one GCRA limit, max wait 0) through the coalescer.
func (l *Limiter) coalesced(ctx context.Context, p *plan, r *reply) error {
	c := l.coalesce
	k := coalesceKey{p.keys[0], p.limits[0], p.costs[0]}
	c.mu.Lock()
	g, busy := c.groups[k]
	if !busy {
		// Alone: go out now, as an uncoalesced call would; whoever queues
		// meanwhile is sent when this call is done (even if it panics).
		g = &coalesceGroup{}
		c.groups[k] = g
		c.mu.Unlock()
		defer l.handOff(k, g, p)
		return l.decide(ctx, p, 0, r)
	}
	w := &coalesceWaiter{ctx: ctx, done: make(chan struct{})}
	g.queue = append(g.queue, w)
	c.mu.Unlock()
	select {
	case <-w.done:
		*r = w.rep
		return w.err
	case <-ctx.Done():
		// Not sent yet: leave the queue uncharged. Already sent: the caller
		// leaves anyway, as it would leave a call of its own in flight.
		w.state.CompareAndSwap(waiting, abandoned)
		return fmt.Errorf("limiter: coalesced decision: %w", ctx.Err())
	}
}

// handOff sends what queued for g while its call was in flight, in calls of
// up to maxCoalesce decisions, from a goroutine of its own (the caller that
// led the last call has its answer and goes), until the queue is empty.
func (l *Limiter) handOff(k coalesceKey, g *coalesceGroup, p *plan) {
	if batch := l.nextBatch(k, g); batch != nil {
		// A copy: p is the caller's, often on its stack.
		cp := new(plan)
		*cp = *p
		go l.runBatches(k, g, cp, batch)
	}
}

// nextBatch takes the next call's waiters off g's queue, skipping callers
// that gave up; nil (and g removed) when none is left.
func (l *Limiter) nextBatch(k coalesceKey, g *coalesceGroup) []*coalesceWaiter {
	c := l.coalesce
	c.mu.Lock()
	defer c.mu.Unlock()
	var batch []*coalesceWaiter
	for len(g.queue) > 0 && len(batch) < maxCoalesce {
		w := g.queue[0]
		g.queue[0] = nil
		g.queue = g.queue[1:]
		if w.state.CompareAndSwap(waiting, claimed) {
			batch = append(batch, w)
		}
	}
	if len(batch) == 0 {
		delete(c.groups, k)
	}
	return batch
}

func (l *Limiter) runBatches(k coalesceKey, g *coalesceGroup, p *plan, batch []*coalesceWaiter) {
	for batch != nil {
		l.runBatch(p, batch)
		batch = l.nextBatch(k, g)
	}
}

// runBatch sends batch as one call and answers every waiter in it.
func (l *Limiter) runBatch(p *plan, batch []*coalesceWaiter) {
	defer func() {
		if v := recover(); v != nil {
			// Nobody up this goroutine's stack could handle it: every waiter
			// gets the panic as its error instead.
			for _, w := range batch {
				w.rep, w.err = reply{}, fmt.Errorf("limiter: coalesced decision panicked: %v", v)
			}
		}
		for _, w := range batch {
			close(w.done)
		}
	}()
	// The call may run until the last waiter's deadline (none if any has none).
	ctx, last := context.WithoutCancel(batch[0].ctx), time.Time{}
	for _, w := range batch {
		dl, ok := w.ctx.Deadline()
		if !ok {
			last = time.Time{}
			break
		}
		if dl.After(last) {
			last = dl
		}
	}
	if !last.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, last)
		defer cancel()
	}
	bp := new(plan)
	*bp = *p
	if len(batch) > 1 {
		bp.reps, bp.out = len(batch), make([]reply, len(batch))
	}
	var head reply
	err := l.decide(ctx, bp, 0, &head)
	var down *batchUnreachable
	errors.As(err, &down)
	for i, w := range batch {
		switch {
		case down != nil:
			w.err = l.fallback(p, 0, down.cause, &w.rep)
		case err != nil:
			w.err = err
		case len(batch) == 1:
			w.rep = head
		default:
			w.rep = bp.out[i]
		}
	}
}

// parseBatch reads batch.lua's reply into out, one reply per decision (see
// the script's header): parseReply's layout, with two limit parts.
func parseBatch(v any, p *plan, out []reply) error {
	var x reply
	if err := parseReply(v, 2, 1, int64(len(out)), &x); err != nil {
		return fmt.Errorf("batch.lua: %w", err)
	}
	g := 0
	if x.granted {
		g = int(v.([]any)[0].(int64)) // parseReply checked it
	}
	if x.by > 1 || g < len(out) && (x.by == 0 || x.waitUS == 0) {
		// One limit; the decisions after the g-th are refused, by the hold or it.
		return fmt.Errorf("%w: batch.lua refused %d decisions, by %d, wait %d µs", ErrBadReply, len(out)-g, x.by, x.waitUS)
	}
	first, after := x.per[0], x.per[1]
	c, e := int64(p.costs[0]), p.limits[0].intervalUS()
	for i := range out {
		if i < g {
			out[i] = reply{granted: true}
			out[i].per[0] = perLimit{rem: max(first.rem-int64(i)*c, 0), resetUS: first.resetUS + int64(i)*c*e}
			continue
		}
		out[i] = reply{waitUS: x.waitUS, by: x.by}
		out[i].per[0] = perLimit{rem: after.rem, resetUS: after.resetUS}
	}
	return nil
}
