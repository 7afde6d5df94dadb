package limiter

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/reach"
	"github.com/redquota/redquota/internal/script"
)

// Options.ReplicaAck: each decision's script goes out in one pipeline with
// WAIT 1 <ms> (WAIT cannot run inside a script), so it is still one round
// trip, and a grant is answered only once a replica holds its write. A
// failover to that replica then cannot lose it.

// ackState is what a Limiter with Options.ReplicaAck needs per decision.
type ackState struct {
	ms    int64         // WAIT's timeout
	bound time.Duration // the whole call's bound (Timeout + ReplicaAck); 0 none
}

// newAck returns the ReplicaAck state for opts, nil when it is off.
func newAck(opts Options, timeout time.Duration) *ackState {
	if opts.ReplicaAck <= 0 {
		return nil
	}
	a := &ackState{ms: max(opts.ReplicaAck.Milliseconds(), 1)}
	if timeout > 0 {
		a.bound = timeout + opts.ReplicaAck
	}
	return a
}

// ackNode returns the client of the Redis that runs a script whose first key
// is key: WAIT must go to the same connection's server.
func ackNode(ctx context.Context, c Client, key string) (*redis.Client, error) {
	switch c := c.(type) {
	case *redis.Client:
		return c, nil
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	case *redis.Ring:
		return c.GetShardClientForKey(key)
	}
	return nil, fmt.Errorf("limiter: Options.ReplicaAck needs a *redis.Client, *redis.ClusterClient or *redis.Ring, not %T", c)
}

// acked runs the decision cmd and WAIT in one pipeline, bounded like any
// decision (Timeout, plus the WAIT's own time). No replica acknowledging in
// time is an error wrapping reach.ErrNotReplicated: the failure policy
// answers, although the primary may have counted the units.
func (l *Limiter) acked(ctx context.Context, s *redis.Script, cmd []any) (any, error) {
	var v any
	// v is read only when err is nil: a call Call left behind writes it late.
	err := l.path.DoWithin(ctx, l.ack.bound, func(ctx context.Context) error {
		node, err := ackNode(ctx, l.client, cmd[3].(string))
		if err != nil {
			return err
		}
		v, err = l.evalAcked(ctx, node, cmd)
		if reach.NoScript(err) {
			cmd[0], cmd[1] = "eval", script.Source(s)
			v, err = l.evalAcked(ctx, node, cmd)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// evalAcked sends cmd and WAIT 1 in one pipeline to node.
func (l *Limiter) evalAcked(ctx context.Context, node *redis.Client, cmd []any) (any, error) {
	pipe := node.Pipeline()
	// Sent at most once, as every decision (reach.Eval): a pipeline holding a
	// NoRetry command is not resent.
	ev := redis.NewCmd(ctx, cmd...)
	_ = pipe.Process(ctx, reach.SendOnce(ev))
	wait := pipe.Do(ctx, "wait", 1, l.ack.ms)
	_, _ = pipe.Exec(ctx) // each reply is checked below
	v, err := ev.Result()
	if err != nil {
		return nil, err
	}
	n, err := wait.Int64()
	if err != nil {
		return nil, fmt.Errorf("wait: %w", err)
	}
	if n < 1 {
		return nil, fmt.Errorf("%w within %dms", reach.ErrNotReplicated, l.ack.ms)
	}
	return v, nil
}
