package cache_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
)

// benchNear returns a near-cached Cache on a plain client of the shared real
// server, live, and a Cache without one on another client (another process).
func benchNear(b *testing.B, maxBytes int64) (near, plain *cache.Cache) {
	b.Helper()
	p := redistest.NewPrefix(b)
	near = cache.New(benchClient(b), cache.Options{Prefix: p, NearMaxBytes: maxBytes})
	b.Cleanup(func() { _ = near.Close() })
	for start := time.Now(); !cache.NearLive(near); time.Sleep(time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			b.Fatal("near cache never live")
		}
	}
	return near, cache.New(benchClient(b), cache.Options{Prefix: p})
}

// BenchmarkNearGet is a Get answered by the near cache against the same Get
// read from Redis (a Cache without one), for a raw value (*string) and a
// decoded ~200-byte JSON value.
func BenchmarkNearGet(b *testing.B) {
	near, plain := benchNear(b, 64<<20)
	ctx := context.Background()
	raw := strings.Repeat("x", 200)
	if err := plain.SetMany(ctx, map[string]any{"raw": raw, "btc": benchQuote}, time.Hour); err != nil {
		b.Fatal(err)
	}
	for _, key := range []string{"raw", "btc"} { // held near once the writes' invalidations are in
		var s string
		for start := time.Now(); ; time.Sleep(time.Millisecond) {
			hits, _ := near.Stats(ctx)
			if _, err := near.Get(ctx, key, &s); err != nil {
				b.Fatal(err)
			}
			if after, _ := near.Stats(ctx); after.NearHits > hits.NearHits {
				break
			}
			if time.Since(start) > 10*time.Second {
				b.Fatal("never held near")
			}
		}
	}
	for _, c := range []struct {
		name string
		c    *cache.Cache
	}{{"redis", plain}, {"near", near}} {
		b.Run(c.name+"/raw", func(b *testing.B) {
			b.ReportAllocs()
			var s string
			for b.Loop() {
				if found, err := c.c.Get(ctx, "raw", &s); !found || err != nil {
					b.Fatal(found, err)
				}
			}
		})
		b.Run(c.name+"/json", func(b *testing.B) {
			b.ReportAllocs()
			var q quote
			for b.Loop() {
				q = quote{} // a fresh destination, as a caller's local variable is
				if found, err := c.c.Get(ctx, "btc", &q); !found || err != nil {
					b.Fatal(found, err)
				}
			}
		})
	}
	s, _ := near.Stats(ctx)
	if s.Hits != s.NearHits+2 { // the two reads that brought the values
		b.Fatalf("%d hits, %d near: a read went to Redis", s.Hits, s.NearHits)
	}
}

// BenchmarkNearStaleness measures, over b.N writes by another OS process
// (this test binary run again as nearWriter, on its own client), the time
// from a write's return there to this process's near cache having handled
// its invalidation: from then on the near cache serves the old value no
// more. Both ends read the wall clock, which the two processes share on one
// machine. Run it with -benchtime 10000x; p50-us … max-us are its
// distribution (0 when the invalidation was handled before the writer had
// its reply).
func BenchmarkNearStaleness(b *testing.B) {
	near, _ := benchNear(b, 64<<20)
	k, err := near.Key("k")
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan time.Time, 1)
	var want atomic.Bool
	cache.SetNearOnInvalidate(near, func(key string) {
		if key == k && want.CompareAndSwap(true, false) {
			got <- time.Now()
		}
	})
	w := startNearWriter(b, redistest.Shared(b).Addr(), near)
	lat := make([]time.Duration, 0, b.N)
	i := 0
	for b.Loop() {
		i++
		want.Store(true)
		wrote := w.write(b, i)
		select {
		case at := <-got:
			lat = append(lat, max(time.Duration(at.UnixNano()-wrote), 0))
		case <-time.After(10 * time.Second):
			b.Fatal("no invalidation")
		}
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(q(0.5), "p50-us")
	b.ReportMetric(q(0.9), "p90-us")
	b.ReportMetric(q(0.99), "p99-us")
	b.ReportMetric(q(0.999), "p99.9-us")
	b.ReportMetric(q(1), "max-us")
}

