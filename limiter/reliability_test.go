package limiter

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// CheckServer warns when eviction can remove limiter keys, and the warning is
// warranted; under noeviction it does not warn, and a full memory's OOM
// reaches the failure policy. Each part runs on a server of its own as a
// subtest, so none can hide another's checks, and none may skip.
func TestEvictionWarningAndEffect(t *testing.T) {
	ctx := context.Background()
	limit := PerHour(3)
	one := func(key string) Charge { return Key(key, limit).Take(1) }

	// Any policy but noeviction is warned about, allkeys-* and volatile-*
	// alike: every redquota key has a TTL.
	t.Run("warning", func(t *testing.T) {
		for _, policy := range []string{"allkeys-lru", "allkeys-random", "volatile-lru", "volatile-ttl"} {
			srv := redistest.Private(t, "--maxmemory", "4mb", "--maxmemory-policy", policy)
			c := srv.Client()
			warnings, err := evictionWarnings(ctx, c) // CheckServer's "eviction" check
			require.NoError(t, err)
			require.Len(t, warnings, 1, policy)
			require.Contains(t, warnings[0], policy)
			_ = c.Close()
		}
	})

	// The overshoot the warning is about, made deterministic: under
	// volatile-ttl Redis evicts only keys with a TTL, and the junk written
	// here has none, so the limiter's keys are the only candidates. A write
	// past maxmemory evicts them before Redis refuses it (OOM only comes once
	// no key with a TTL is left): the limit's state is gone by the first OOM
	// at the latest, whatever LRU sampling would have picked.
	t.Run("evicted", func(t *testing.T) {
		srv := redistest.Private(t, "--maxmemory", "4mb", "--maxmemory-policy", "volatile-ttl")
		c := srv.Client()
		defer c.Close()
		lim := New(c, Options{Prefix: "ev"})
		for range 3 {
			r, err := lim.Allow(ctx, one("k"))
			require.NoError(t, err)
			require.True(t, r.Allowed)
		}
		r, err := lim.Allow(ctx, one("k"))
		require.NoError(t, err)
		require.False(t, r.Allowed, "limit not reached before eviction")
		keys, err := c.Keys(ctx, "ev:*:gcra").Result() // the limit's state
		require.NoError(t, err)
		require.Len(t, keys, 1)
		junk := strings.Repeat("x", 64<<10)
		evicted := false
		for i := 0; !evicted; i++ {
			err := c.Set(ctx, "junk"+strconv.Itoa(i), junk, 0).Err()
			n, xerr := c.Exists(ctx, keys[0]).Result()
			require.NoError(t, xerr)
			evicted = n == 0
			if err != nil {
				require.ErrorContains(t, err, "OOM")
				require.True(t, evicted, "Redis refused a write while %s, which has a TTL, was still there", keys[0])
			}
			require.Less(t, i, 1000, "4 MB filled 64 KiB at a time")
		}
		r, err = lim.Allow(ctx, one("k"))
		require.NoError(t, err)
		require.True(t, r.Allowed, "the evicted limit allows again (the overshoot CheckServer warns about)")
	})

	// noeviction: no warning; when memory is full writes fail with OOM and the
	// failure policy answers.
	t.Run("noeviction", func(t *testing.T) {
		srv := redistest.Private(t, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
		c := srv.Client()
		defer c.Close()
		w, err := evictionWarnings(ctx, c)
		require.NoError(t, err)
		require.Empty(t, w, "noeviction warned")
		// maxmemory of 1 byte: memory is over the limit, so every write is refused with OOM.
		require.NoError(t, c.ConfigSet(ctx, "maxmemory", "1").Err())
		r, err := New(c, Options{Prefix: "ev", Failure: FailOpen}).Allow(ctx, one("k2"))
		require.NoError(t, err, "fail open under OOM")
		require.True(t, r.Degraded, "fail open under OOM: %+v", r)
		_, err = New(c, Options{Prefix: "ev"}).Allow(ctx, one("k3"))
		require.ErrorIs(t, err, ErrUnavailable, "fail closed under OOM")
		require.ErrorContains(t, err, "OOM")
	})
}

// SCRIPT FLUSH while decisions run is invisible to callers: NOSCRIPT falls back to EVAL.
func TestScriptFlushMidRun(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		lim := newLim(b, Options{})
		ctx := context.Background()
		stop := make(chan struct{})
		var flushes atomic.Int64
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Scripts (EVALSHA) and the function library (FCALL) both.
				flush := func(ctx context.Context, c *redis.Client) error {
					_ = c.FunctionFlush(ctx).Err()
					return c.ScriptFlush(ctx).Err()
				}
				if cc, ok := b.Client.(*redis.ClusterClient); ok {
					_ = cc.ForEachMaster(ctx, flush)
				} else {
					_ = flush(ctx, b.Client.(*redis.Client))
				}
				flushes.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
		var wg sync.WaitGroup
		var errs atomic.Int64
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				one := Charge{Quota: Quota{Name: "flush", Limits: []NamedLimit{{"a", PerSecond(1_000_000)}}}, Cost: Cost{"a": 1}}
				two := Charge{Quota: Quota{Name: "flush2", Limits: []NamedLimit{{"a", PerSecond(1_000_000)}, {"b", Limit{Rate: 1_000_000, Period: time.Second, Algorithm: FixedWindow}}}}, Cost: Cost{"a": 1, "b": 1}}
				for i := 0; i < 100; i++ {
					c := one // allow.lua
					if i%2 == 1 {
						c = two // decide.lua
					}
					if _, err := lim.Allow(ctx, c); err != nil {
						errs.Add(1)
						t.Log(err)
					}
				}
			}()
		}
		wg.Wait()
		close(stop)
		if errs.Load() != 0 || flushes.Load() < 2 {
			t.Fatalf("%d errors across %d flushes", errs.Load(), flushes.Load())
		}
		require.False(t, lim.functions.Off(), "a flushed library is loaded again, not given up")
	})
}

