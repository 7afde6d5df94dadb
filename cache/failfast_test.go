package cache_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
)

// refusedBound is how long a cache call may take against a Redis that
// refuses connections. A refused dial is known in microseconds; the bound
// leaves room for a loaded 2-core machine and the race detector, and is far
// below what GetOrLoad took before the dial hook and Options.Timeout: up to
// 5.2 s, go-redis's default options waiting out 5 dials 100 ms apart for
// each of 4 attempts, for the Get and again for the Set.
const refusedBound = 100 * time.Millisecond

// A client with go-redis's default options, against a port that refuses
// connections: GetOrLoad serves its loader's value at once, from the first
// call, and the errors keep their cause once the breaker opens.
func TestFailFastRefused(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.RefusedAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	c := cache.New(rdb, cache.Options{})
	load := func(context.Context) (int, error) { return 7, nil }
	for i := range 8 { // the breaker opens after 5 failures
		start := time.Now()
		v, err := cache.GetOrLoad(ctx, c, "k", time.Minute, load)
		el := time.Since(start)
		require.Equal(t, 7, v, "call %d: %v", i, err)
		require.Less(t, el, refusedBound, "call %d waited on go-redis's dial retries", i)
		t.Logf("call %d: GetOrLoad answered in %v", i, el)

		start = time.Now()
		found, err := c.Get(ctx, "k", &v)
		el = time.Since(start)
		require.False(t, found)
		require.ErrorIs(t, err, syscall.ECONNREFUSED, "call %d: the cause is kept", i)
		require.Less(t, el, refusedBound, "call %d", i)
	}
	_, err := c.Get(ctx, "k", new(int))
	require.ErrorIs(t, err, cache.ErrCircuitOpen)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
}

// A Redis that accepts connections and never answers: each call ends after
// Options.Timeout, not after go-redis's ReadTimeout (3 s by default) times
// its retries.
func TestFailFastSilent(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Silent(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	const timeout = 50 * time.Millisecond
	c := cache.New(rdb, cache.Options{Timeout: timeout})
	start := time.Now()
	var v int
	found, err := c.Get(ctx, "k", &v)
	el := time.Since(start)
	require.False(t, found)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "no reply within 50ms")
	// At least the timeout (it did wait for Redis); under a second where one
	// go-redis read alone would wait 3 s.
	require.GreaterOrEqual(t, el, timeout)
	require.Less(t, el, time.Second)
	el0 := el

	// GetOrLoad: its Get waits out the bound once; the load then skips its
	// own lookup and the write, which would each wait for the silent Redis
	// again (the call cost 3 × Timeout before: a market ticker read stalled
	// 3 s with the default Timeout). Counted, not timed: each Redis call that
	// timed out is one error.
	errsBefore := errorCount(t, c)
	start = time.Now()
	v, err = cache.GetOrLoad(ctx, c, "k", time.Minute, func(context.Context) (int, error) { return 7, nil })
	el = time.Since(start)
	require.Equal(t, 7, v, "%v", err)
	require.Equal(t, int64(1), errorCount(t, c)-errsBefore, "GetOrLoad waited on Redis more than once")
	// Without the bound each call would wait out go-redis's 3 s read (and
	// its retries), so 3 s still tells the two apart on a starved machine.
	require.Less(t, el, 3*time.Second)
	t.Logf("Get answered after %v, GetOrLoad after %v (Timeout %v)", el0, el, timeout)
}

// errorCount is c's count of failed Redis calls; Stats' own INFO, which the
// silent Redis would not answer, is not sent (a cancelled context).
func errorCount(t *testing.T, c *cache.Cache) int64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st, _ := c.Stats(ctx)
	return st.Errors
}

// New with a nil client gives a Cache whose every call returns ErrNilClient.
func TestNewNilClient(t *testing.T) {
	ctx := context.Background()
	for _, rdb := range []cache.Client{nil, (*redis.Client)(nil)} {
		c := cache.New(rdb, cache.Options{})
		_, err := c.Get(ctx, "k", new(int))
		require.ErrorIs(t, err, cache.ErrInvalid)
		require.ErrorIs(t, c.Set(ctx, "k", 1, time.Minute), cache.ErrInvalid)
		_, err = c.Group("g").InvalidateTags(ctx, "t")
		require.ErrorIs(t, err, cache.ErrInvalid)
		require.ErrorIs(t, c.HealthCheck(ctx), cache.ErrInvalid)
		_, err = c.Stats(ctx)
		require.ErrorIs(t, err, cache.ErrInvalid)
		_, err = c.DeletePattern(ctx, "*")
		require.ErrorIs(t, err, cache.ErrInvalid)
		require.False(t, errors.Is(err, cache.ErrCircuitOpen))
	}
}

// A wrong or missing password is an authentication error, named as such.
func TestAuthErrorsTyped(t *testing.T) {
	srv := redistest.Private(t)
	ctx := context.Background()
	admin := srv.Client()
	require.NoError(t, admin.ConfigSet(ctx, "requirepass", "right-password").Err())
	require.NoError(t, admin.Close())
	for _, password := range []string{"wrong-password", ""} {
		o := redistest.ClientOptions(srv.Addr())
		o.Password = password
		rdb := redis.NewClient(o)
		c := cache.New(rdb, cache.Options{})
		_, err := c.Get(ctx, "k", new(int))
		require.ErrorIs(t, err, cache.ErrAuth)
		require.ErrorIs(t, c.Group("g").Set(ctx, "k", 1, time.Minute, "a", "b", "c", "d", "e", "f", "g", "h"), cache.ErrAuth)
		require.NotContains(t, err.Error(), "right-password")
		t.Logf("%q: %v", password, err)
		require.NoError(t, rdb.Close())
	}
}
