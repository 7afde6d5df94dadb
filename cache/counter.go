package cache

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/scripts"
)

// Incr adds n (which may be 0 or negative) to the counter key and returns its
// new count and the time left in its window. The first count starts a window
// of the given length (at least 1 ms); the counter expires when it ends and
// the next Incr starts again from zero. One script call (scripts.Incr).
// The counter is an ordinary value: Count reads it, Delete and DeletePattern
// remove it.
func (c *Cache) Incr(ctx context.Context, key string, n int64, window time.Duration) (int64, time.Duration, error) {
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
		return 0, 0, fmt.Errorf("cache: window %v: %w", window, ErrBadTTL)
	}
	var reply []int64
	err = c.core.do(ctx, func(ctx context.Context) error {
		var err error
		reply, err = scripts.Incr.Run(ctx, c.core.client, []string{k}, n, window.Milliseconds()).Int64Slice()
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

// Count returns the count of the counter key, 0 when its window has ended or
// it never counted.
func (c *Cache) Count(ctx context.Context, key string) (int64, error) {
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
		return 0, fmt.Errorf("cache: count of %q: %w: %q is not a counter", trunc(key), ErrDecode, s)
	}
	return v, nil
}
