package cache

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNilLoad is returned by GetOrLoad for a nil load function.
var ErrNilLoad = errors.New("cache: nil load function")

// GetOrLoad returns the value of key, decoded as T; on a miss it calls load,
// stores its value for ttl and returns it. Concurrent callers that miss the same
// key (in this process) share one call of load (singleflight), which then sees a
// second lookup first, so a value another caller just stored is not loaded
// again.
//
// Redis never fails the load path: a read error counts as a miss and an error,
// and load is called; a write error after a successful load is counted, not
// returned. An error from load is returned and nothing is stored. A loaded value
// the codec cannot encode, or larger than MaxValueSize, is returned together
// with the error.
//
// load runs with a context that carries ctx's values but not its cancellation,
// so one caller giving up does not fail the others that wait on the same load;
// a caller whose ctx ends stops waiting and gets ctx's error. Give load its own
// timeout. Callers that share a load share its value: do not mutate a T that
// holds references (maps, slices, pointers).
func GetOrLoad[T any](ctx context.Context, c *Cache, key string, ttl time.Duration, load func(context.Context) (T, error)) (T, error) {
	return getOrLoad(ctx, c, key, ttl, nil, load)
}

// GetOrLoadTagged is GetOrLoad storing a loaded value with SetTagged, so that
// InvalidateTags reaches it. It needs a group view when tags are given.
func GetOrLoadTagged[T any](ctx context.Context, c *Cache, key string, ttl time.Duration, load func(context.Context) (T, error), tags ...string) (T, error) {
	return getOrLoad(ctx, c, key, ttl, tags, load)
}

func getOrLoad[T any](ctx context.Context, c *Cache, key string, ttl time.Duration, tags []string, load func(context.Context) (T, error)) (T, error) {
	var zero T
	if load == nil {
		return zero, ErrNilLoad
	}
	k, err := c.valueKey(key)
	if err != nil {
		return zero, err
	}
	for _, tag := range tags {
		if _, err := c.tagKey(tag); err != nil {
			return zero, err
		}
	}
	exp, _, err := ttlArg(ttl)
	if err != nil {
		return zero, err
	}
	var v T
	if found, _ := c.core.get(ctx, key, k, &v, true); found {
		return v, nil
	}
	ch := c.core.flight.DoChan(k, func() (any, error) {
		lctx := context.WithoutCancel(ctx)
		var v T
		if found, _ := c.core.get(lctx, key, k, &v, false); found {
			return v, nil
		}
		c.core.loads.Add(1)
		v, err := load(lctx)
		if err != nil {
			return nil, err
		}
		data, err := c.core.encode(key, v)
		if err != nil {
			return v, err
		}
		// A write error is counted by do; the loaded value stands.
		if len(tags) > 0 {
			_ = c.setTagged(lctx, []string{k}, []any{data}, ttl, tags)
		} else {
			_ = c.core.set(lctx, k, data, exp)
		}
		return v, nil
	})
	select {
	case r := <-ch:
		v, ok := r.Val.(T)
		if r.Err != nil {
			return v, r.Err
		}
		if !ok {
			return zero, fmt.Errorf("cache: key %q: loaded as %T by another caller, wanted %T", trunc(key), r.Val, zero)
		}
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}
