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
	ctx, span := c.core.start(ctx, opGetOrLoad)
	var st loadState
	v, err := loadValue(ctx, c, key, ttl, tags, load, &st)
	r := resultMiss
	switch {
	case err != nil:
		r = resultError
	case st.hit:
		r = resultHit
	}
	if span.IsRecording() {
		span.SetAttributes(attrHit.Bool(st.hit), attrLoaded.Bool(st.loaded), attrShared.Bool(st.shared), attrTags.Int(len(tags)))
	}
	c.core.count(ctx, opGetOrLoad, r, 1)
	class := ""
	if st.loadErr {
		class = "load" // the load function's own error: its text is the caller's
	}
	end(span, r, err, class)
	return v, err
}

// loadState is what one GetOrLoad call did, for its span.
type loadState struct {
	hit     bool // the first lookup found the value
	loaded  bool // this call's load function ran
	shared  bool // the result of a load was shared with other callers
	loadErr bool // the error returned is the load function's
}

func loadValue[T any](ctx context.Context, c *Cache, key string, ttl time.Duration, tags []string, load func(context.Context) (T, error), st *loadState) (T, error) {
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
		st.hit = true
		return v, nil
	}
	var loaded bool // written by this caller's flight, if it runs; read after its result
	ch := c.core.flight.DoChan(k, func() (any, error) {
		lctx := context.WithoutCancel(ctx)
		var v T
		if found, _ := c.core.get(lctx, key, k, &v, false); found {
			return v, nil
		}
		c.core.loads.Add(1)
		loaded = true
		began := time.Now()
		v, err := load(lctx)
		c.core.recordLoad(lctx, time.Since(began), err)
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
		st.loaded, st.shared = loaded, r.Shared
		v, ok := r.Val.(T)
		if r.Err != nil {
			// The flight fails with the load function's error or an encoding one.
			st.loadErr = !errors.Is(r.Err, ErrEncode) && !errors.Is(r.Err, ErrValueTooLarge)
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
