package limiter

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// nilClient stands in for the nil client New was given: every command fails
// with ErrNilClient, so every call of the Limiter returns it.
type nilClient struct{}

var _ Client = nilClient{}

func (nilClient) Eval(context.Context, string, []string, ...any) *redis.Cmd {
	return redis.NewCmdResult(nil, ErrNilClient)
}

func (nilClient) EvalSha(context.Context, string, []string, ...any) *redis.Cmd {
	return redis.NewCmdResult(nil, ErrNilClient)
}

func (nilClient) EvalRO(context.Context, string, []string, ...any) *redis.Cmd {
	return redis.NewCmdResult(nil, ErrNilClient)
}

func (nilClient) EvalShaRO(context.Context, string, []string, ...any) *redis.Cmd {
	return redis.NewCmdResult(nil, ErrNilClient)
}

func (nilClient) ScriptExists(context.Context, ...string) *redis.BoolSliceCmd {
	return redis.NewBoolSliceResult(nil, ErrNilClient)
}

func (nilClient) ScriptLoad(context.Context, string) *redis.StringCmd {
	return redis.NewStringResult("", ErrNilClient)
}

func (nilClient) Del(context.Context, ...string) *redis.IntCmd {
	return redis.NewIntResult(0, ErrNilClient)
}

func (nilClient) Do(context.Context, ...any) *redis.Cmd { return redis.NewCmdResult(nil, ErrNilClient) }

// The stand-in answers Do too, the method decisions are sent with.
var _ doer = nilClient{}
