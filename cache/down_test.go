package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
)

// The cache decides "Redis is down" as the limiter does (reach.Down, one
// list): a replica's READONLY and a full memory's OOM count as failures and
// open the breaker, where before the cache counted only LOADING and
// CLUSTERDOWN and kept sending writes to a demoted or full node.
func TestDownRepliesOpenTheBreaker(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		args        []string
	}{
		// A replica of a master that does not exist: it serves reads, refuses writes.
		{"READONLY", "READONLY", []string{"--replicaof", "127.0.0.1", "1"}},
		// maxmemory of 1 byte: every write is refused.
		{"OOM", "OOM", []string{"--maxmemory", "1", "--maxmemory-policy", "noeviction"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			srv := redistest.Private(t, tc.args...)
			c := redis.NewClient(redistest.ClientOptions(srv.Addr()))
			t.Cleanup(func() { _ = c.Close() })
			const failures = 2
			ch := cache.New(c, cache.Options{BreakerFailures: failures, BreakerCoolDown: time.Minute})
			for i := range failures {
				err := ch.Set(ctx, "k", "v", time.Minute)
				require.ErrorContains(t, err, tc.reply, "write %d", i)
				require.NotErrorIs(t, err, cache.ErrCircuitOpen, "write %d", i)
			}
			err := ch.Set(ctx, "k", "v", time.Minute)
			require.ErrorIs(t, err, cache.ErrCircuitOpen, "%d %s replies in a row open the breaker", failures, tc.reply)
			require.ErrorContains(t, err, tc.reply, "the open breaker's error keeps the cause")
			st, _ := ch.Stats(ctx)
			require.EqualValues(t, failures, st.Errors)
			require.EqualValues(t, 1, st.Rejected)
			require.Equal(t, "open", st.Breaker)
		})
	}
}
