package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/reach"
	"github.com/redquota/redquota/internal/redistest"
)

// pathQuota is a quota with a limit every operation can name.
var pathQuota = Quota{Name: "path", Limits: []NamedLimit{{"a", PerMinute(60)}}}

// pathOps are the limiter's calls to Redis other than Allow, Reserve and
// Wait: each must go through the limiter's one path (breaker, Timeout, down
// classifier). cancel is the Cancel of a reservation booked ahead (pending),
// made before Redis went silent.
func pathOps(lim *Limiter, cancel func(ctx context.Context) error) map[string]func(ctx context.Context) error {
	return map[string]func(ctx context.Context) error{
		"Hold": func(ctx context.Context) error { _, err := lim.Hold(ctx, pathQuota, time.Second, ""); return err },
		"HoldWithReason": func(ctx context.Context) error {
			_, err := lim.Hold(ctx, pathQuota, time.Second, "test")
			return err
		},
		"Release": func(ctx context.Context) error { _, err := lim.Hold(ctx, pathQuota, 0, ""); return err },
		"held":    func(ctx context.Context) error { _, err := lim.held(ctx, pathQuota); return err },
		"Sync":    func(ctx context.Context) error { _, err := lim.Sync(ctx, pathQuota, "a", 3); return err },
		"Inspect": func(ctx context.Context) error { _, err := lim.Inspect(ctx); return err },
		"Reset":   func(ctx context.Context) error { return lim.Reset(ctx, pathQuota) },
		"Cancel":  cancel,
	}
}

// A Redis that stops answering (replies held back by a proxy): every
// operation returns ErrUnavailable within Options.Timeout (it went through
// the bound, not go-redis's 3 s ReadTimeout); then, with the breaker opened
// by three of them, each returns at once, naming the open breaker, without
// waiting on Redis. Before this path existed Hold, Held, Sync and Cancel
// called the raw client: the first checks fail with a 3 s wait and an error
// that is not ErrUnavailable, and the open-breaker checks fail too.
func TestEveryOperationOnThePath(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Shared(t)
	proxy := redistest.NewFaultProxy(t, srv.Addr())
	o := redistest.ClientOptions(proxy.Addr())
	o.ReadTimeout = 3 * time.Second
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	const timeout = 100 * time.Millisecond
	// silence holds replies back long past Timeout (a call the bound did not
	// end would wait for it, then succeed), short enough for the proxy's
	// Close to wait for.
	const silence = 2 * time.Second
	// CoolDown long enough that the breaker stays open for the whole test.
	newLim := func() *Limiter {
		return New(c, Options{Prefix: redistest.NewPrefix(t), Timeout: timeout, CoolDown: time.Minute})
	}

	// Bounded: each operation alone, on a fresh limiter (closed breaker).
	for name := range pathOps(newLim(), nil) {
		t.Run("silent/"+name, func(t *testing.T) {
			proxy.SetDelay(0)
			lim := newLim()
			res := pending(t, lim)
			op := pathOps(lim, func(ctx context.Context) error { _, err := res.Cancel(ctx); return err })[name]
			proxy.SetDelay(silence)
			start := time.Now()
			err := op(ctx)
			el := time.Since(start)
			require.ErrorIs(t, err, ErrUnavailable, "%s on a silent Redis", name)
			// At least the timeout (it waited for Redis), well under the 3 s
			// ReadTimeout: the bound is the timeout plus slack for a loaded
			// machine and the race detector.
			require.GreaterOrEqual(t, el, timeout)
			require.Less(t, el, timeout+time.Second, "%s was not bounded by Timeout", name)
			t.Logf("%s: %v after %v", name, err, el)
		})
	}

	// Open: three operations that find Redis silent open the breaker that
	// decisions use too, and then nothing waits.
	t.Run("open", func(t *testing.T) {
		proxy.SetDelay(0)
		lim := newLim()
		res := pending(t, lim)
		ops := pathOps(lim, func(ctx context.Context) error { _, err := res.Cancel(ctx); return err })
		proxy.SetDelay(silence)
		for range breakerTrip {
			require.ErrorIs(t, ops["Hold"](ctx), ErrUnavailable)
		}
		require.Equal(t, int64(reach.Open), lim.path.State(), "holds that found Redis down opened the breaker")
		_, err := lim.Allow(ctx, Key("k", PerSecond(1)).Take(1))
		require.ErrorIs(t, err, reach.ErrOpen, "decisions share the breaker")
		for name, op := range ops {
			start := time.Now()
			err := op(ctx)
			el := time.Since(start)
			require.ErrorIs(t, err, ErrUnavailable, name)
			require.ErrorIs(t, err, reach.ErrOpen, name)
			require.ErrorContains(t, err, "circuit breaker is open", name)
			require.ErrorContains(t, err, "no reply within 100ms", "%s: the cause that opened it is kept", name)
			// The open breaker answers without a call; the bound is far below
			// the 100 ms Timeout a call would wait (slack for a loaded machine).
			require.Less(t, el, timeout/2, "%s waited on Redis with the breaker open", name)
		}
	})
}

