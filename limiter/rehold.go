package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/reach"
	"github.com/redquota/redquota/internal/script"
)

// maxKeptHolds bounds how many holds a Limiter remembers to place again after
// Redis loses its state; beyond it the holds ending soonest are forgotten.
const maxKeptHolds = 10000

// keptHolds are the holds in force that this Limiter placed (Hold) or was
// denied by, each with its end on the local (monotonic) clock, so that a
// Redis that lost its state (restart.go) gets them again. The zero value is
// empty.
type keptHolds struct {
	base time.Time // the origin of the ends; set with the first hold
	// last is the latest end, as time since base, of the holds kept; 0 when
	// none is (or all have ended): decisions read it alone.
	last atomic.Int64
	mu   sync.Mutex
	m    map[string]keptHold // hold key → its end and reason
	// unasked counts, roughly, the holds kept without a reason that
	// askReasons has not asked for: decisions read it alone.
	unasked atomic.Int64
}

type keptHold struct {
	end    time.Duration // since base
	at     time.Duration // since base: when it was last kept (its hold was in Redis by then)
	reason string        // "" when none is known
	// asked: its reason was asked of Redis (a hold kept without one, seen
	// denying a decision: askReasons).
	asked bool
}

// inForce reports whether a kept hold may not have ended yet. Without one
// it is a single atomic load.
func (k *keptHolds) inForce() bool {
	last := k.last.Load()
	if last == 0 {
		return false
	}
	if time.Duration(last) > time.Since(k.base) {
		return true
	}
	k.last.CompareAndSwap(last, 0)
	return false
}

// keep remembers that hold key holds until left from now (a longer end kept
// already stands), with reason unless it is "". It reports whether no hold
// was in force before it.
func (k *keptHolds) keep(key string, left time.Duration, reason string) (first bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m, k.base = map[string]keptHold{}, time.Now()
	}
	now := time.Since(k.base)
	first = time.Duration(k.last.Load()) <= now
	end := now + left
	h, ok := k.m[key]
	if ok && h.end >= end && (reason == "" || reason == h.reason) {
		return first
	}
	if !ok && len(k.m) >= maxKeptHolds && !k.makeRoom(now, end) {
		return first
	}
	h.end, h.at = max(h.end, end), now
	if reason != "" {
		h.reason = reason
	} else if !ok {
		k.unasked.Add(1)
	}
	k.m[key] = h
	if int64(h.end) > k.last.Load() {
		k.last.Store(int64(h.end))
	}
	return first
}

// makeRoom drops the holds that have ended, or else the one ending soonest
// if it ends before end. It reports whether there is room for one more.
func (k *keptHolds) makeRoom(now, end time.Duration) bool {
	soonest, at := "", end
	for key, h := range k.m {
		if h.end <= now {
			delete(k.m, key)
		} else if h.end < at {
			soonest, at = key, h.end
		}
	}
	if len(k.m) < maxKeptHolds {
		return true
	}
	if soonest == "" {
		return false
	}
	delete(k.m, soonest)
	return true
}

// forget drops hold key: it was released, or its quota reset.
func (k *keptHolds) forget(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.m[key]; !ok {
		return
	}
	delete(k.m, key)
	k.updateLast()
}

// updateLast sets last to the latest end kept, under mu.
func (k *keptHolds) updateLast() {
	var last time.Duration
	for _, h := range k.m {
		last = max(last, h.end)
	}
	k.last.Store(int64(last))
}

// since is the time since base, the clock of a decision's sending (see
// forgetGone); 0 before any hold was kept. It takes no lock (it runs on every
// decision while a hold is in force): base is written once, before the first
// store to last, so a nonzero last orders its read, as in inForce.
func (k *keptHolds) since() time.Duration {
	if k.last.Load() == 0 {
		return 0
	}
	return time.Since(k.base)
}

// forgetGone drops the kept holds of p's quotas that were kept before sent:
// a decision sent at sent (since base) was granted at once, so Redis ran it
// after those holds were placed and found none of them in force. Another
// process released them (redquota release), or they ended early; placed
// again after a restart they would stop the fleet for nothing.
func (k *keptHolds) forgetGone(p *plan, sent time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	gone := false
	for _, e := range p.holds[:p.nq] {
		if h, ok := k.m[e.key]; ok && h.at < sent {
			delete(k.m, e.key)
			gone = true
		}
	}
	if gone {
		k.updateLast()
	}
}

