package cache_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
)

// benchNear returns a near-cached Cache on a plain client of the shared real
// server, live, and a Cache without one on another client (another process).
func benchNear(b *testing.B, maxBytes int64) (near, plain *cache.Cache) {
	b.Helper()
	p := redistest.NewPrefix(b)
	near = cache.New(benchClient(b), cache.Options{Prefix: p, Near: cache.NearOptions{MaxBytes: maxBytes}})
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

// BenchmarkNearStaleness measures, over b.N writes by another process (a
// Cache on another client), the time from a write's return to the near
// cache's handling of its invalidation: from then on the near cache serves
// the old value no more. Run it with -benchtime 10000x; p50-us … max-us are
// its distribution (0 when the invalidation was handled before the writer
// had its reply).
func BenchmarkNearStaleness(b *testing.B) {
	near, plain := benchNear(b, 64<<20)
	ctx := context.Background()
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
	lat := make([]time.Duration, 0, b.N)
	i := 0
	for b.Loop() {
		i++
		want.Store(true)
		if err := plain.Set(ctx, "k", strconv.Itoa(i), time.Hour); err != nil {
			b.Fatal(err)
		}
		wrote := time.Now()
		select {
		case at := <-got:
			lat = append(lat, max(at.Sub(wrote), 0))
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