// The environment with which the test binary runs as nearWriter.
const (
	nearWriterAddr   = "REDQUOTA_NEAR_WRITER_ADDR"
	nearWriterPrefix = "REDQUOTA_NEAR_WRITER_PREFIX"
)

// nearWriterProc is a running nearWriter process.
type nearWriterProc struct {
	in  io.Writer
	out *bufio.Scanner
}

// startNearWriter runs the test binary as nearWriter on the Redis at addr,
// writing c's key "k", until the benchmark ends.
func startNearWriter(b *testing.B, addr string, c *cache.Cache) *nearWriterProc {
	b.Helper()
	k, _ := c.Key("k")
	prefix := strings.TrimSuffix(k, ":v:{k}")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), nearWriterAddr+"="+addr, nearWriterPrefix+"="+prefix)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = in.Close() // the writer exits at the end of its input
		_ = cmd.Wait()
	})
	return &nearWriterProc{in: in, out: bufio.NewScanner(out)}
}

// write has the writer set "k" to i and returns the wall-clock time, in ns
// since the Unix epoch, at which its Set returned.
func (w *nearWriterProc) write(b *testing.B, i int) int64 {
	if _, err := fmt.Fprintln(w.in, i); err != nil {
		b.Fatal(err)
	}
	if !w.out.Scan() {
		b.Fatalf("near writer: %v", w.out.Err())
	}
	ns, err := strconv.ParseInt(w.out.Text(), 10, 64)
	if err != nil {
		b.Fatalf("near writer: %q", w.out.Text())
	}
	return ns
}

// nearWriter is the writing process of BenchmarkNearStaleness (TestMain
// runs it when nearWriterAddr is set): for each line i of its input it sets
// "k" to i through a Cache of its own and prints when the Set returned.
func nearWriter() int {
	rdb := redis.NewClient(redistest.ClientOptions(os.Getenv(nearWriterAddr)))
	defer rdb.Close()
	c := cache.New(rdb, cache.Options{Prefix: os.Getenv(nearWriterPrefix)})
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	for in.Scan() {
		if err := c.Set(context.Background(), "k", in.Text(), time.Hour); err != nil {
			fmt.Fprintln(os.Stderr, "near writer:", err)
			return 1
		}
		fmt.Fprintln(out, time.Now().UnixNano())
		if err := out.Flush(); err != nil {
			return 1
		}
	}
	return 0
}

// BenchmarkNearChurn reads 100 000 keys of 200 bytes in turn through a near
// cache of 1 MiB (about 3 500 entries) and reports the largest size it
// reached against its bound (peak/max, at most 1) and its evictions.
func BenchmarkNearChurn(b *testing.B) {
	const maxBytes = 1 << 20
	near, plain := benchNear(b, maxBytes)
	ctx := context.Background()
	val := strings.Repeat("x", 200)
	const n = 100_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	for lo := 0; lo < n; lo += 1000 {
		items := map[string]any{}
		for _, k := range keys[lo : lo+1000] {
			items[k] = val
		}
		if err := plain.SetMany(ctx, items, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	var peak int64
	i := 0
	var s string
	for b.Loop() {
		if _, err := near.Get(ctx, keys[i%n], &s); err != nil {
			b.Fatal(err)
		}
		if i++; i%1000 == 0 {
			st, _ := near.Stats(ctx)
			peak = max(peak, st.NearBytes)
		}
	}
	st, _ := near.Stats(ctx)
	peak = max(peak, st.NearBytes)
	b.ReportMetric(float64(peak)/maxBytes, "peak/max")
	b.ReportMetric(float64(st.NearEvictions), "evictions")
}
