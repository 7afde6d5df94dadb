package cache

import (
	"context"
	"time"

	"github.com/redquota/redquota/internal/cacheops"
)

// Names the tests reach that are not the cache's API.

// MaxKeyLen is maxKeyLen.
const MaxKeyLen = maxKeyLen

// Key returns the Redis key that holds key's value.
func (c *Cache) Key(key string) (string, error) { return c.valueKey(key) }

// GroupName returns the view's group, "" for a Cache without one.
func (c *Cache) GroupName() string { return c.group }

// Incr is cacheops.Incr, the counters market's API-call counts are built on.
func (c *Cache) Incr(ctx context.Context, key string, n int64, window time.Duration) (int64, time.Duration, error) {
	return cacheops.Incr(ctx, c, key, n, window)
}

// Count is cacheops.Count.
func (c *Cache) Count(ctx context.Context, key string) (int64, error) {
	return cacheops.Count(ctx, c, key)
}

// Remember is cacheops.Remember, the index market's registry is built on.
func (c *Cache) Remember(ctx context.Context, index string, ttl time.Duration, names ...string) error {
	return cacheops.Remember(ctx, c, index, ttl, names...)
}

// Recall is cacheops.Recall.
func (c *Cache) Recall(ctx context.Context, index string) ([]string, error) {
	return cacheops.Recall(ctx, c, index)
}

// Defaults the tests count with.
const (
	DefaultBreakerFailures = defaultBreakerFailures
	DefaultBatch           = defaultBatch
)

// GlobMatch is globMatch: DeletePattern's matcher of a Redis glob.
func GlobMatch(pattern, s string) bool { return globMatch(pattern, s) }