// left returns the holds still in force, with how long each has left, and
// drops those that have ended.
func (k *keptHolds) left() map[string]keptHold {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Since(k.base)
	out := make(map[string]keptHold, len(k.m))
	for key, h := range k.m {
		if h.end <= now {
			delete(k.m, key)
			continue
		}
		out[key] = keptHold{end: h.end - now, reason: h.reason}
	}
	return out
}

// placeAgainBatch is the most script calls of a resync (kept holds placed
// again, RestartSpent's charges) one pipeline carries.
const placeAgainBatch = 256

// placeAgain places every kept hold again for what it has left (restart.go:
// Redis lost them), with its reason, and returns the first error. It runs
// while decisions wait for the restart check, so on a go-redis client the
// holds go out in pipelines (evalPipelined), not a round trip each.
func (l *Limiter) placeAgain(ctx context.Context) error {
	left := l.restart.holds.left()
	pl, ok := l.client.(pipeliner)
	if !ok {
		var firstErr error
		for key, h := range left {
			if _, err := l.placeHold(ctx, key, h.end, h.reason); err != nil && firstErr == nil {
				firstErr = err
			}
			if ctx.Err() != nil {
				break
			}
		}
		return firstErr
	}
	keys := make([]string, 0, len(left))
	for key := range left {
		keys = append(keys, key)
	}
	return l.evalPipelined(ctx, "hold", pl, script.Hold, len(keys),
		func(i int) ([]string, []any) {
			return []string{keys[i]}, []any{max(left[keys[i]].end.Microseconds(), 1)}
		},
		func(pipe redis.Pipeliner, i int) redis.Cmder {
			h := left[keys[i]]
			if h.reason == "" {
				return nil
			}
			return pipe.Set(ctx, holdReasonKey(keys[i]), h.reason, max(h.end.Truncate(time.Millisecond), time.Millisecond))
		},
		func(v int64) bool { return v > 0 }) // hold.lua: µs the hold lasts
}

