package limiter

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// Decisions go as FCALL of the scripts' function library where the server
// has Redis functions, loading it on each node that lacks it (first use,
// FUNCTION FLUSH), and as EVALSHA where it has none (miniredis); either way
// each decision is decided once.
func TestFunctionLibrary(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := New(b.Client, Options{Prefix: b.Prefix})
		lib := strings.TrimPrefix(strings.SplitN(script.Library(), "\n", 2)[0], "#!lua name=")
		// Keys in many slots: on the cluster, every master gets some.
		decide := func(round int) {
			t.Helper()
			for i := range 12 {
				r, err := lim.Allow(ctx, Key(fmt.Sprintf("k%d", i), PerMinute(10)).Take(1))
				require.NoError(t, err)
				require.True(t, r.Allowed)
				require.Equal(t, 10-round, r.Remaining, "key %d round %d: charged once per decision", i, round)
			}
		}
		loaded := func() (n int) {
			t.Helper()
			each(t, b, func(c *redis.Client) {
				libs, err := c.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: lib}).Result()
				require.NoError(t, err)
				n += len(libs)
			})
			return n
		}
		decide(1)
		if b.Mini != nil {
			require.True(t, lim.functions.Off(), "miniredis has no FCALL: EVALSHA")
			decide(2)
			return
		}
		require.False(t, lim.functions.Off())
		require.Equal(t, masters(b), loaded(), "the library on every master")
		each(t, b, func(c *redis.Client) { require.NoError(t, c.FunctionFlush(ctx).Err()) })
		require.Zero(t, loaded())
		decide(2)
		require.Equal(t, masters(b), loaded(), "loaded again where it was flushed")
		require.False(t, lim.functions.Off())
	})
}

// each runs fn on every master of b (one for the single server).
func each(t *testing.T, b redistest.Backend, fn func(c *redis.Client)) {
	t.Helper()
	if cc, ok := b.Client.(*redis.ClusterClient); ok {
		require.NoError(t, cc.ForEachMaster(context.Background(), func(_ context.Context, c *redis.Client) error {
			fn(c)
			return nil
		}))
		return
	}
	fn(b.Client.(*redis.Client))
}

func masters(b redistest.Backend) int {
	if len(b.ClusterNodes) > 0 {
		return len(b.ClusterNodes)
	}
	return 1
}
