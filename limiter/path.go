package limiter

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/reach"
	"github.com/redquota/redquota/internal/script"
)

// Every call the limiter makes to Redis goes through its reach.Path (l.path):
// decisions (send, in decide.go), holds, syncs, cancels, Inspect's reads,
// resets and releases alike. The Path bounds each call (Options.Timeout, a
// refused dial), counts the failures that find Redis down (reach.Down, the
// one classifier) in the breaker, and with the breaker open answers at once
// without calling Redis. Scripts fall back from EVALSHA to EVAL on NOSCRIPT
// (reach.Eval, reach.Run). A decision that finds Redis down answers under the
// failure policy; any other call returns an error wrapping ErrUnavailable.
// Two calls stay off the path, each best effort with a timeout of its own:
// the registry's background write of a definition (registry.go) and the
// run_id check of RestartSpent and kept holds (restart.go), whose failures say nothing a
// decision's own call does not.

// doer is the Do method of a go-redis client.
type doer interface {
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// call makes one call to Redis other than a decision through the limiter's
// path. An error that found Redis down, or the breaker open, wraps
// ErrUnavailable; one after the caller's context ended wraps its error. A
// context already done sends nothing: go-redis reads only a context's
// deadline, so a cancelled one went out (a Sync, Reset or release made for a
// caller that had gone) or not (when it had to dial first), by chance.
func (l *Limiter) call(ctx context.Context, op string, fn func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("limiter: %s: %w", op, err)
	}
	err := l.path.Do(ctx, fn)
	if err == nil {
		return nil
	}
	if errors.Is(err, reach.ErrOpen) || reach.Unreachable(ctx, err) {
		return fmt.Errorf("limiter: %s: %w: %w", op, ErrUnavailable, err)
	}
	if cerr := callerDone(ctx); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("limiter: %s: %w: %w", op, cerr, err)
	}
	return redisErr(op, err)
}

// script runs script s with keys and args through call and returns its reply.
func (l *Limiter) script(ctx context.Context, op string, s *redis.Script, keys []string, args ...any) (any, error) {
	var v any
	// v is read only when err is nil: a call the bound left behind (Watch.Call)
	// may write it late.
	err := l.call(ctx, op, func(ctx context.Context) error {
		var err error
		v, err = reach.Run(ctx, l.client, s, script.Source(s), keys, args...).Result()
		return err
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// scriptInt is script for a script whose reply is one integer.
func (l *Limiter) scriptInt(ctx context.Context, op string, s *redis.Script, keys []string, args ...any) (int64, error) {
	v, err := l.script(ctx, op, s, keys, args...)
	if err != nil {
		return 0, err
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("%w: %s replied %T, not an integer", ErrBadReply, op, v)
	}
	return n, nil
}