// evalPipelined runs script s n times (call gives the keys and arguments
// of the i-th) in pipelines of placeAgainBatch, each reply checked by valid,
// with the commands extra queues beside each call (nil: none). s is loaded
// first (on every master of a cluster) and sent as EVALSHA; calls a node
// answers NOSCRIPT (one the load did not reach) go again as EVAL, and every
// call goes as EVAL when the server refused the load. Each
// pipeline goes through the path, bounded as any call.
func (l *Limiter) evalPipelined(ctx context.Context, op string, pl pipeliner, s *redis.Script, n int,
	call func(i int) ([]string, []any), extra func(pipe redis.Pipeliner, i int) redis.Cmder, valid func(int64) bool) error {
	if n == 0 {
		return nil
	}
	// A server that refuses the load (an ACL without SCRIPT LOAD, as
	// decisions allow: they fall back to EVAL) gets every call as EVAL.
	loaded := true
	if err := l.call(ctx, op, func(ctx context.Context) error { return s.Load(ctx, l.client).Err() }); err != nil {
		var re redis.Error
		if !errors.As(err, &re) {
			return err
		}
		loaded = false
	}
	for from := 0; from < n; from += placeAgainBatch {
		to := min(n, from+placeAgainBatch)
		err := l.call(ctx, op, func(ctx context.Context) error {
			evals := make([]*redis.Cmd, to-from)
			var extras []redis.Cmder
			pipe := pl.Pipeline()
			for i := range evals {
				keys, args := call(from + i)
				if loaded {
					evals[i] = pipe.EvalSha(ctx, s.Hash(), keys, args...)
				} else {
					evals[i] = pipe.Eval(ctx, script.Source(s), keys, args...)
				}
				if extra != nil {
					if c := extra(pipe, from+i); c != nil {
						extras = append(extras, c)
					}
				}
			}
			_, _ = pipe.Exec(ctx) // each reply is checked below
			var again redis.Pipeliner
			for i, c := range evals {
				if reach.NoScript(c.Err()) {
					if again == nil {
						again = pl.Pipeline()
					}
					keys, args := call(from + i)
					evals[i] = again.Eval(ctx, script.Source(s), keys, args...)
				}
			}
			if again != nil {
				_, _ = again.Exec(ctx)
			}
			for _, c := range evals {
				v, err := c.Int64()
				if err != nil {
					return err
				}
				if !valid(v) {
					return fmt.Errorf("%w: %s replied %d", ErrBadReply, op, v)
				}
			}
			for _, c := range extras {
				if err := c.Err(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// toAsk returns up to n kept holds in force without a reason, not asked
// for one yet, and marks them asked.
func (k *keptHolds) toAsk(n int) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Since(k.base)
	var out []string
	for key, h := range k.m {
		if len(out) == n {
			break
		}
		if h.reason == "" && !h.asked && h.end > now {
			h.asked = true
			k.m[key] = h
			out = append(out, key)
		}
	}
	if len(out) < n {
		k.unasked.Store(0) // none left: the holds counted ended, or came with a reason
	}
	return out
}

// setReason records reason for hold key when it is kept without one.
func (k *keptHolds) setReason(key, reason string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if h, ok := k.m[key]; ok && h.reason == "" {
		h.reason = reason
		k.m[key] = h
	}
}

// askReasons reads, off the decision path, the reasons of the kept holds
// that have none (those that denied a decision of this Limiter), in
// pipelines of placeAgainBatch GETs, each bounded by registryTimeout, so that a
// hold this Limiter places again after a restart keeps the reason its setter
// gave. One runs at a time (restartGuard.asking); it ends when none is left
// to ask. A reason Redis does not answer stays unknown.
func (l *Limiter) askReasons() {
	g := l.restart
	for {
		keys := g.holds.toAsk(placeAgainBatch)
		if len(keys) == 0 {
			g.asking.Store(false)
			// A hold kept after the last look, whose sawHold saw this one
			// running, is asked for by another round.
			if g.holds.unasked.Load() == 0 || !g.asking.CompareAndSwap(false, true) {
				return
			}
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), registryTimeout)
		cmds := make([]*redis.StringCmd, len(keys))
		switch c := l.client.(type) {
		case pipeliner:
			pipe := c.Pipeline()
			for i, k := range keys {
				cmds[i] = pipe.Get(ctx, holdReasonKey(k))
			}
			_, _ = pipe.Exec(ctx)
		case interface {
			Get(ctx context.Context, key string) *redis.StringCmd
		}:
			for i, k := range keys {
				cmds[i] = c.Get(ctx, holdReasonKey(k))
			}
		}
		cancel()
		for i, c := range cmds {
			if c != nil && c.Err() == nil && c.Val() != "" {
				g.holds.setReason(keys[i], c.Val())
			}
		}
	}
}

// sawHold remembers the hold that denied decision p (reply r), to place it
// again if Redis loses it, and starts watching for that when no hold was in
// force (watch: whether decisions were watching already).
func (l *Limiter) sawHold(ctx context.Context, p *plan, r *reply, watch bool) {
	j := int(-r.by) - 1
	if j < 0 || j >= p.nq || r.waitUS <= 0 {
		return
	}
	if l.restart.holds.keep(p.holds[j].key, us(r.waitUS), "") && !watch {
		l.watchRunID(ctx)
	}
	if l.restart.holds.unasked.Load() > 0 && l.restart.asking.CompareAndSwap(false, true) {
		go l.askReasons()
	}
}

// sawNoHold forgets the kept holds a decision found gone (keptHolds.forgetGone):
// granted at once, made on the state every restart check has vouched for:
// no connection dialed since the last check that succeeded (one that could
// not read the run_id may have been answered by a Redis that lost the
// holds), and not owed a resync (a lost hold still waits to be placed
// again).
func (l *Limiter) sawNoHold(p *plan, r *reply, sent time.Duration) {
	g := l.restart
	if !r.granted || r.degraded || r.waitUS > 0 || sent == 0 || l.path.Watch().Dials() > g.checked.Load() {
		return
	}
	g.mu.Lock()
	owed := g.owed
	g.mu.Unlock()
	if !owed {
		g.holds.forgetGone(p, sent)
	}
}
