package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// The benchmarks share one redis-server started by TestMain, every contender
// on it, in one run:
//
//	BenchmarkSequential/keys=K/lib=L  one goroutine; ns/op, B/op, allocs/op, server-µs/op, cmds/op
//	BenchmarkParallel/keys=K/lib=L    64 goroutines (b.RunParallel); decisions/s
//	BenchmarkQuota3/keys=1/lib=L      weight/min + orders/10 s + orders/day: one
//	                                  redquota AllowQuota against three calls of each peer
//
// keys=1 is one hot key; keys=10000 rotates through 10 000 keys.
// server-µs/op is the server's own time per decision: INFO commandstats usec
// of every command the contender sent (all of them, for a contender that sends
// several) after CONFIG RESETSTAT, divided by the decisions made. cmds/op is
// how many commands that took.

var (
	srv    *Server
	srvErr error
	env    Env
)

func TestMain(m *testing.M) {
	srv, srvErr = StartServer()
	if srvErr == nil {
		env = NewEnv(srv.Addr())
	}
	code := m.Run()
	if srvErr == nil {
		_ = env.Client.Close()
		_ = env.Retrying.Close()
		srv.Close()
	}
	os.Exit(code)
}

func need(tb testing.TB) {
	tb.Helper()
	if srvErr != nil {
		tb.Skipf("redis-server: %v", srvErr)
	}
}

var keySets = func() [][]string {
	rot := make([]string, 10_000)
	for i := range rot {
		rot[i] = "k" + strconv.Itoa(i)
	}
	return [][]string{{"hot"}, rot}
}()

func single(tb testing.TB) []Contender {
	tb.Helper()
	cs, err := Single(env)
	if err != nil {
		tb.Fatal(err)
	}
	return append(Floors(env), cs...)
}

func quota(tb testing.TB) []Contender {
	tb.Helper()
	cs, err := QuotaContenders(env)
	if err != nil {
		tb.Fatal(err)
	}
	return append(Floors(env)[:1], cs...) // PING as the floor
}

// prepare runs the contender's Prepare and one decision (loading scripts),
// then clears the server's statistics.
func prepare(b *testing.B, c Contender, keys []string) {
	b.Helper()
	ctx := context.Background()
	if c.Prepare != nil {
		if err := c.Prepare(ctx, keys); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Decide(ctx, keys[0]); err != nil {
		b.Fatal(err)
	}
	if err := ResetStats(ctx, env.Client); err != nil {
		b.Fatal(err)
	}
	cpu0, _ = srv.CPUTime()
}

// cpu0 is the server's CPU time when the measured loop started.
var cpu0 time.Duration

func reportServer(b *testing.B, c Contender, decisions int) {
	b.Helper()
	if len(c.Commands) == 0 || decisions == 0 {
		return
	}
	st, err := CommandStats(context.Background(), env.Client)
	if err != nil {
		b.Fatal(err)
	}
	usec, calls := TopLevel(st, c.Commands, c.Inner)
	b.ReportMetric(usec/float64(decisions), "server-µs/op")
	b.ReportMetric(calls/float64(decisions), "cmds/op")
	if cpu, err := srv.CPUTime(); err == nil {
		b.ReportMetric(float64((cpu-cpu0).Microseconds())/float64(decisions), "server-cpu-µs/op")
	}
}

func sequential(b *testing.B, c Contender, keys []string) {
	prepare(b, c, keys)
	ctx := context.Background()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := c.Decide(ctx, keys[n%len(keys)]); err != nil {
			b.Fatal(err)
		}
		n++
	}
	reportServer(b, c, n)
}

func parallel(b *testing.B, c Contender, keys []string) { parallelN(b, c, keys, Goroutines) }

// parallelN runs the contender from about goroutines goroutines.
func parallelN(b *testing.B, c Contender, keys []string, goroutines int) {
	prepare(b, c, keys)
	ctx := context.Background()
	var errs, start atomic.Int64
	var first atomic.Value
	b.ReportAllocs()
	b.SetParallelism((goroutines + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(start.Add(7919)) // each goroutine starts elsewhere in the key ring
		for pb.Next() {
			if err := c.Decide(ctx, keys[i%len(keys)]); err != nil {
				errs.Add(1)
				first.CompareAndSwap(nil, err.Error())
			}
			i++
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	if e := errs.Load(); e > 0 {
		// throttled's compare-and-swap gives up after 10 attempts on a hot key.
		b.ReportMetric(float64(e)/float64(b.N), "errors/op")
		b.Logf("%s: %d of %d decisions failed, first: %v", c.Name, e, b.N, first.Load())
	}
	reportServer(b, c, b.N)
}

func each(b *testing.B, cs func(testing.TB) []Contender, run func(*testing.B, Contender, []string), sets [][]string) {
	need(b)
	for _, keys := range sets {
		b.Run("keys="+strconv.Itoa(len(keys)), func(b *testing.B) {
			for _, c := range cs(b) {
				b.Run("lib="+c.Name, func(b *testing.B) { run(b, c, keys) })
			}
		})
	}
}

func BenchmarkSequential(b *testing.B) { each(b, single, sequential, keySets) }

func BenchmarkParallel(b *testing.B) { each(b, single, parallel, keySets) }

func BenchmarkQuota3(b *testing.B) { each(b, quota, sequential, keySets[:1]) }

// BenchmarkParallel256 is BenchmarkParallel's hot key from 256 goroutines:
// where coalescing (redquota-coalesce) should pay most.
func BenchmarkParallel256(b *testing.B) {
	each(b, single, func(b *testing.B, c Contender, keys []string) { parallelN(b, c, keys, 256) }, keySets[:1])
}

// TestContenders checks, quickly, that every contender decides without error
// on the shared server, and how many commands each sends per decision.
func TestContenders(t *testing.T) {
	need(t)
	ctx := context.Background()
	for name, cs := range map[string][]Contender{"single": single(t), "quota": quota(t)} {
		for _, c := range cs {
			t.Run(name+"/"+c.Name, func(t *testing.T) {
				keys := []string{"t1", "t2"}
				if c.Prepare != nil {
					if err := c.Prepare(ctx, keys); err != nil {
						t.Fatal(err)
					}
				}
				if err := c.Decide(ctx, "t1"); err != nil { // loads scripts
					t.Fatal(err)
				}
				if err := ResetStats(ctx, env.Client); err != nil {
					t.Fatal(err)
				}
				for range 3 {
					for _, k := range keys {
						if err := c.Decide(ctx, k); err != nil {
							t.Fatalf("decide %s: %v", k, err)
						}
					}
				}
				st, err := CommandStats(ctx, env.Client)
				if err != nil {
					t.Fatal(err)
				}
				usec, calls := TopLevel(st, c.Commands, c.Inner)
				t.Logf("%s: %.1f commands, %.1f µs per decision", c.Name, calls/6, usec/6)
				if len(c.Commands) > 0 && calls < 6 {
					t.Error("no command reached the server")
				}
			})
		}
	}
}

func TestErrDenied(t *testing.T) {
	if got := verdict(false, nil); !errors.Is(got, ErrDenied) {
		t.Fatalf("verdict(false) = %v", got)
	}
	if got := verdict(true, fmt.Errorf("x")); got == nil || errors.Is(got, ErrDenied) {
		t.Fatalf("verdict(err) = %v", got)
	}
}
