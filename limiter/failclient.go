package limiter

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// failClient stands in for a client New cannot use (nil, or options it
// refuses): every command fails with err, so every call of the Limiter
// returns it, a configuration error reported rather than a panic or a
// guess at the first call.
type failClient struct{ err error }

var _ Client = failClient{}

// badOptions is the error of every call of a Limiter New was given options
// it refuses, or nil.
func badOptions(opts Options) error {
	if opts.Failure > FailLocal {
		return fmt.Errorf("%w: Options.Failure is %v, not FailClosed, FailOpen or FailLocal", ErrInvalid, opts.Failure)
	}
	return nil
}

func (c failClient) Eval(context.Context, string, []string, ...any) *redis.Cmd {
	return redis.NewCmdResult(nil, c.err)
}

func (c failClient) EvalSha(context.Context, string, []string, ...any) *redis.Cmd {
	return redis.NewCmdResult(nil, c.err)
}

func (c failClient) EvalRO(context.Context, string, []string, ...any) *redis.Cmd {
	return redis.NewCmdResult(nil, c.err)
}

func (c failClient) EvalShaRO(context.Context, string, []string, ...any) *redis.Cmd {
	return redis.NewCmdResult(nil, c.err)
}

func (c failClient) ScriptExists(context.Context, ...string) *redis.BoolSliceCmd {
	return redis.NewBoolSliceResult(nil, c.err)
}

func (c failClient) ScriptLoad(context.Context, string) *redis.StringCmd {
	return redis.NewStringResult("", c.err)
}

func (c failClient) Del(context.Context, ...string) *redis.IntCmd {
	return redis.NewIntResult(0, c.err)
}

func (c failClient) Do(context.Context, ...any) *redis.Cmd { return redis.NewCmdResult(nil, c.err) }

// The stand-in answers Do too, the method decisions are sent with.
var _ doer = failClient{}
