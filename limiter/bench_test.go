package limiter

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/oteltest"
	"github.com/redquota/redquota/internal/redistest"
)

// Benchmarks run on a private redis-server the benchmark starts, beside a
// go-redis PING in the same run: compare each ns/op with BenchmarkPing's.
// server-µs/op is the server's own time per script call (INFO commandstats
// usec ÷ calls of evalsha, after CONFIG RESETSTAT): what caps how many
// decisions per second one Redis shard can serve a whole fleet.

var benchSrv *redistest.Server

func benchClient(b *testing.B, retries int) *redis.Client {
	b.Helper()
	if benchSrv == nil {
		s, err := redistest.StartServer()
		if err != nil {
			b.Skipf("redis-server: %v", err)
		}
		benchSrv = s
		redistest.Register(s.Close)
	}
	o := redistest.ClientOptions(benchSrv.Addr())
	o.MaxRetries = retries
	c := redis.NewClient(o)
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// serverTime reports the server's µs per evalsha since the last reset.
func serverTime(b *testing.B, c *redis.Client, cmds ...string) {
	b.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	// The decisions' calls: FCALL on Redis 7, EVALSHA where it has no
	// functions (the first of cmds the server counted).
	var calls, usec float64
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range cmds {
			rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":")
			if !ok {
				continue
			}
			for _, f := range strings.Split(strings.TrimSpace(rest), ",") {
				k, v, _ := strings.Cut(f, "=")
				x, _ := strconv.ParseFloat(v, 64)
				switch k {
				case "calls":
					calls += x
				case "usec":
					usec += x
				}
			}
		}
	}
	if calls > 0 {
		b.ReportMetric(usec/calls, "server-µs/op")
		b.ReportMetric(calls/float64(b.N), "calls/op")
	}
}

