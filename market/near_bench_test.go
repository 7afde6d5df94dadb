package market_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/market"
)

// BenchmarkGetTickerNear is GetTicker through a cache with a near cache
// against GetTicker through one without, in the same run, on the shared real
// redis-server.
func BenchmarkGetTickerNear(b *testing.B) {
	srv := redistest.Shared(b)
	p := redistest.NewPrefix(b)
	ttls := market.Options{TickerTTL: time.Hour}
	var nearCache *cache.Cache
	newMarket := func(o cache.Options) *market.Market {
		rdb := redis.NewClient(redistest.ClientOptions(srv.Addr()))
		b.Cleanup(func() { _ = rdb.Close() })
		o.Prefix = p
		c := cache.New(rdb, o)
		b.Cleanup(func() { _ = c.Close() })
		if o.NearMaxBytes > 0 {
			nearCache = c
		}
		return market.New(c, ttls)
	}
	plain := newMarket(cache.Options{})
	near := newMarket(cache.Options{NearMaxBytes: 64 << 20})
	ctx := context.Background()
	if err := plain.SetTicker(ctx, "binance", "BTC-USDT", btc); err != nil {
		b.Fatal(err)
	}
	// Read until a read is a near hit: the tracking connection is up and the
	// write's invalidation has come.
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		before, _ := nearCache.Stats(ctx)
		if _, ok, err := near.GetTicker(ctx, "binance", "BTC-USDT"); !ok || err != nil {
			b.Fatal(ok, err)
		}
		if after, _ := nearCache.Stats(ctx); after.NearHits > before.NearHits {
			break
		}
		if time.Since(start) > 10*time.Second {
			b.Fatal("never held near")
		}
	}
	for _, m := range []struct {
		name string
		m    *market.Market
	}{{"redis", plain}, {"near", near}} {
		b.Run(m.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok, err := m.m.GetTicker(ctx, "binance", "BTC-USDT"); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
