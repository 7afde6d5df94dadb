package limiter

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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
		// Timeout: a decision that loads the library (FUNCTION LOAD of
		// every script, after a FUNCTION FLUSH too) can outlast the default
		// 250 ms under load; this test is about loading, not timeouts.
		lim := New(b.Client, Options{Prefix: b.Prefix, Timeout: 10 * time.Second})
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

// each runs fn on every master of b (one for the single server), one at a
// time.
func each(t *testing.T, b redistest.Backend, fn func(c *redis.Client)) {
	t.Helper()
	cc, ok := b.Client.(*redis.ClusterClient)
	if !ok {
		fn(b.Client.(*redis.Client))
		return
	}
	var mu sync.Mutex
	var nodes []*redis.Client
	require.NoError(t, cc.ForEachMaster(context.Background(), func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		nodes = append(nodes, c)
		return nil
	}))
	for _, c := range nodes {
		fn(c)
	}
}

func masters(b redistest.Backend) int {
	if len(b.ClusterNodes) > 0 {
		return len(b.ClusterNodes)
	}
	return 1
}

// An ACL that allows EVALSHA but not FCALL, or FCALL but not FUNCTION LOAD:
// decisions go as EVALSHA, each decided once, and the limiter stops trying
// functions.
func TestFunctionLibraryRefused(t *testing.T) {
	srv := redistest.Private(t)
	ctx := context.Background()
	admin := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	defer admin.Close()
	for _, c := range []struct{ user, rules string }{
		{"nofcall", "-fcall -function"},
		{"noload", "-function"},
	} {
		t.Run(c.user, func(t *testing.T) {
			args := []any{"acl", "setuser", c.user, "on", ">pw", "~*", "&*", "+@all"}
			for _, r := range strings.Fields(c.rules) {
				args = append(args, r)
			}
			require.NoError(t, admin.Do(ctx, args...).Err())
			o := redistest.ClientOptions(srv.Addr())
			o.Username, o.Password = c.user, "pw"
			client := redis.NewClient(o)
			defer client.Close()
			// Timeout: the first decision dials with AUTH, is refused
			// FCALL or FUNCTION LOAD and goes on as EVALSHA, NOSCRIPT and
			// EVAL, which under load took longer than the default 250 ms
			// (a run failed so); this test is about the fallback.
			lim := New(client, Options{Prefix: "acl-" + c.user, Timeout: 10 * time.Second})
			for i := range 3 {
				r, err := lim.Allow(ctx, Key("k", PerMinute(10)).Take(1))
				require.NoError(t, err)
				require.Equal(t, 9-i, r.Remaining, "charged once per decision")
			}
			require.True(t, lim.functions.Off())
			libs, err := admin.FunctionList(ctx, redis.FunctionListQuery{}).Result()
			require.NoError(t, err)
			require.Empty(t, libs, "nothing loaded")
		})
	}
}