func resetStats(b *testing.B, c *redis.Client) {
	b.Helper()
	if err := c.ConfigResetStat(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkPing(b *testing.B) {
	c := benchClient(b, -1)
	ctx := context.Background()
	resetStats(b, c)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
	serverTime(b, c, "ping")
}

func benchDecision(b *testing.B, retries int, fn func(ctx context.Context, lim *Limiter) error) {
	c := benchClient(b, retries)
	ctx := context.Background()
	lim := New(c, Options{Prefix: "bench" + strconv.Itoa(int(time.Now().UnixNano()%1e6))})
	if err := fn(ctx, lim); err != nil { // warm up: loads the script
		b.Fatal(err)
	}
	resetStats(b, c)
	b.ReportAllocs()
	for b.Loop() {
		if err := fn(ctx, lim); err != nil {
			b.Fatal(err)
		}
	}
	serverTime(b, c, "fcall", "evalsha")
}

var benchLimit = PerSecond(1_000_000)

// BenchmarkAllow: GCRA on one hot key, with a client that never retries (no dedupe key).
func BenchmarkAllow(b *testing.B) {
	benchDecision(b, -1, func(ctx context.Context, lim *Limiter) error {
		_, err := lim.Allow(ctx, Key("hot", benchLimit).Take(1))
		return err
	})
}

// BenchmarkAllowDedupe: Allow with a client that retries, so each charged
// decision also writes its dedupe token.
func BenchmarkAllowDedupe(b *testing.B) {
	benchDecision(b, 2, func(ctx context.Context, lim *Limiter) error {
		_, err := lim.Allow(ctx, Key("hot", benchLimit).Take(1))
		return err
	})
}

// BenchmarkAllowNSliding: AllowN(5) on the exact weighted sliding window.
func BenchmarkAllowNSliding(b *testing.B) {
	l := Limit{Rate: 1_000_000_000, Period: time.Second, Algorithm: SlidingWindow}
	benchDecision(b, -1, func(ctx context.Context, lim *Limiter) error {
		_, err := lim.Allow(ctx, Key("sliding", l).Take(5))
		return err
	})
}

var benchQuota = Quota{Name: "binance", Limits: []NamedLimit{
	{"weight", Limit{Rate: 1_000_000_000, Period: time.Minute, Algorithm: FixedWindow}},
	{"orders", Limit{Rate: 1_000_000_000, Period: 10 * time.Second, Algorithm: SlidingWindowCounter}},
	{"daily", Limit{Rate: 1_000_000_000, Period: 24 * time.Hour, Burst: 1_000_000_000}},
}}

var benchCost = Cost{"weight": 5, "orders": 1, "daily": 1}

// BenchmarkAllowQuota3: one quota of three limits (fixed window, counter, GCRA).
func BenchmarkAllowQuota3(b *testing.B) {
	benchDecision(b, -1, func(ctx context.Context, lim *Limiter) error {
		_, err := lim.Allow(ctx, Charge{Quota: benchQuota, Cost: benchCost})
		return err
	})
}

// BenchmarkWaitUncontended: Wait that never has to sleep.
func BenchmarkWaitUncontended(b *testing.B) {
	benchDecision(b, -1, func(ctx context.Context, lim *Limiter) error {
		return lim.Wait(ctx, Key("wait", benchLimit).Take(1))
	})
}

// BenchmarkAllowParallel: Allow from many goroutines on one hot key.
func BenchmarkAllowParallel(b *testing.B) {
	c := benchClient(b, -1)
	lim := New(c, Options{Prefix: "benchp"})
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(32) // 32 × GOMAXPROCS goroutines
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := lim.Allow(ctx, Key("hot", benchLimit).Take(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAllowTelemetry: Allow with the global no-op providers (none set),
// with SDK providers but no recording parent span (metrics only), and with a
// recording parent span (a limiter span per decision, plus metrics).
func BenchmarkAllowTelemetry(b *testing.B) {
	h := oteltest.New()
	cases := []struct {
		name string
		opts Options
		ctx  func() context.Context
	}{
		{"none", Options{}, context.Background},
		{"metrics", Options{Telemetry: h.Providers}, context.Background},
		{"traced", Options{Telemetry: h.Providers}, func() context.Context {
			ctx, _ := h.TP.Tracer("bench").Start(context.Background(), "parent")
			return ctx
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			c := benchClient(b, -1)
			tc.opts.Prefix = "benchtel"
			lim := New(c, tc.opts)
			ctx := tc.ctx()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := lim.Allow(ctx, Key("hot", benchLimit).Take(1)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLeaser is Allow from a Leaser on one key, from one goroutine and
// from 64, beside the same limit decided in Redis on every call (unleased).
// The limit (a fixed window of 10^9/s) is never used up: this is the steady
// state of a busy process. calls/op is script calls per decision; p50-ns and
// p99-ns are per-call latencies, each call timed (the timer's own ~30 ns
// included), and the calls that wait for a lease in flight counted in full.
func BenchmarkLeaser(b *testing.B) {
	c := benchClient(b, -1)
	ctx := context.Background()
	lim := New(c, Options{Prefix: redistest.NewPrefix(b)})
	limit := Limit{Rate: 1_000_000_000, Period: time.Second, Algorithm: FixedWindow}
	for _, g := range []int{1, 64} {
		b.Run("leased/goroutines="+strconv.Itoa(g), func(b *testing.B) {
			ls, err := lim.NewLeaser(Key("lease"+strconv.Itoa(g), limit).Take(1), LeaseOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer ls.Close()
			lat := make(chan []time.Duration, 1024)
			b.ReportAllocs()
			b.ResetTimer()
			goroutines(b, g, func(next func() bool) {
				var ds []time.Duration
				for next() {
					t0 := time.Now()
					ok, err := ls.Allow(ctx, 1)
					if err != nil || !ok {
						b.Error(ok, err)
						return
					}
					ds = append(ds, time.Since(t0))
				}
				lat <- ds
			})
			b.StopTimer()
			close(lat)
			var all []time.Duration
			for ds := range lat {
				all = append(all, ds...)
			}
			slices.Sort(all)
			if len(all) > 0 {
				b.ReportMetric(float64(all[len(all)/2].Nanoseconds()), "p50-ns")
				b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "p99-ns")
			}
			st := ls.Stats()
			b.ReportMetric(float64(st.Calls)/float64(max(st.Decisions, 1)), "calls/op")
		})
		b.Run("unleased/goroutines="+strconv.Itoa(g), func(b *testing.B) {
			b.ReportAllocs()
			goroutines(b, g, func(next func() bool) {
				for next() {
					if r, err := lim.Allow(ctx, Key("unleased"+strconv.Itoa(g), limit).Take(1)); err != nil || !r.Allowed {
						b.Error(r, err)
						return
					}
				}
			})
			b.ReportMetric(1, "calls/op")
		})
	}
}

// goroutines runs body from g goroutines sharing b.N iterations: b.Loop for 1,
// b.RunParallel (g rounded up to a multiple of GOMAXPROCS) otherwise.
func goroutines(b *testing.B, g int, body func(next func() bool)) {
	if g == 1 {
		body(b.Loop)
		return
	}
	b.SetParallelism((g + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.RunParallel(func(pb *testing.PB) { body(pb.Next) })
}

// BenchmarkAllowQuota3RestartSpent: AllowQuota3 with Options.RestartSpent on,
// which remembers each limit decided on (a map lookup per limit) and checks
// the run_id after new connections.
func BenchmarkAllowQuota3RestartSpent(b *testing.B) {
	c := benchClient(b, -1)
	ctx := context.Background()
	lim := New(c, Options{Prefix: "bench" + strconv.Itoa(int(time.Now().UnixNano()%1e6)), RestartSpent: 1})
	if _, err := lim.Allow(ctx, Charge{Quota: benchQuota, Cost: benchCost}); err != nil {
		b.Fatal(err)
	}
	resetStats(b, c)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := lim.Allow(ctx, Charge{Quota: benchQuota, Cost: benchCost}); err != nil {
			b.Fatal(err)
		}
	}
	serverTime(b, c, "fcall", "evalsha")
}
