package reach

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// redisErr is a reply Redis sent, as go-redis returns it.
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

var _ redis.Error = redisErr("")

func TestDownAndAuth(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: &errnoErr{syscall.ECONNREFUSED}}
	for _, tc := range []struct {
		err        error
		down, auth bool
	}{
		{nil, false, false},
		{redis.Nil, false, false},
		{refused, true, false},
		{fmt.Errorf("limiter: decision: %w", io.EOF), true, false},
		{context.DeadlineExceeded, true, false},
		{&timeoutError{time.Second}, true, false},
		{&dialError{refused}, true, false},
		{redis.ErrClosed, true, false},
		{redisErr("LOADING Redis is loading the dataset in memory"), true, false},
		{redisErr("READONLY You can't write against a read only replica."), true, false},
		{redisErr("OOM command not allowed when used memory > 'maxmemory'."), true, false},
		{redisErr("CLUSTERDOWN The cluster is down"), true, false},
		{redisErr("WRONGTYPE Operation against a key holding the wrong kind of value"), false, false},
		{redisErr("ERR user_script:1: Script attempted to access nonexistent global variable"), false, false},
		{redisErr("WRONGPASS invalid username-password pair or user is disabled."), false, true},
		{redisErr("NOAUTH Authentication required."), false, true},
		{redisErr("ERR Protocol error: unauthenticated multibulk length"), false, true},
		{context.Canceled, false, false},
		{errors.New("something else"), false, false},
		{redisErr("NOPERM this user has no permissions to run the 'scan' command"), false, true},
	} {
		require.Equal(t, tc.down, Down(tc.err), "Down(%v)", tc.err)
		aerr := Auth(tc.err)
		require.Equal(t, tc.auth, aerr != nil, "Auth(%v)", tc.err)
		if tc.auth {
			require.ErrorIs(t, aerr, ErrAuth)
			require.ErrorIs(t, aerr, tc.err)
		}
	}
}

// errnoErr stands in for *os.SyscallError: an error that unwraps to an errno.
type errnoErr struct{ errno syscall.Errno }

func (e *errnoErr) Error() string { return "connect: " + e.errno.Error() }
func (e *errnoErr) Unwrap() error { return e.errno }

// A caller's own deadline is not Redis being down.
func TestUnreachableCallerDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	<-ctx.Done()
	require.False(t, Unreachable(ctx, context.DeadlineExceeded))
	require.True(t, Unreachable(context.Background(), context.DeadlineExceeded))
}

// One Watch per client, whoever asks; nil for nil and for clients it cannot hook.
func TestForOncePerClient(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	require.Same(t, For(c), For(c))
	require.Nil(t, For((*redis.Client)(nil)))
	require.Nil(t, For(nil))
	require.True(t, IsNil((*redis.Client)(nil)))
	require.False(t, IsNil(c))
}

// A refused dial ends the call waiting on it with the dial's error; a
// timeout ends it with an error naming the timeout. Both are Down. CallInline
// (fn on the caller's goroutine) ends them alike: both reach fn through its
// context.
func TestCallEndsOnRefusedDialAndTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	c := redis.NewClient(&redis.Options{Addr: addr}) // default options: 5 dials 100 ms apart
	defer c.Close()
	w := For(c)
	// The timeouts on a watch of their own: c's dial attempts go on after
	// the refused call returns (go-redis dials in the background), and their
	// failure ends the calls waiting on c's watch (the hook's job), which
	// under load came before a 10 ms timer.
	quiet := redis.NewClient(&redis.Options{Addr: addr}) // never dials
	defer quiet.Close()
	wq := For(quiet)
	timed := map[string]func(context.Context, time.Duration, func(context.Context) error) error{
		"Call": wq.Call, "CallInline": wq.CallInline,
	}
	for name, call := range map[string]func(context.Context, time.Duration, func(context.Context) error) error{
		"Call": w.Call, "CallInline": w.CallInline,
	} {
		for i := range 3 { // slots are reused: each call is bounded afresh
			start := time.Now()
			err = call(context.Background(), time.Minute, func(ctx context.Context) error { return c.Ping(ctx).Err() })
			// Well under the 400 ms of go-redis's dial backoff alone: the hook ended it.
			require.Less(t, time.Since(start), 100*time.Millisecond, "%s %d", name, i)
			require.ErrorIs(t, err, syscall.ECONNREFUSED, "%s %d", name, i)
			require.True(t, Down(err))

			err = timed[name](context.Background(), 10*time.Millisecond, func(ctx context.Context) error {
				<-ctx.Done()
				return ctx.Err()
			})
			require.ErrorContains(t, err, "no reply within 10ms", "%s %d", name, i)
			require.True(t, Down(err))

			// A call that ends in time is not ended later by its timer.
			require.NoError(t, timed[name](context.Background(), 20*time.Millisecond, func(ctx context.Context) error { return ctx.Err() }))
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err = call(ctx, time.Minute, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
			require.ErrorIs(t, err, context.Canceled, "%s %d: the caller's own context", name, i)
			require.False(t, Down(err))
		}
	}
}

// A slot's timer is left armed after a call (slot.armed): the next call on
// the slot is still bounded by its own timeout, whether that ends after the
// armed time (the timer fires early and arms itself again) or before it (the
// call arms it sooner).
func TestLeftTimerBoundsTheNextCall(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	w := For(c)
	wait := func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
			return errors.New("not ended by its timeout")
		}
	}
	quick := func(context.Context) error { return nil }
	for name, call := range map[string]func(context.Context, time.Duration, func(context.Context) error) error{
		"Call": w.Call, "CallInline": w.CallInline,
	} {
		for _, c := range []struct{ first, next time.Duration }{
			{30 * time.Millisecond, 150 * time.Millisecond}, // the timer fires before the next deadline
			{time.Minute, 20 * time.Millisecond},            // the next deadline is before the timer
		} {
			require.NoError(t, call(context.Background(), c.first, quick))
			start := time.Now()
			err := call(context.Background(), c.next, wait)
			require.ErrorContains(t, err, fmt.Sprintf("no reply within %v", c.next), "%s %v then %v", name, c.first, c.next)
			// Never before its own deadline: expire ends a call only once it has passed.
			require.GreaterOrEqual(t, time.Since(start), c.next, "%s %v then %v", name, c.first, c.next)
		}
	}
}

// A FUNCTION LOAD refused for good (ERR, NOPERM, no way to reach nodes)
// turns functions off; a connection's error or a passing server state does
// not.
func TestLoadRefused(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{redis.ErrClosed, false},
		{context.DeadlineExceeded, false},
		{errNoNode, false},
		{errNoLoader, true},
	} {
		if got := loadRefused(c.err); got != c.want {
			t.Errorf("%v: %v, want %v", c.err, got, c.want)
		}
	}
}

// A NOPERM is not a refused password: its message says the credentials were
// accepted, so the operator looks at the ACL user's rights, not the password.
func TestAuthNoPermSaysSo(t *testing.T) {
	err := Auth(redisErr("NOPERM this user has no permissions to run the 'scan' command"))
	require.ErrorIs(t, err, ErrAuth)
	require.EqualError(t, err, "redis authentication failed (the credentials were accepted: the ACL user lacks a permission): NOPERM this user has no permissions to run the 'scan' command")
	err = Auth(redisErr("WRONGPASS invalid username-password pair or user is disabled."))
	require.NotContains(t, err.Error(), "accepted")
}
