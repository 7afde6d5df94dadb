package cache_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
)

// quote is a ~200-byte JSON value, the size of a ticker.
type quote struct {
	Symbol    string  `json:"symbol"`
	Price     float64 `json:"price"`
	Volume    float64 `json:"volume"`
	High      float64 `json:"high"`
	Low       float64 `json:"low"`
	Bid       float64 `json:"bid"`
	Ask       float64 `json:"ask"`
	Exchange  string  `json:"exchange"`
	Timestamp string  `json:"timestamp"`
	Sequence  int64   `json:"sequence"`
}

var benchQuote = quote{"BTC-USDT", 45000.50, 1500.25, 45500, 44500, 45000.25, 45000.75,
	"binance", "2025-01-15T12:00:00.000Z", 9876543210}

// benchClient is a plain client of the shared real redis-server: no test hooks,
// so the raw go-redis baseline and the cache pay exactly the same client costs.
func benchClient(b *testing.B) *redis.Client {
	b.Helper()
	srv := redistest.Shared(b)
	c := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	b.Cleanup(func() { _ = c.Close() })
	return c
}

func BenchmarkGet(b *testing.B) {
	rdb := benchClient(b)
	ctx := context.Background()
	c := cache.New(rdb, cache.Options{Prefix: redistest.NewPrefix(b)})
	if err := c.Set(ctx, "btc", benchQuote, time.Hour); err != nil {
		b.Fatal(err)
	}
	raw, _ := json.Marshal(benchQuote)
	rawKey := redistest.NewPrefix(b) + ":raw"
	rdb.Set(ctx, rawKey, raw, time.Hour)
	b.Logf("value is %d bytes", len(raw))
	b.Run("raw-GET+Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		var q quote
		for b.Loop() {
			data, err := rdb.Get(ctx, rawKey).Bytes()
			if err != nil {
				b.Fatal(err)
			}
			if err := json.Unmarshal(data, &q); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cache.Get", func(b *testing.B) {
		b.ReportAllocs()
		var q quote
		for b.Loop() {
			if found, err := c.Get(ctx, "btc", &q); !found || err != nil {
				b.Fatal(found, err)
			}
		}
	})
}

// benchQuotes returns a cache on a plain client of the shared real server,
// holding benchQuote under 100 keys, and those keys.
func benchQuotes(b *testing.B) (*redis.Client, *cache.Cache, []string) {
	b.Helper()
	rdb := benchClient(b)
	c := cache.New(rdb, cache.Options{Prefix: redistest.NewPrefix(b)})
	items := map[string]any{}
	var keys []string
	for i := 0; i < 100; i++ {
		k := fmt.Sprint("sym", i)
		items[k], keys = benchQuote, append(keys, k)
	}
	if err := c.SetMany(context.Background(), items, time.Hour); err != nil {
		b.Fatal(err)
	}
	return rdb, c, keys
}

func BenchmarkGetMany(b *testing.B) {
	rdb, c, keys := benchQuotes(b)
	ctx := context.Background()
	rawKey, _ := c.Key(keys[0])
	b.Run("raw-one-GET+Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		var q quote
		for b.Loop() {
			data, err := rdb.Get(ctx, rawKey).Bytes()
			if err != nil {
				b.Fatal(err)
			}
			if err := json.Unmarshal(data, &q); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, n := range []int{10, 100} {
		raws := make([]string, n)
		for i := range raws {
			raws[i], _ = c.Key(keys[i])
		}
		b.Run(fmt.Sprintf("raw-MGET-%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := rdb.MGet(ctx, raws...).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("raw-MGET-%d+Unmarshal", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				vals, err := rdb.MGet(ctx, raws...).Result()
				if err != nil {
					b.Fatal(err)
				}
				m := make(map[string]quote, n)
				for i, v := range vals {
					var q quote
					if err := json.Unmarshal([]byte(v.(string)), &q); err != nil {
						b.Fatal(err)
					}
					m[keys[i]] = q
				}
			}
		})
		b.Run(fmt.Sprintf("cache.GetMany-%d-bytes", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m, err := cache.GetMany[[]byte](ctx, c, keys[:n])
				if err != nil || len(m) != n {
					b.Fatal(len(m), err)
				}
			}
		})
		b.Run(fmt.Sprintf("cache.GetMany-%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m, err := cache.GetMany[quote](ctx, c, keys[:n])
				if err != nil || len(m) != n {
					b.Fatal(len(m), err)
				}
			}
		})
	}
}

