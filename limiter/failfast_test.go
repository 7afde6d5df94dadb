package limiter

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// refusedBound is how long a decision against a Redis that refuses
// connections may take. A refused dial is known in microseconds; the bound
// leaves room for a loaded 2-core machine and the race detector, and is still
// far below what the call took before the dial hook: go-redis's default
// options dial 5 times 100 ms apart (400 ms of backoff) and the limiter's
// 250 ms Timeout cut that short, so each of the first three decisions took
// 250 ms.
const refusedBound = 100 * time.Millisecond

// A client built with go-redis's default options, against a port that
// refuses connections: every decision, the first included, answers under the
// failure policy at once, and says why.
func TestFailFastRefused(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		client func(addr string) Client
	}{
		{"client", func(addr string) Client { return redis.NewClient(&redis.Options{Addr: addr}) }},
		{"ring", func(addr string) Client {
			return redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addr}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.client(redistest.RefusedAddr(t))
			t.Cleanup(func() { _ = c.(interface{ Close() error }).Close() })
			open := New(c, Options{Failure: FailOpen})
			closed := New(c, Options{Prefix: "closed"})
			for i := range 5 {
				start := time.Now()
				r, err := open.Allow(ctx, Key("k", PerSecond(10)).Take(1))
				el := time.Since(start)
				require.NoError(t, err)
				require.True(t, r.Allowed && r.Degraded, "call %d: %+v", i, r)
				t.Logf("call %d: FailOpen answered in %v", i, el)
				if tc.name == "ring" && i > 0 {
					// Once a Ring has marked its only shard down it fails
					// commands without dialing and retries them with a
					// backoff, which the dial hook does not see: bounded by
					// Timeout until the breaker opens, not by the hook.
					continue
				}
				require.Less(t, el, refusedBound, "call %d waited on go-redis's dial retries", i)

				start = time.Now()
				_, err = closed.Allow(ctx, Key("k", PerSecond(10)).Take(1))
				el = time.Since(start)
				require.ErrorIs(t, err, ErrUnavailable)
				if tc.name == "ring" && i > 0 {
					continue // as above
				}
				require.ErrorIs(t, err, syscall.ECONNREFUSED, "the cause is kept, also once the breaker is open")
				require.Less(t, el, refusedBound, "call %d", i)
			}
			require.EqualValues(t, 5, open.Stats().FailOpen)
		})
	}
}

// A Redis that accepts connections and never answers: a decision answers
// under the policy after Options.Timeout, not after go-redis's ReadTimeout
// (3 s by default) times its retries.
func TestFailFastSilent(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: redistest.Silent(t)})
	t.Cleanup(func() { _ = c.Close() })
	const timeout = 50 * time.Millisecond
	lim := New(c, Options{Failure: FailOpen, Timeout: timeout})
	for i := range 3 {
		start := time.Now()
		r, err := lim.Allow(ctx, Key("k", PerSecond(10)).Take(1))
		el := time.Since(start)
		require.NoError(t, err)
		require.True(t, r.Degraded)
		// At least the timeout (it did wait for Redis), and well under the 3 s
		// of one go-redis read: the bound is the timeout plus slack for a
		// loaded machine.
		require.GreaterOrEqual(t, el, timeout, "call %d did not wait for Redis", i)
		require.Less(t, el, timeout+time.Second, "call %d", i)
		t.Logf("call %d: answered after %v (Timeout %v)", i, el, timeout)
	}
	// After three in a row the breaker answers without waiting, and its error keeps the cause.
	closed := New(c, Options{Prefix: "closed", Timeout: timeout})
	var err error
	for range 4 {
		_, err = closed.Allow(ctx, Key("k", PerSecond(10)).Take(1))
	}
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorContains(t, err, "circuit breaker is open")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "no reply within 50ms")
}

