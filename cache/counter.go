package cache

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/cacheops"
	"github.com/redquota/redquota/internal/script"
)

// Counters and indexes are for package market, through internal/cacheops,
// which documents them; they are not part of the cache's API.
func init() {
	cacheops.Incr = func(ctx context.Context, c any, key string, n int64, window time.Duration) (int64, time.Duration, error) {
		return c.(*Cache).incrSpan(ctx, key, n, window)
	}
	cacheops.Count = func(ctx context.Context, c any, key string) (int64, error) {
		return c.(*Cache).countSpan(ctx, key)
	}
	cacheops.Remember = func(ctx context.Context, c any, index string, ttl time.Duration, names ...string) error {
		return c.(*Cache).rememberSpan(ctx, index, ttl, names)
	}
	cacheops.Recall = func(ctx context.Context, c any, index string) ([]string, error) {
		return c.(*Cache).recallSpan(ctx, index)
	}
	cacheops.Dials = func(c any) uint64 {
		if p := c.(*Cache).core.path; p != nil {
			return p.Watch().Dials()
		}
		return 0
	}
	cacheops.Class = errorClass
}

// incrSpan is cacheops.Incr: one script call (script.Incr).
func (c *Cache) incrSpan(ctx context.Context, key string, n int64, window time.Duration) (int64, time.Duration, error) {
	ctx, span := c.core.start(ctx, opIncr)
	count, left, err := c.incr(ctx, key, n, window)
	c.core.finish(ctx, span, opIncr, resultOf(err), err)
	return count, left, err
}

func (c *Cache) incr(ctx context.Context, key string, n int64, window time.Duration) (int64, time.Duration, error) {
	k, err := c.valueKey(key)
	if err != nil {
		return 0, 0, err
	}
	if window == NoExpiry || window < time.Millisecond {
		return 0, 0, invalid(fmt.Sprintf("window %v", window), errBadTTL)
	}
	var reply []int64
	err = c.core.do(ctx, func(ctx context.Context) error {
		var err error
		reply, err = c.core.script(ctx, script.Incr, []string{k}, n, window.Milliseconds()).Int64Slice()
		return err
	})
	c.core.near.wrote(k)
	if err != nil {
		return 0, 0, fmt.Errorf("cache: incr: %w", err)
	}
	if len(reply) != 2 {
		return 0, 0, fmt.Errorf("cache: incr: cache_incr.lua replied %v", reply)
	}
	return reply[0], time.Duration(reply[1]) * time.Millisecond, nil
}

// countSpan is cacheops.Count.
func (c *Cache) countSpan(ctx context.Context, key string) (int64, error) {
	ctx, span := c.core.start(ctx, opCount)
	n, err := c.countOf(ctx, key)
	c.core.finish(ctx, span, opCount, resultOf(err), err)
	return n, err
}

func (c *Cache) countOf(ctx context.Context, key string) (int64, error) {
	k, err := c.valueKey(key)
	if err != nil {
		return 0, err
	}
	var s string
	err = c.core.do(ctx, func(ctx context.Context) error {
		var err error
		s, err = c.core.client.Get(ctx, k).Result()
		return err
	})
	switch {
	case err == redis.Nil:
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("cache: count: %w", err)
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cache: count of %q: %w: %w: %q is not a counter", trunc(key), ErrCodec, errDecode, s)
	}
	return v, nil
}