// A slow server: a call returns at its context's deadline. And when a call's
// connection is lost after Redis ran it (go-redis retries on io.EOF; 9.23
// does not resend after a read timeout), the limit is charged once: on a
// go-redis client with retries on, because the decision is a command go-redis
// never resends (NoRetry); on a client the limiter cannot send at most once,
// because of the dedupe token — and three times with that off, which shows
// what either prevents.
func TestSlowServerDeadlineAndRetries(t *testing.T) {
	srv := redistest.Private(t)
	ctx := context.Background()
	sleeper := srv.Client()
	defer sleeper.Close()
	sleep := func(d string) <-chan struct{} {
		done := make(chan struct{})
		go func() { _ = sleeper.Do(ctx, "DEBUG", "SLEEP", d).Err(); close(done) }()
		time.Sleep(20 * time.Millisecond) // let DEBUG SLEEP reach the server first
		return done
	}

	c := srv.Client()
	defer c.Close()
	lim := New(c, Options{Prefix: "slow"})
	done := sleep("1.5")
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	start := time.Now()
	_, err := lim.Allow(dctx, Key("k", PerSecond(10)).Take(1))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the deadline", err)
	}
	// 100 ms deadline; 900 ms of slack for a loaded machine, still well short of the 1.5 s sleep.
	if el := time.Since(start); el > time.Second {
		t.Fatalf("returned after %v, past the deadline", el)
	}
	<-done

	// A proxy that drops each reply and cuts the connection: Redis has run
	// the attempt, the client sees io.EOF, and go-redis sends it again.
	proxy := redistest.NewFaultProxy(t, srv.Addr())
	for _, tc := range []struct {
		name   string
		wrap   bool // hide Process and Do: the client may resend the call
		dedupe bool
		want   int
	}{
		{"go-redis client", false, true, 3},
		{"wrapped, dedupe on", true, true, 3},
		{"wrapped, dedupe off", true, false, 9},
	} {
		o := redistest.ClientOptions(proxy.Addr())
		o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff = 2, time.Millisecond, time.Millisecond
		rc := redis.NewClient(o)
		opts := Options{Prefix: "retry", Timeout: -1}
		if !tc.dedupe {
			opts.DedupeWindow = -1
		}
		var client Client = rc
		if tc.wrap {
			client = scriptsOnly{rc}
		}
		lim := New(client, opts)
		key := "dedupe-" + strings.ReplaceAll(tc.name, " ", "-")
		if err := script.Load(ctx, c); err != nil { // no NOSCRIPT round trip through the proxy
			t.Fatal(err)
		}
		if err := rc.Ping(ctx).Err(); err != nil { // a pooled connection, dialled before the fault
			t.Fatal(err)
		}
		// A decision's reply for one limit is an array of 13 integers
		// (decide.lua's layout: the wrapped client's call, with its token),
		// or of 7 when it books nothing (its short form), or one integer
		// (allow.lua's grant now).
		var dropped atomic.Int64
		proxy.SetDropReplies(func(b []byte) bool {
			if bytes.HasPrefix(b, []byte("*13\r\n")) || bytes.HasPrefix(b, []byte("*7\r\n")) || bytes.HasPrefix(b, []byte(":")) {
				dropped.Add(1)
				return true
			}
			return false
		})
		// Each attempt (at most 1 + 2 retries) is run by Redis and loses its reply.
		_, err := lim.Allow(ctx, Key(key, PerMinute(30)).Take(3))
		proxy.SetDropReplies(nil)
		if err == nil {
			t.Fatalf("%s: expected the call to fail", tc.name)
		}
		time.Sleep(20 * time.Millisecond) // the last attempt has run before its reply was dropped
		r, err := New(c, Options{Prefix: "retry"}).Allow(ctx, Key(key, PerMinute(30)).Take(1))
		if err != nil {
			t.Fatal(err)
		}
		if charged := 30 - 1 - r.Remaining; charged != tc.want {
			t.Fatalf("%s: %d units charged by one AllowN(3) whose reply was lost %d times, want %d", tc.name, charged, dropped.Load(), tc.want)
		}
		if !tc.wrap && dropped.Load() != 1 {
			t.Fatalf("%s: go-redis sent the decision %d times, want once", tc.name, dropped.Load())
		}
		rc.Close()
	}
}

