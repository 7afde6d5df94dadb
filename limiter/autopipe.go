package limiter

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/reach"
)

// Concurrent decisions share round trips: while apDirect decisions' calls are
// in flight, the next ones go through the client's own autopipeliner
// (go-redis's AsyncAutoPipeline), which writes the calls that arrive together
// as one pipeline and reads their replies in one go. Each decision is still
// its own script call, atomic in Redis, with its own reply, in one round trip;
// what the decisions share is the write, the read and the system calls around
// them, which are most of what a decision costs the client and the server
// (issue 19: on 10 000 keys, from 32 goroutines, a plain Allow's throughput
// was redis_rate's; with this it is about 1.6 times it). A decision alone (a
// sequential caller) goes out at once on its own connection, as before: the
// autopipeliner's hand-off is for when there is something to share.
//
// A shared call behaves as one sent alone would:
//   - it is sent at most once: it keeps its NoRetry (reach.Eval), and the
//     autopipeliner never resends a pipeline holding a NoRetry command; one
//     the autopipeliner refused unsent (closed, its queue full) goes alone;
//   - it waits for its reply as go-redis reads one: to the client's
//     ReadTimeout, whatever the context, on a client without
//     ContextTimeoutEnabled; until the context's deadline on one with it; a
//     cancelled context (no deadline passed) does not end the wait, so a
//     Reserve or a lease Redis booked is not lost to its caller;
//   - a failure answers under the failure policy like any other, but is not
//     counted by the circuit breaker (reach.Shared): a broken connection fails
//     its whole batch at once, which says no more about Redis than one failed
//     call; the calls sent alone keep the breaker's count.
//
// The autopipeliner is the client's (go-redis caches one per client), so its
// AutoPipelineOptions are the client's; and once one exists the client's
// goroutines hold the client until it is closed. Clients without one (not
// go-redis's; a Ring, whose autopipeliner go-redis does not support), and
// Options.ReplicaAck's calls, go out one by one.
type autoPipe struct {
	c         autoPipeliner
	alone     reach.Processor // the client itself
	deadlines bool            // the client honours context deadlines while it reads
	inflight  atomic.Int32
	cur       atomic.Pointer[apSend] // the autopipeliner in use, boxed once
	off       atomic.Bool            // the client has none, or is closed: one by one from now on
	mu        sync.Mutex
}

// autoPipeliner is a go-redis client with an autopipeliner: *redis.Client and
// *redis.ClusterClient (a *redis.Ring has the method, and refuses).
type autoPipeliner interface {
	AsyncAutoPipeline() (*redis.AutoPipeliner, error)
	reach.Processor
}

// newAutoPipe returns the sharing of c's round trips, or nil when c has no
// autopipeliner.
func newAutoPipe(c Client) *autoPipe {
	ap, ok := c.(autoPipeliner)
	if !ok || reach.IsNil(c) {
		return nil
	}
	a := &autoPipe{c: ap, alone: ap}
	switch c := c.(type) {
	case *redis.Client:
		a.deadlines = c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		a.deadlines = c.Options().ContextTimeoutEnabled
	}
	return a
}

// apDirect is how many decisions go out on their own connections before the
// next ones share the autopipeliner's round trips: below about four callers at
// once, a batch holds one to three calls and its hand-off costs the client
// more than the shared write saves. From 4 goroutines (cd bench && go run
// ./cmd/plain -goroutines 4 -passes 5, 2026-12-07), redis_rate's throughput
// times 0.87-1.05 with 4 alone, 0.74-0.97 with apDirect 1 (every call after
// the first shared); from 32 goroutines 1.5-2x (BENCHMARKS.md).
const apDirect = 4

// enter counts a decision's call in flight and returns how to send it: nil
// (alone: on the client, as usual) or through the autopipeliner. leave must
// follow.
func (a *autoPipe) enter() reach.Processor {
	if a.inflight.Add(1) <= apDirect || a.off.Load() {
		return nil
	}
	if s := a.cur.Load(); s != nil && !s.p.IsClosed() {
		return s
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.cur.Load(); s != nil && !s.p.IsClosed() {
		return s
	}
	// The client's deferred autopipeliner (go-redis caches it and closes it
	// with the client; if someone closed it, the client makes a new one),
	// with the client's AutoPipelineOptions or go-redis's defaults.
	p, err := a.c.AsyncAutoPipeline()
	if err != nil {
		a.off.Store(true)
		return nil
	}
	sp := &apSend{a, p}
	a.cur.Store(sp)
	return sp
}

func (a *autoPipe) leave() { a.inflight.Add(-1) }

// apSend sends one call through the autopipeliner's deferred face.
type apSend struct {
	a *autoPipe
	p *redis.AutoPipeliner
}

func (s *apSend) Process(ctx context.Context, cmd redis.Cmder) error {
	err := s.wait(ctx, s.p.Submit(ctx, cmd))
	if errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrAutoPipelineQueueFull) {
		// Refused unsent: alone, as a fresh command (cmd holds the refusal).
		fresh := redis.NewCmd(ctx, cmd.Args()...)
		err = s.a.alone.Process(ctx, reach.SendOnce(fresh))
		if c, ok := cmd.(interface {
			SetVal(any)
			SetErr(error)
		}); ok {
			c.SetVal(fresh.Val())
			c.SetErr(fresh.Err())
		}
	}
	if err != nil {
		return reach.Shared(err)
	}
	return nil
}

// wait waits for f as go-redis waits for a reply (see autoPipe).
func (s *apSend) wait(ctx context.Context, f redis.AutoFuture) error {
	dl, ok := ctx.Deadline()
	if !s.a.deadlines || !ok {
		return f.Wait()
	}
	dctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), dl)
	defer cancel()
	return f.WaitContext(dctx)
}
