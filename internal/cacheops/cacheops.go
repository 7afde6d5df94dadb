// Package cacheops lets package market reach the cache operations that are
// not part of package cache's API: counters over a window and indexes of
// names, which market builds its API-call counters and its registry of
// exchanges and strategies on, and the cache's error classes for telemetry.
//
// Package cache sets the functions when it is initialised, so they are set
// wherever package cache is imported. Their c is a *cache.Cache, which this
// package cannot name without an import cycle; any other value panics.
package cacheops

import (
	"context"
	"time"
)

var (
	// Incr adds n (which may be 0 or negative) to the counter key of c and
	// returns its new count and the time left in its window. The first count
	// starts a window of the given length (at least 1 ms); the counter
	// expires when it ends and the next Incr starts again from zero. One
	// script call. The counter is an ordinary value: Count reads it, Delete
	// and DeletePattern remove it.
	Incr func(ctx context.Context, c any, key string, n int64, window time.Duration) (int64, time.Duration, error)
	// Count returns the count of the counter key of c, 0 when its window has
	// ended or it never counted.
	Count func(ctx context.Context, c any, key string) (int64, error)
	// Remember adds names to the index of c for at least ttl (a name's time
	// only moves later), in one script call. An index is a small set of
	// names with a TTL each; names past their time are pruned, and the index
	// expires with its last name. ttl must be at least 1 ms.
	Remember func(ctx context.Context, c any, index string, ttl time.Duration, names ...string) error
	// Recall returns the names the index of c still remembers, oldest time
	// first.
	Recall func(ctx context.Context, c any, index string) ([]string, error)
	// Dials returns how many connections the client of c has dialed (0 when
	// its client is not one of go-redis's). Redis restarting, or failing
	// over, always makes the client dial: a count that moved since a write
	// says the write may be gone.
	Dials func(c any) uint64
	// Class describes an error a cache call returned for a span's
	// error.type, from the fixed list of TELEMETRY_NAMES.md ("redis" when it
	// is none of the others).
	Class func(err error) string
)

// ttlKey is the context key of WithTTL's function.
type ttlKey struct{}

// WithTTL returns ctx carrying ttl, which cache.GetOrLoad, given ctx, calls
// once its load has returned a value, for the TTL it stores that value with
// in place of its ttl argument (which it still checks first): a value whose
// life ends at a fixed instant (a candle's close) then ends there however
// long the load took. A ttl of less than 1 ms stores nothing (the value is
// still returned): its time is over. GetOrLoad hands its load a context
// without it (WithTTL(ctx, nil)): a load made inside that load keeps its own.
func WithTTL(ctx context.Context, ttl func() time.Duration) context.Context {
	return context.WithValue(ctx, ttlKey{}, ttl)
}

// TTL returns the function WithTTL put in ctx, nil when there is none.
func TTL(ctx context.Context) func() time.Duration {
	f, _ := ctx.Value(ttlKey{}).(func() time.Duration)
	return f
}
