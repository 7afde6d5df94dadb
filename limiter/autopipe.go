package limiter

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/reach"
)

// Concurrent decisions share round trips: while a decision's call is in
// flight, the next ones go through the client's own autopipeliner (go-redis's
// AsyncAutoPipeline), which writes the calls that arrive together as one pipeline
// and reads their replies in one go. Each decision is still its own script
// call, atomic in Redis, with its own reply, in one round trip; what the
// decisions share is the write, the read and the system calls around them,
// which are most of what a decision costs the client and the server (issue
// 19: on 10 000 keys, from 32 goroutines, a plain Allow's throughput was
// redis_rate's; with this it is several times it). A decision alone (a
// sequential caller) goes out at once on its own connection, as before: the
// autopipeliner's hand-off is for when there is something to share.
//
// The calls keep their NoRetry (reach.Eval), so the autopipeliner never sends
// a pipeline holding a decision twice; a batch that fails fails each of its
// decisions, which then answer under the failure policy like any other.
// Clients without AutoPipeline (not go-redis's), and Options.ReplicaAck's
// calls, go out one by one.
type autoPipe struct {
	c        autoPipeliner
	inflight atomic.Int32
	p        atomic.Pointer[redis.AutoPipeliner]
	off      atomic.Bool // the client refused one (closed): one by one from now on
	mu       sync.Mutex
}

// autoPipeliner is a go-redis client with an autopipeliner:
// *redis.Client, *redis.ClusterClient and *redis.Ring.
type autoPipeliner interface {
	AsyncAutoPipeline() (*redis.AutoPipeliner, error)
}

// apSend sends a call through the autopipeliner's deferred face and waits
// for it under the call's context: a caller whose deadline ends, or whose
// call's bound (Options.Timeout) does, stops waiting at once, as a call sent
// alone would, and the call finishes alone (its reply is not read, as a
// detached call's is not: reach.Watch.Call). The blocking face would wait for
// the batch whatever the context.
type apSend struct{ p *redis.AutoPipeliner }

func (s apSend) Process(ctx context.Context, cmd redis.Cmder) error {
	return s.p.Submit(ctx, cmd).WaitContext(ctx)
}

// newAutoPipe returns the sharing of c's round trips, or nil when c has no
// autopipeliner.
func newAutoPipe(c Client) *autoPipe {
	ap, ok := c.(autoPipeliner)
	if !ok || reach.IsNil(c) {
		return nil
	}
	return &autoPipe{c: ap}
}

// apDirect is how many decisions go out on their own connections before the
// next ones share the autopipeliner's round trips: below about four callers at
// once, a batch holds one to three calls and its hand-off costs the client
// more than the shared write saves (measured on 10 000 keys: from 4
// goroutines, 0.77x redis_rate's throughput when every call after the first
// shared, about 1x with 4 alone; from 32 goroutines, 2-3x either way).
const apDirect = 4

// enter counts a decision's call in flight and returns how to send it: nil
// (alone: on the client, as usual) or the autopipeliner. leave must follow.
func (a *autoPipe) enter() reach.Processor {
	if a.inflight.Add(1) <= apDirect || a.off.Load() {
		return nil
	}
	if p := a.p.Load(); p != nil {
		return apSend{p}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.p.Load(); p != nil {
		return apSend{p}
	}
	if a.off.Load() {
		return nil
	}
	// The client's one deferred autopipeliner (go-redis caches it and
	// closes it with the client), with the client's AutoPipelineOptions or
	// go-redis's defaults.
	p, err := a.c.AsyncAutoPipeline()
	if err != nil {
		a.off.Store(true)
		return nil
	}
	a.p.Store(p)
	return apSend{p}
}

func (a *autoPipe) leave() { a.inflight.Add(-1) }
