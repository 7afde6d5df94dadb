package limiter

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkFirstSeen is what the registry's definition writes (registry.go)
// cost the client, on a private redis-server, one goroutine deciding:
//
//   - keys=new: every Allow is on a key never seen before (its state and hold
//     entries are built, its definition encoded and written);
//   - keys=10000-due: 10 000 keys seen before, each due for its rewrite once
//     per pass over them (the registry's clock moves an interval per pass):
//     a service deciding on 10 000 keys, one rewrite per key per interval;
//   - keys=10000-warm: the same keys, never due: the decision alone.
//
// ns/op, allocs/op and cpu-ns/op (this process's user+sys CPU per Allow,
// getrusage, GC included) count the writes in full: the run waits for the
// registry's goroutines to end before it stops. defs/op is the definitions the
// client sent per Allow: 1 when every due definition was written.
func BenchmarkFirstSeen(b *testing.B) {
	c := benchClient(b, -1)
	defs := &defCount{}
	c.AddHook(defs)
	ctx := context.Background()
	base := time.Now()
	now := base
	registryNow = func() time.Time { return now }
	b.Cleanup(func() { registryNow = time.Now })
	limit := PerSecond(1_000_000)
	const nKeys = 10_000
	run := func(b *testing.B, lim *Limiter, key func(i int) string) {
		// The registry's writes of the set-up are done (they end within
		// 100 ms: a 10 ms linger, a round trip).
		time.Sleep(100 * time.Millisecond)
		defs.n.Store(0)
		runtime.GC()
		g0 := runtime.NumGoroutine()
		b.ReportAllocs()
		b.ResetTimer()
		cpu0 := benchCPU()
		for i := range b.N {
			if _, err := lim.Allow(ctx, Key(key(i), limit).Take(1)); err != nil {
				b.Fatal(err)
			}
		}
		// The writes sent in the background are part of the cost.
		for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > g0 && time.Now().Before(deadline); {
			time.Sleep(50 * time.Microsecond)
		}
		b.StopTimer()
		b.ReportMetric(float64(benchCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		b.ReportMetric(float64(defs.n.Load())/float64(b.N), "defs/op")
	}
	seq := 0
	b.Run("keys=new", func(b *testing.B) {
		seq++
		lim := New(c, Options{Prefix: "fs" + strconv.Itoa(seq) + "-" + strconv.Itoa(int(base.UnixNano()%1e6))})
		if _, err := lim.Allow(ctx, Key("warm", limit).Take(1)); err != nil { // loads the script
			b.Fatal(err)
		}
		run(b, lim, func(i int) string { return "n" + strconv.Itoa(i) })
	})
	lim := New(c, Options{Prefix: "fsk-" + strconv.Itoa(int(base.UnixNano()%1e6))})
	keys := make([]string, nKeys)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		if _, err := lim.Allow(ctx, Key(keys[i], limit).Take(1)); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("keys=10000-due", func(b *testing.B) {
		run(b, lim, func(i int) string {
			if i%nKeys == 0 {
				now = now.Add(registryEvery) // every key due again in this pass
			}
			return keys[i%nKeys]
		})
	})
	b.Run("keys=10000-warm", func(b *testing.B) {
		// Due when the run starts: an interval from the last pass.
		now = now.Add(registryEvery)
		for _, k := range keys {
			if _, err := lim.Allow(ctx, Key(k, limit).Take(1)); err != nil {
				b.Fatal(err)
			}
		}
		run(b, lim, func(i int) string { return keys[i%nKeys] })
	})
}

// benchCPU is this process's user+sys CPU time so far, in ns.
func benchCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// defCount counts the definition writes (SET of a :def key) a client sends,
// alone or in pipelines.
type defCount struct{ n atomic.Int64 }

func (h *defCount) add(cmd redis.Cmder) {
	if a := cmd.Args(); cmd.Name() == "set" && len(a) > 1 {
		if k, ok := a[1].(string); ok && strings.HasSuffix(k, ":def") {
			h.n.Add(1)
		}
	}
}

func (h *defCount) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *defCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add(cmd)
		return next(ctx, cmd)
	}
}
func (h *defCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.add(cmd)
		}
		return next(ctx, cmds)
	}
}
