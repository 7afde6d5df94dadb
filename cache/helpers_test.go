package cache_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
)

func TestMain(m *testing.M) {
	if os.Getenv(nearWriterAddr) != "" {
		os.Exit(nearWriter()) // the test binary run by BenchmarkNearStaleness
	}
	redistest.Main(m)
}

// env is one test's cache on one backend, with a clock it can move on miniredis.
type env struct {
	t   *testing.T
	b   redistest.Backend
	c   *cache.Cache
	now time.Time
	hk  *hook
}

var epoch = time.Date(2025, 1, 15, 12, 0, 0, 0, time.UTC)

func newEnv(t *testing.T, b redistest.Backend, o cache.Options) *env {
	t.Helper()
	o.Prefix = b.Prefix
	e := &env{t: t, b: b, now: epoch, hk: &hook{}}
	if b.Mini != nil {
		b.Mini.SetTime(epoch)
	}
	// Open a connection first, so connection set-up is not counted as calls.
	if err := b.Client.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	b.Client.AddHook(e.hk)
	e.c = cache.New(b.Client, o)
	return e
}

// advance moves miniredis's clock and TTLs by d. On real Redis it is not
// called: those tests poll (see waitGone).
func (e *env) advance(d time.Duration) {
	e.t.Helper()
	if e.b.Mini == nil {
		e.t.Fatal("advance needs miniredis")
	}
	e.now = e.now.Add(d)
	e.b.Mini.SetTime(e.now)
	e.b.Mini.FastForward(d)
}

// exists reports whether Redis holds the raw key k.
func (e *env) exists(k string) bool {
	e.t.Helper()
	n, err := e.b.Client.Exists(context.Background(), k).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return n == 1
}

// key returns the Redis key of a cache key.
func (e *env) key(c *cache.Cache, key string) string {
	e.t.Helper()
	k, err := c.Key(key)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

// hook counts the calls a client makes: single commands and pipelines.
type hook struct {
	cmds, pipes atomic.Int64
}

func (h *hook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !setup(cmd) {
			h.cmds.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || !setup(cmds[0]) {
			h.pipes.Add(1)
		}
		return next(ctx, cmds)
	}
}

// calls is the number of round trips the client started: commands plus pipelines.
func (h *hook) calls() int64 { return h.cmds.Load() + h.pipes.Load() }

// commandCalls sums, over every node of a real backend, the calls of command
// name that INFO commandstats reports.
func commandCalls(t *testing.T, b redistest.Backend, name string) int64 {
	t.Helper()
	ctx := context.Background()
	var total atomic.Int64
	read := func(ctx context.Context, c *redis.Client) error {
		s, err := c.Info(ctx, "commandstats").Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(s, "\n") {
			if !strings.HasPrefix(line, "cmdstat_"+name+":calls=") {
				continue
			}
			v := strings.TrimPrefix(line, "cmdstat_"+name+":calls=")
			v, _, _ = strings.Cut(v, ",")
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return err
			}
			total.Add(n)
		}
		return nil
	}
	var err error
	if cc, ok := b.Client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, read)
	} else {
		err = read(ctx, b.Client.(*redis.Client))
	}
	if err != nil {
		t.Fatal(err)
	}
	return total.Load()
}

// waitGone polls, every 20 ms for at most 5 s, until the raw key k is gone on
// real Redis. Real Redis expires on its own clock, which tests cannot move, so
// waiting is the only way to see an expiry there; the deadline is far beyond
// any TTL these tests use, so only a key that never expires fails it.
func (e *env) waitGone(k string) time.Duration {
	e.t.Helper()
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		if !e.exists(k) {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("%s still exists after 5 s", k)
	return 0
}

// setup reports whether cmd is part of go-redis's connection set-up (HELLO,
// CLIENT SETINFO), which a new pooled connection sends through the hooks.
func setup(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select":
		return true
	}
	return false
}
