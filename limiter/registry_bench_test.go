package limiter

import (
	"bytes"
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
//   - keys=10000-warm: the same keys, never due: the decision alone;
//   - parallel: the two above from 32 goroutines (RunParallel, parallelism
//     16 on GOMAXPROCS 2), as a service deciding for many callers at once.
//
// Each run has a client and a Limiter of its own.
//
// ns/op, allocs/op and cpu-ns/op (this process's user+sys CPU per Allow,
// getrusage, GC included) count the writes in full: the run waits for the
// registry's goroutines to end before it stops. defs/op is the definitions the
// client sent per Allow: 1 when every due definition was written (a little
// under 1 from several goroutines: a key decided at the end of a pass after
// a goroutine of the next pass moved the clock is written at the next
// pass's time, so is not due again in it).
func BenchmarkFirstSeen(b *testing.B) {
	ctx := context.Background()
	base := time.Now()
	var now atomic.Int64 // the registry's clock
	now.Store(base.UnixNano())
	registryNow = func() time.Time { return time.Unix(0, now.Load()) }
	b.Cleanup(func() { registryNow = time.Now })
	limit := PerSecond(1_000_000)
	const nKeys = 10_000
	keys := make([]string, nKeys)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	seq := 0
	// fresh is a client and a Limiter of their own for one run, so that no
	// run inherits another's pool or autopipeliner; seen: the 10 000 keys
	// decided on (their definitions written) before it.
	fresh := func(b *testing.B, seen bool) (*Limiter, *redis.Client, *defCount) {
		c := benchClient(b, -1)
		defs := &defCount{}
		c.AddHook(defs)
		seq++
		lim := New(c, Options{Prefix: "fs" + strconv.Itoa(seq) + "-" + strconv.Itoa(int(base.UnixNano()%1e6))})
		if _, err := lim.Allow(ctx, Key("warm", limit).Take(1)); err != nil { // loads the script
			b.Fatal(err)
		}
		for _, k := range keys[:nKeys*btoi(seen)] {
			if _, err := lim.Allow(ctx, Key(k, limit).Take(1)); err != nil {
				b.Fatal(err)
			}
		}
		// The registry's writes of the set-up are done (they end within
		// 100 ms: a 10 ms linger, a round trip).
		time.Sleep(100 * time.Millisecond)
		// The pool full, whatever the set-up left (each write of the old
		// registry took a connection of its own, and the pool kept them).
		conns := make([]*redis.Conn, c.Options().PoolSize)
		for i := range conns {
			conns[i] = c.Conn()
			if err := conns[i].Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
		for _, cn := range conns {
			_ = cn.Close()
		}
		return lim, c, defs
	}
	run := func(b *testing.B, lim *Limiter, defs *defCount, parallel bool, key func(i int) string) {
		defs.n.Store(0)
		runtime.GC()
		b.ReportAllocs()
		b.ResetTimer()
		cpu0 := benchCPU()
		if parallel {
			var next atomic.Int64
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := lim.Allow(ctx, Key(key(int(next.Add(1)-1)), limit).Take(1)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		} else {
			for i := range b.N {
				if _, err := lim.Allow(ctx, Key(key(i), limit).Take(1)); err != nil {
					b.Fatal(err)
				}
			}
		}
		// The writes sent in the background are part of the cost.
		for deadline := time.Now().Add(10 * time.Second); registryGoroutines() > 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		b.ReportMetric(float64(benchCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		b.ReportMetric(float64(defs.n.Load())/float64(b.N), "defs/op")
	}
	b.Run("keys=new", func(b *testing.B) {
		lim, _, defs := fresh(b, false)
		run(b, lim, defs, false, func(i int) string { return "n" + strconv.Itoa(i) })
	})
	for _, parallel := range []bool{false, true} {
		name := ""
		if parallel {
			name = "/parallel"
		}
		b.Run("keys=10000-due"+name, func(b *testing.B) {
			lim, _, defs := fresh(b, true)
			start := now.Load()
			run(b, lim, defs, parallel, func(i int) string {
				// The clock at pass i/nKeys: every key due again in the pass
				// (from several goroutines, a key of the next pass may move
				// it first).
				for want := start + int64(i/nKeys+1)*int64(registryEvery); ; {
					if t := now.Load(); t >= want || now.CompareAndSwap(t, want) {
						break
					}
				}
				return keys[i%nKeys]
			})
		})
		b.Run("keys=10000-warm"+name, func(b *testing.B) {
			lim, _, defs := fresh(b, true)
			run(b, lim, defs, parallel, func(i int) string { return keys[i%nKeys] })
		})
	}
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

// registryGoroutines counts the goroutines writing definitions: the
// registry's writer, or (before it) the goroutine each write had.
func registryGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			var count int
			for _, g := range bytes.Split(buf[:n], []byte("\n\n")) {
				if bytes.Contains(g, []byte("limiter.(*Limiter).writeDefinitions")) ||
					bytes.Contains(g, []byte("limiter.(*Limiter).register.func")) {
					count++
				}
			}
			return count
		}
		buf = make([]byte, 2*len(buf))
	}
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
