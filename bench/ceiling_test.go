package bench

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/script"
)

// BenchmarkCeiling measures how many decisions one Redis can run when no
// client or network cost is left: one goroutine sends pipelines of `batch`
// EVALSHA calls of allow.lua (the exact call Limiter.Allow sends for one GCRA
// key with a client that sends a call at most once: any go-redis client) and
// reads them back. decisions/s here is an upper bound for any
// pipelining of separate decisions (automatic or hand-made) on this server:
// compare it with BenchmarkParallel's redis_rate throughput.
func BenchmarkCeiling(b *testing.B) {
	need(b)
	ctx := context.Background()
	if err := script.Load(ctx, env.Client); err != nil {
		b.Fatal(err)
	}
	p := prefix("ceil")
	keys := []string{p + ":{hot}:hold", p + ":{hot}:gcra"}
	// GCRA: max units, emission interval µs, cost (allow.lua's header).
	args := []any{Rate, 1, 1}
	for _, batch := range []int{1, 16, 256} {
		b.Run("script/batch="+strconv.Itoa(batch), func(b *testing.B) {
			ceiling(b, batch, func(pipe redisPipe) {
				script.Allow.EvalSha(ctx, pipe, keys, args...)
			})
		})
		b.Run("ping/batch="+strconv.Itoa(batch), func(b *testing.B) {
			ceiling(b, batch, func(pipe redisPipe) { pipe.Ping(ctx) })
		})
	}
}

func ceiling(b *testing.B, batch int, add func(redisPipe)) {
	ctx := context.Background()
	start := time.Now()
	n := 0
	for b.Loop() {
		if n%batch == 0 {
			pipe := env.Client.Pipeline()
			for range batch {
				add(pipe)
			}
			cmds, err := pipe.Exec(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for _, c := range cmds {
				if c.Err() != nil {
					b.Fatal(c.Err())
				}
			}
		}
		n++
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "decisions/s")
}

type redisPipe = interface {
	Ping(ctx context.Context) *redis.StatusCmd
	EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd
	ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd
	ScriptLoad(ctx context.Context, script string) *redis.StringCmd
	Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd
	EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd
	EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd
}
