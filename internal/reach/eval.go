package reach

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// doer is the Do method of a go-redis client.
type doer interface {
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// processor is a go-redis client's Process. Every go-redis client (Client,
// ClusterClient, Ring, AutoPipeliner) has it, and since go-redis 9.23 each
// honours a command's NoRetry.
type processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

// Once reports whether Eval sends its calls on c at most once (c is a
// go-redis client, which honours a command's NoRetry).
func Once(c any) bool {
	_, ok := c.(processor)
	return ok
}

// onceCmd is a script call go-redis never sends twice: its NoRetry stops the
// client's retries once the command may have reached Redis. go-redis still
// sends again one that never left (a connection it closed before writing),
// and follows MOVED and ASK, which Redis answers without running the script:
// either way Redis runs the call at most once, whatever the client's
// MaxRetries.
type onceCmd struct{ *redis.Cmd }

// NoRetry tells go-redis not to resend the command.
func (onceCmd) NoRetry() bool { return true }

// SendOnce wraps cmd so that go-redis sends it at most once (for a
// pipeline's Process).
func SendOnce(cmd *redis.Cmd) redis.Cmder { return onceCmd{cmd} }

// Eval runs cmd ("evalsha", sha, numkeys, keys…, args…: keys strings, sha
// a string) on c and, when Redis answers NOSCRIPT (after SCRIPT FLUSH or a
// restart), sends it again as EVAL with src, the script's source. The keys
// and arguments can be boxed once and reused. On a go-redis client (Once)
// the call is sent at most once (onceCmd); other clients may retry it.
func Eval(ctx context.Context, c redis.Scripter, src string, cmd []any) ([]any, error) {
	if p, ok := c.(processor); ok {
		v, err := evalOnce(ctx, p, cmd)
		if NoScript(err) {
			cmd[0], cmd[1] = "eval", src
			v, err = evalOnce(ctx, p, cmd)
		}
		return v, err
	}
	d, ok := c.(doer)
	if !ok {
		keys := make([]string, cmd[2].(int))
		for i := range keys {
			keys[i] = cmd[3+i].(string)
		}
		args := cmd[3+len(keys):]
		v, err := c.EvalSha(ctx, cmd[1].(string), keys, args...).Slice()
		if NoScript(err) {
			v, err = c.Eval(ctx, src, keys, args...).Slice()
		}
		return v, err
	}
	v, err := d.Do(ctx, cmd...).Slice()
	if NoScript(err) {
		cmd[0], cmd[1] = "eval", src
		v, err = d.Do(ctx, cmd...).Slice()
	}
	return v, err
}

func evalOnce(ctx context.Context, p processor, cmd []any) ([]any, error) {
	c := redis.NewCmd(ctx, cmd...)
	_ = p.Process(ctx, onceCmd{c})
	return c.Slice()
}

// Run runs the script s (whose source is src) on c with keys and args:
// EVALSHA, then EVAL when Redis answers NOSCRIPT, as Eval, but sent as the
// client sends any command (its retries apply). The limiter's holds, syncs
// and cancels and every cache script go through it.
func Run(ctx context.Context, c redis.Scripter, s *redis.Script, src string, keys []string, args ...any) *redis.Cmd {
	r := c.EvalSha(ctx, s.Hash(), keys, args...)
	if NoScript(r.Err()) {
		return c.Eval(ctx, src, keys, args...)
	}
	return r
}

// NoScript reports whether err is Redis's NOSCRIPT: the script is not in
// its cache (after SCRIPT FLUSH, a restart or a failover).
func NoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || strings.HasPrefix(err.Error(), "NOSCRIPT"))
}