// A server killed mid-run and restarted: the policy answers from the first
// failed call, nothing leaks, and the same clients recover.
func TestServerKilledNoLeaks(t *testing.T) {
	// The redis-server processes of the test harness (and their exec.Cmd
	// goroutines) are not the limiter's.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/redquota/redquota/internal/redistest.(*Server).Start.func1"),
		goleak.IgnoreAnyFunction("os/exec.(*Cmd).Start.func2"))
	srv := redistest.Private(t)
	ctx := context.Background()
	// One dial attempt: go-redis's default of five, with backoff, can outlast
	// the outage, and then no call ever sees Redis down.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond, DialerRetries: 1})
	lim := New(c, Options{Prefix: "kill", Failure: FailOpen, CoolDown: 100 * time.Millisecond})
	var degraded, real atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := lim.Allow(ctx, Key("k", PerSecond(1_000_000)).Take(1))
				if err != nil {
					t.Error(err)
					return
				}
				if r.Degraded {
					degraded.Add(1)
				} else {
					real.Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	srv.Stop()
	// Down until some answer has come from the failure policy (bounded: 5 s).
	for deadline := time.Now().Add(5 * time.Second); degraded.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	before := real.Load()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for real.Load() == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if degraded.Load() == 0 || real.Load() == before {
		t.Fatalf("degraded %d, real answers after restart %d", degraded.Load(), real.Load()-before)
	}
	_ = c.Close()
}

// A cluster master restarted: calls on its slots fail per policy, then recover.
func TestClusterMasterRestart(t *testing.T) {
	nodes := redistest.PrivateCluster(t)
	o := redistest.ClusterOptions(nodes)
	o.MaxRetries = -1
	c := redis.NewClusterClient(o)
	defer c.Close()
	ctx := context.Background()
	lim := New(c, Options{Prefix: "cr", Failure: FailOpen, CoolDown: 100 * time.Millisecond})
	// Find the node serving the key's slot.
	key := "cr:{k}:gcra"
	slot := redistest.Slot(key)
	victim := nodes[slot*3/16384]
	if r, err := lim.Allow(ctx, Key("k", PerSecond(100)).Take(1)); err != nil || r.Degraded {
		t.Fatalf("before: %+v %v", r, err)
	}
	victim.Stop()
	start := time.Now()
	r, err := lim.Allow(ctx, Key("k", PerSecond(100)).Take(1))
	if err != nil || !r.Degraded {
		t.Fatalf("with its master down: %+v %v", r, err)
	}
	// Bounded by the dial timeout (1 s in the test options) plus slack.
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("policy answer took %v", el)
	}
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := lim.Allow(ctx, Key("k", PerSecond(100)).Take(1))
		if err == nil && !r.Degraded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never recovered: %+v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A caller's deadline passing during a call is the caller's, not a dead
// Redis: it must not count towards opening the breaker, even when go-redis
// reports it as an i/o timeout before ctx.Err() is set.
func TestCallerDeadlineIsNotUnavailability(t *testing.T) {
	past, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	ioTimeout := &timeoutErr{}
	// ctx.Err() may lag; the deadline itself has passed.
	if unreachable(deadlineOnly{past}, ioTimeout) {
		t.Fatal("an i/o timeout after the caller's deadline counted as Redis unreachable")
	}
	if !unreachable(context.Background(), ioTimeout) {
		t.Fatal("an i/o timeout without a deadline must count as unreachable")
	}
	// And the caller learns it was its deadline, through errors.Is.
	if callerDone(deadlineOnly{past}) != context.DeadlineExceeded {
		t.Fatal("a passed deadline not reported as context.DeadlineExceeded")
	}

	// End to end: deadlines passing mid-call never open the breaker.
	srv := redistest.Private(t)
	c := srv.Client()
	defer c.Close()
	lim := New(c, Options{Prefix: "dl", CoolDown: time.Minute})
	sleeper := srv.Client()
	defer sleeper.Close()
	for i := 0; i < 2*breakerTrip; i++ {
		done := make(chan struct{})
		go func() { _ = sleeper.Do(context.Background(), "DEBUG", "SLEEP", "0.1").Err(); close(done) }()
		time.Sleep(10 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := lim.Allow(ctx, Key("k", PerSecond(100)).Take(1))
		cancel()
		<-done
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call past its deadline returned %v, want an error wrapping context.DeadlineExceeded", err)
		}
	}
	if _, err := lim.Allow(context.Background(), Key("k", PerSecond(100)).Take(1)); err != nil {
		t.Fatalf("after callers' deadlines passed mid-call: %v (the breaker opened)", err)
	}
}

// deadlineOnly is a context whose deadline has passed but whose Err is still
// nil: the moment between the socket deadline and the context's own timer.
type deadlineOnly struct{ context.Context }

func (deadlineOnly) Err() error { return nil }

type timeoutErr struct{}

func (*timeoutErr) Error() string   { return "i/o timeout" }
func (*timeoutErr) Timeout() bool   { return true }
func (*timeoutErr) Temporary() bool { return true }
