package cache

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/redquota/redquota/internal/cacheops"
)

// GetOrLoad returns the value of key, decoded as T; on a miss it calls load,
// stores its value for ttl, carrying tags (see Set; tags need a group view),
// and returns it. Concurrent callers that miss the same
// key (in this process) share one call of load (singleflight), which then sees a
// second lookup first, so a value another caller just stored is not loaded
// again.
//
// Redis never fails the load path: a read error counts as a miss and an error,
// and load is called, its value returned without the second lookup or the
// write (Redis has just failed: a Redis that never answers costs the call one
// Options.Timeout, not three); a write error after a successful load is
// counted, not returned. An error from load is returned and nothing is stored. A loaded value
// the codec cannot encode, or larger than MaxValueSize, is returned together
// with the error.
//
// load runs with a context that carries the first caller's values but not its
// cancellation, so one caller giving up does not fail the others that wait on
// the same load; a caller whose ctx ends stops waiting and gets ctx's error.
// When the last waiting caller has left, load's context is cancelled, so a
// load nobody waits for (a hung exchange call) stops, and the next caller
// starts a new one. A caller whose ctx has already ended starts nothing. A
// panic in load is raised again in each waiting caller's goroutine, where it
// can be recovered. Callers that share a load share its value: do not mutate a
// T that holds references (maps, slices, pointers).
func GetOrLoad[T any](ctx context.Context, c *Cache, key string, ttl time.Duration, load func(context.Context) (T, error), tags ...string) (T, error) {
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
		return zero, invalid("", errNilLoad)
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
	if err := ctx.Err(); err != nil {
		return zero, err // a caller that has given up starts no load
	}
	var v T
	found, gerr := c.core.get(ctx, key, k, &v, true)
	if found {
		st.hit = true
		return v, nil
	}
	// The read failed (Redis down or silent, the breaker open, not a value
	// the codec cannot decode): the load's own lookup and its write would
	// each wait for Redis again, so the load skips both.
	down := gerr != nil && !errors.Is(gerr, ErrCodec)
	f := c.core.join(k, ctx)
	defer c.core.leave(k, f)
	var loaded bool // written by this caller's flight, if it runs; read after its result
	ch := c.core.flight.DoChan(k, func() (val any, err error) {
		defer func() {
			if p := recover(); p != nil {
				val, err = nil, &loadPanic{value: p, stack: debug.Stack()}
			}
		}()
		lctx := f.ctx
		// The TTL the caller's context carries is this value's only: the
		// load runs without it, so a GetOrLoad inside it keeps its own TTL.
		ttlOf := cacheops.TTL(lctx)
		var v T
		if !down {
			if found, _ := c.core.get(lctx, key, k, &v, false); found {
				return v, nil
			}
		}
		c.core.loads.Add(1)
		loaded = true
		began := time.Now()
		loadCtx := lctx
		if ttlOf != nil {
			loadCtx = cacheops.WithTTL(lctx, nil)
		}
		v, err = load(loadCtx)
		c.core.recordLoad(lctx, time.Since(began), err)
		if err != nil {
			return nil, err
		}
		data, err := c.core.encode(key, v)
		if err != nil || down {
			return v, err
		}
		ttl, exp := ttl, exp
		if ttlOf != nil { // the TTL from now, the load done
			if ttl = ttlOf(); ttl < time.Millisecond {
				return v, nil
			}
			exp = ttl
		}
		// A write error is counted by do; the loaded value stands.
		if len(tags) > 0 || c.head != "" {
			_ = c.setTagged(lctx, []string{k}, []any{data}, ttl, tags)
		} else {
			_ = c.core.set(lctx, k, data, exp)
		}
		return v, nil
	})
	select {
	case r := <-ch:
		st.loaded, st.shared = loaded, r.Shared
		var lp *loadPanic
		if errors.As(r.Err, &lp) {
			panic(lp) // in every caller's goroutine, where it can be recovered
		}
		v, ok := r.Val.(T)
		if r.Err != nil {
			// The flight fails with the load function's error or an encoding one.
			st.loadErr = !errors.Is(r.Err, errEncode) && !errors.Is(r.Err, errTooLarge)
			return v, r.Err
		}
		if !ok && r.Val != nil { // nil: a nil interface value, which is a T
			return zero, fmt.Errorf("cache: key %q: loaded as %T by another caller, wanted %T", trunc(key), r.Val, zero)
		}
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// A loadFlight is the context of the loads of one key while callers wait on
// them: it carries the first caller's values, and is cancelled when the last
// waiting caller leaves, so that a load nobody waits for (a hung exchange call)
// stops, and the next caller starts a load of its own.
type loadFlight struct {
	ctx     context.Context
	cancel  context.CancelFunc
	waiters int
}

// join counts a caller in to the flight of Redis key k, making it if needed.
func (c *core) join(k string, ctx context.Context) *loadFlight {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	f := c.flights[k]
	if f == nil {
		f = &loadFlight{}
		f.ctx, f.cancel = context.WithCancel(context.WithoutCancel(ctx))
		if c.flights == nil {
			c.flights = map[string]*loadFlight{}
		}
		c.flights[k] = f
	}
	f.waiters++
	return f
}

// leave counts a caller out; the last one out cancels the flight's context
// and makes singleflight forget its call, so a caller after it starts anew.
func (c *core) leave(k string, f *loadFlight) {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	if f.waiters--; f.waiters > 0 {
		return
	}
	f.cancel()
	if c.flights[k] == f {
		delete(c.flights, k)
		c.flight.Forget(k)
	}
}

// loadPanic is a panic of a load function, recovered in the flight and
// panicked again in each waiting caller's goroutine: singleflight.DoChan
// would re-panic it in a goroutine of its own, which no caller can recover.
type loadPanic struct {
	value any
	stack []byte
}

func (p *loadPanic) Error() string {
	return fmt.Sprintf("cache: load panicked: %v\n\n%s", p.value, p.stack)
}

// Unwrap returns the panic's value when it is an error.
func (p *loadPanic) Unwrap() error {
	err, _ := p.value.(error)
	return err
}