// New with a nil client, or a nil *redis.Client, gives a Limiter whose every
// call returns ErrNilClient, whatever the policy: no panic, no fallback.
func TestNewNilClient(t *testing.T) {
	ctx := context.Background()
	for _, c := range []Client{nil, (*redis.Client)(nil)} {
		lim := New(c, Options{Failure: FailOpen})
		_, err := lim.Allow(ctx, Key("k", PerSecond(1)).Take(1))
		require.ErrorIs(t, err, ErrNilClient)
		_, err = lim.Reserve(ctx, Key("k", PerSecond(1)).Take(1))
		require.ErrorIs(t, err, ErrNilClient)
		require.ErrorIs(t, lim.Reset(ctx, Quota{Name: "k"}), ErrNilClient)
		_, err = lim.Hold(ctx, Quota{Name: "q", Limits: []NamedLimit{{"a", PerSecond(1)}}}, time.Second, "")
		require.ErrorIs(t, err, ErrNilClient)
		require.False(t, errors.Is(err, ErrUnavailable))
		_, err = lim.Inspect(ctx, "q")
		require.ErrorIs(t, err, ErrNilClient)
	}
}

// A Failure that is none of the three policies is a configuration error:
// every call returns ErrInvalid, Redis up or down, and nothing is written.
// (Before, it failed closed silently: FailurePolicy(99) read as FailClosed.)
func TestNewUnknownFailurePolicy(t *testing.T) {
	ctx := context.Background()
	mr, c := redistest.NewMini(t)
	lim := New(c, Options{Failure: 99})
	_, err := lim.Allow(ctx, Key("k", PerSecond(1)).Take(1))
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "policy(99)")
	require.False(t, errors.Is(err, ErrUnavailable))
	_, err = lim.Reserve(ctx, Key("k", PerSecond(1)).Take(1))
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorIs(t, lim.Wait(ctx, Key("k", PerSecond(1)).Take(1)), ErrInvalid)
	_, err = lim.Hold(ctx, Quota{Name: "q", Limits: []NamedLimit{{"a", PerSecond(1)}}}, time.Second, "")
	require.ErrorIs(t, err, ErrInvalid)
	_, err = lim.Inspect(ctx, "q")
	require.ErrorIs(t, err, ErrInvalid)
	require.Empty(t, mr.Keys())
	for _, p := range []FailurePolicy{FailClosed, FailOpen, FailLocal} {
		_, err := New(c, Options{Failure: p}).Allow(ctx, Key("k", PerSecond(1)).Take(1))
		require.NoError(t, err, "%v", p)
	}
}

// A wrong or missing password is an authentication error, named as such,
// returned whatever the failure policy (a configuration error is not an
// outage to ride out), and no internal script name reaches the message.
func TestAuthErrorsTyped(t *testing.T) {
	srv := redistest.Private(t)
	ctx := context.Background()
	admin := srv.Client()
	require.NoError(t, admin.ConfigSet(ctx, "requirepass", "right-password").Err())
	require.NoError(t, admin.Close())
	for name, password := range map[string]string{"wrong": "wrong-password", "missing": ""} {
		t.Run(name, func(t *testing.T) {
			for _, policy := range []FailurePolicy{FailClosed, FailOpen} {
				// A client of its own per policy, and the single-key call
				// first: without a password, Redis 7 answers a command of
				// more than 10 elements (the quota call's EVALSHA) with
				// "Protocol error: unauthenticated multibulk length" and
				// closes the connection, so a later call on that pooled
				// connection would read EOF, an outage, not an auth error.
				o := redistest.ClientOptions(srv.Addr())
				o.Password = password
				c := redis.NewClient(o)
				t.Cleanup(func() { _ = c.Close() })
				lim := New(c, Options{Failure: policy})
				_, err := lim.Allow(ctx, Key("k", PerSecond(1)).Take(1))
				require.ErrorIs(t, err, ErrAuth, "%v", policy)
				q := Quota{Name: "q", Limits: []NamedLimit{{"a", PerSecond(10)}, {"b", PerMinute(100)}, {"c", PerHour(1000)}}}
				_, err = lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"a": 1, "b": 1, "c": 1}})
				require.ErrorIs(t, err, ErrAuth, "%v", policy)
				require.False(t, errors.Is(err, ErrUnavailable), "%v: not an outage", policy)
				require.NotContains(t, err.Error(), ".lua")
				require.NotContains(t, err.Error(), "right-password")
				t.Logf("%v: %v", policy, err)
			}
		})
	}
}
