package limiter

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/script"
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

// onceCmd is a script call go-redis never sends twice: its NoRetry stops the
// client's retries once the command may have reached Redis. go-redis still
// sends again one that never left (a connection it closed before writing),
// and follows MOVED and ASK, which Redis answers without running the script:
// either way Redis runs the call at most once, so a decision needs no dedupe
// token, whatever the client's MaxRetries.
type onceCmd struct{ *redis.Cmd }

// NoRetry tells go-redis not to resend the command.
func (onceCmd) NoRetry() bool { return true }

// evalCached runs cmd ("evalsha", sha, numkeys, keys…, args…) and, when Redis
// answers NOSCRIPT (after SCRIPT FLUSH or a restart), sends it again as EVAL
// with the script's source. Going through Process (or Do) lets the keys and
// arguments be boxed once and reused. On a go-redis client (processor) the
// call is sent at most once (onceCmd); other clients may retry it, which the
// dedupe token covers (Limiter.decideDedupe).
func evalCached(ctx context.Context, c Client, s *redis.Script, cmd []any) ([]any, error) {
	if p, ok := c.(processor); ok {
		v, err := evalOnce(ctx, p, cmd)
		if noScript(err) {
			cmd[0], cmd[1] = "eval", script.Source(s)
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
		return s.Run(ctx, c, keys, cmd[3+len(keys):]...).Slice()
	}
	v, err := d.Do(ctx, cmd...).Slice()
	if noScript(err) {
		cmd[0], cmd[1] = "eval", script.Source(s)
		v, err = d.Do(ctx, cmd...).Slice()
	}
	return v, err
}

func evalOnce(ctx context.Context, p processor, cmd []any) ([]any, error) {
	c := redis.NewCmd(ctx, cmd...)
	_ = p.Process(ctx, onceCmd{c})
	return c.Slice()
}

func noScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || strings.HasPrefix(err.Error(), "NOSCRIPT"))
}
