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

// Millisecond TTLs: a 500 ms value is there at 499 ms and gone at 500 ms; a
// 200 ms one likewise, with PTTL showing the TTL in ms, not rounded to seconds.
func TestMillisecondTTL(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		for _, ttl := range []time.Duration{500 * time.Millisecond, 200 * time.Millisecond} {
			// The key must expire ttl after the Set reached Redis, somewhere
			// between the TIME read before it and the one read after, to the
			// ms PTTL counts in: exact however slow the machine is.
			k := e.key(e.c, "book")
			before := redisTimeUS(ctx, t, b, k)
			if err := e.c.Set(ctx, "book", "v", ttl); err != nil {
				t.Fatal(err)
			}
			now, pttl := expiryOf(ctx, t, b, k)
			if pttl == -2 { // go-redis: the key is gone: only a stalled machine reads this late
				if now-before < ttl.Microseconds()-1000 {
					t.Fatalf("%v value gone %v after the Set began", ttl, time.Duration(now-before)*time.Microsecond)
				}
				continue
			}
			if lo, hi := before+ttl.Microseconds()-1000, now+ttl.Microseconds(); now+pttl.Microseconds() < lo || now+pttl.Microseconds() > hi {
				t.Fatalf("PTTL %v read %v after the Set began: want %v less that, to the ms", pttl, time.Duration(now-before)*time.Microsecond, ttl)
			}
			if b.Mini == nil {
				t.Logf("%v value gone after %v of polling", ttl, e.waitGone(k))
				continue
			}
			e.advance(ttl - time.Millisecond)
			var s string
			if found, _ := e.c.Get(ctx, "book", &s); !found {
				t.Fatalf("%v value gone at %v", ttl, ttl-time.Millisecond)
			}
			e.advance(time.Millisecond)
			if found, _ := e.c.Get(ctx, "book", &s); found {
				t.Fatalf("%v value still there at %v", ttl, ttl)
			}
		}
	})
}

// keyNode returns the client that runs commands on key's node: b's own, or on
// a cluster the master holding key.
func keyNode(ctx context.Context, t *testing.T, b redistest.Backend, key string) redis.Cmdable {
	t.Helper()
	if cc, ok := b.Client.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, key)
		require.NoError(t, err)
		return node
	}
	return b.Client
}

// redisTimeUS is the clock of key's node, in µs.
func redisTimeUS(ctx context.Context, t *testing.T, b redistest.Backend, key string) int64 {
	t.Helper()
	now, err := keyNode(ctx, t, b, key).Time(ctx).Result()
	require.NoError(t, err)
	return now.UnixMicro()
}

// expiryOf reads the clock of key's node (µs) and key's PTTL in one
// transaction: the PTTL as of that instant.
func expiryOf(ctx context.Context, t *testing.T, b redistest.Backend, key string) (int64, time.Duration) {
	t.Helper()
	var now *redis.TimeCmd
	var pttl *redis.DurationCmd
	_, err := keyNode(ctx, t, b, key).TxPipelined(ctx, func(p redis.Pipeliner) error {
		now, pttl = p.Time(ctx), p.PTTL(ctx, key)
		return nil
	})
	require.NoError(t, err)
	return now.Val().UnixMicro(), pttl.Val()
}