// SCRIPT FLUSH (or a restart, or a failover to a node that never ran the
// scripts) between a reservation and its Cancel, or before a Hold or a Sync,
// is invisible: the path sends EVAL when EVALSHA finds NOSCRIPT.
func TestScriptFlushBeforeEveryScript(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := New(b.Client, Options{Prefix: b.Prefix})
		flush := func() {
			t.Helper()
			if cc, ok := b.Client.(*redis.ClusterClient); ok {
				require.NoError(t, cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
					return m.ScriptFlush(ctx).Err()
				}))
				return
			}
			require.NoError(t, b.Client.ScriptFlush(ctx).Err())
		}
		flush()
		raised, err := lim.Sync(ctx, pathQuota, "a", 7)
		require.NoError(t, err)
		require.True(t, raised)

		res := pending(t, lim)
		flush()
		n, err := res.Cancel(ctx)
		require.NoError(t, err)
		require.Equal(t, 30, n, "Cancel gave back every unit")

		flush()
		left, err := lim.Hold(ctx, pathQuota, time.Minute, "")
		require.NoError(t, err)
		require.Greater(t, left, 59*time.Second)

		flush()
		st, err := lim.Inspect(ctx, pathQuota.Name)
		require.NoError(t, err)
		require.Len(t, st, 1)
		require.Greater(t, st[0].Hold, 59*time.Second)
	})
}

// pending books the whole minute of pathQuota, then 30 units more: a
// reservation 30 s ahead, which Cancel gives back through Redis.
func pending(t *testing.T, lim *Limiter) *Reservation {
	t.Helper()
	ctx := context.Background()
	_, err := lim.Reserve(ctx, pathQuota.Take(60))
	require.NoError(t, err)
	res, err := lim.Reserve(ctx, pathQuota.Take(30))
	require.NoError(t, err)
	require.True(t, res.OK())
	require.Greater(t, res.Delay(), 20*time.Second)
	return res
}

// A replica (a failover demoted the node, or the client was pointed at one)
// refuses writes with READONLY: the limiter counts it as Redis down, as the
// cache does (reach.Down, one list): decisions answer under the failure
// policy, a Hold returns ErrUnavailable.
func TestReadOnlyReplicaIsDown(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Private(t, "--replicaof", "127.0.0.1", "1")
	c := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	t.Cleanup(func() { _ = c.Close() })
	r, err := New(c, Options{Failure: FailOpen}).Allow(ctx, Key("k", PerSecond(1)).Take(1))
	require.NoError(t, err)
	require.True(t, r.Allowed && r.Degraded, "%+v", r)
	closed := New(c, Options{Prefix: "closed"})
	_, err = closed.Allow(ctx, Key("k", PerSecond(1)).Take(1))
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorContains(t, err, "READONLY")
	_, err = closed.Hold(ctx, pathQuota, time.Second, "")
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorContains(t, err, "READONLY")
}