func BenchmarkSet(b *testing.B) {
	rdb := benchClient(b)
	ctx := context.Background()
	c := cache.New(rdb, cache.Options{Prefix: redistest.NewPrefix(b)})
	g := c.Group("binance")
	raw, _ := json.Marshal(benchQuote)
	rawKey := redistest.NewPrefix(b) + ":raw"
	b.Run("raw-SET", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := rdb.Set(ctx, rawKey, raw, time.Minute).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cache.Set", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Set(ctx, "btc", benchQuote, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
	// In a group Set is a script call that drops the value's old tags.
	b.Run("group.Set", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := g.Set(ctx, "btc", benchQuote, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cache.SetTagged-2tags", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := g.Set(ctx, "ticker:BTC", benchQuote, time.Minute, "all", "sym:BTC"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkGetOrLoad(b *testing.B) {
	rdb := benchClient(b)
	ctx := context.Background()
	c := cache.New(rdb, cache.Options{Prefix: redistest.NewPrefix(b)})
	load := func(context.Context) (quote, error) { return benchQuote, nil }
	if _, err := cache.GetOrLoad(ctx, c, "btc", time.Hour, load); err != nil {
		b.Fatal(err)
	}
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cache.GetOrLoad(ctx, c, "btc", time.Hour, load); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// paired runs x and y in turn in one loop, alternating which goes first, and
// reports the mean time of each per op, y's mean over x's ("y/x"), and y's
// median time per call over x's ("p50-y/x", over the first 2^17 calls). Rows
// of one benchmark run seconds apart, and on a shared machine load drifts
// over seconds; here both sides of a target share every moment of load, so
// their ratio holds still where the separate rows' does not. The means also
// carry the few calls that stall for milliseconds while another process has
// the core, which land on either side by chance; the medians do not.
func paired(b *testing.B, xName string, x func(), yName string, y func()) {
	b.ReportAllocs()
	var tx, ty time.Duration
	first := true
	const keep = 1 << 17
	sx, sy := make([]time.Duration, 0, keep), make([]time.Duration, 0, keep)
	for b.Loop() {
		t0 := time.Now()
		if first {
			x()
		} else {
			y()
		}
		t1 := time.Now()
		if first {
			y()
		} else {
			x()
		}
		t2 := time.Now()
		dx, dy := t1.Sub(t0), t2.Sub(t1)
		if !first {
			dx, dy = dy, dx
		}
		tx, ty = tx+dx, ty+dy
		if len(sx) < keep {
			sx, sy = append(sx, dx), append(sy, dy)
		}
		first = !first
	}
	slices.Sort(sx)
	slices.Sort(sy)
	b.ReportMetric(float64(sy[len(sy)/2])/float64(sx[len(sx)/2]), "p50-y/x")
	b.ReportMetric(float64(tx.Nanoseconds())/float64(b.N), xName+"-ns/op")
	b.ReportMetric(float64(ty.Nanoseconds())/float64(b.N), yName+"-ns/op")
	b.ReportMetric(float64(ty)/float64(tx), "y/x")
}

// BenchmarkPaired measures issue 5's targets in pairs (see paired): cache.Get
// against GET + json.Unmarshal of the same 200-byte value, and GetMany of 10
// and 100 keys against one GET + json.Unmarshal. ns/op is the pair's.
func BenchmarkPaired(b *testing.B) {
	rdb, c, keys := benchQuotes(b)
	ctx := context.Background()
	rawKey, _ := c.Key(keys[0])
	var q quote
	get := func() {
		data, err := rdb.Get(ctx, rawKey).Bytes()
		if err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(data, &q); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("Get", func(b *testing.B) {
		var cq quote
		paired(b, "get", get, "cache", func() {
			if found, err := c.Get(ctx, keys[0], &cq); !found || err != nil {
				b.Fatal(found, err)
			}
		})
	})
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("GetMany-%d", n), func(b *testing.B) {
			paired(b, "get", get, "cache", func() {
				if m, err := cache.GetMany[quote](ctx, c, keys[:n]); err != nil || len(m) != n {
					b.Fatal(len(m), err)
				}
			})
		})
	}
}
