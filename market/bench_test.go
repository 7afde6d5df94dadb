package market_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/market"
)

// benchMarket is a Market on the shared real redis-server through a plain
// client, with TTLs long enough to outlast a benchmark; raw is the same client.
func benchMarket(b *testing.B) (*market.Market, *redis.Client, string) {
	b.Helper()
	srv := redistest.Shared(b)
	rdb := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	b.Cleanup(func() { _ = rdb.Close() })
	p := redistest.NewPrefix(b)
	m := market.New(cache.New(rdb, cache.Options{Prefix: p}), market.Options{TickerTTL: time.Hour, OrderBookTTL: time.Hour})
	return m, rdb, p
}

func BenchmarkGetTicker(b *testing.B) {
	m, rdb, p := benchMarket(b)
	ctx := context.Background()
	if err := m.SetTicker(ctx, "binance", "BTC-USDT", btc); err != nil {
		b.Fatal(err)
	}
	raw, _ := json.Marshal(btc)
	rawKey := p + ":raw-ticker"
	rdb.Set(ctx, rawKey, raw, time.Hour)
	b.Run("raw-GET+Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			data, err := rdb.Get(ctx, rawKey).Bytes()
			if err != nil {
				b.Fatal(err)
			}
			var t market.Ticker
			if err := json.Unmarshal(data, &t); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("market.GetTicker", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := m.GetTicker(ctx, "binance", "BTC-USDT"); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
}

func BenchmarkGetTickers10(b *testing.B) {
	m, rdb, p := benchMarket(b)
	ctx := context.Background()
	in := map[string]market.Ticker{}
	var syms, rawKeys []string
	raw, _ := json.Marshal(btc)
	for i := 0; i < 10; i++ {
		s := fmt.Sprintf("SYM%d-USDT", i)
		in[s], syms = btc, append(syms, s)
		k := p + ":{raw}:" + s
		rawKeys = append(rawKeys, k)
		rdb.Set(ctx, k, raw, time.Hour)
	}
	if err := m.SetTickers(ctx, "binance", in); err != nil {
		b.Fatal(err)
	}
	b.Run("raw-MGET+Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			vals, err := rdb.MGet(ctx, rawKeys...).Result()
			if err != nil {
				b.Fatal(err)
			}
			out := make(map[string]market.Ticker, len(vals))
			for i, v := range vals {
				var t market.Ticker
				if err := json.Unmarshal([]byte(v.(string)), &t); err != nil {
					b.Fatal(err)
				}
				out[syms[i]] = t
			}
		}
	})
	b.Run("market.GetTickers", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if got, err := m.GetTickers(ctx, "binance", syms); len(got) != 10 || err != nil {
				b.Fatal(len(got), err)
			}
		}
	})
}

func BenchmarkGetOrderBook100(b *testing.B) {
	m, rdb, p := benchMarket(b)
	ctx := context.Background()
	ob := market.OrderBook{Symbol: "BTC-USDT", Time: epoch}
	for i := 0; i < 50; i++ {
		ob.Bids = append(ob.Bids, market.Level{Price: 45000 - float64(i)*0.5, Size: 1.25 + float64(i)})
		ob.Asks = append(ob.Asks, market.Level{Price: 45000.5 + float64(i)*0.5, Size: 0.75 + float64(i)})
	}
	if err := market.Set(ctx, m, "binance", "BTC-USDT", ob); err != nil {
		b.Fatal(err)
	}
	raw, _ := json.Marshal(ob)
	b.Logf("100-level book is %d bytes of JSON", len(raw))
	rawKey := p + ":raw-book"
	rdb.Set(ctx, rawKey, raw, time.Hour)
	b.Run("raw-GET+Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			data, err := rdb.Get(ctx, rawKey).Bytes()
			if err != nil {
				b.Fatal(err)
			}
			var got market.OrderBook
			if err := json.Unmarshal(data, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("market.GetOrderBook", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if got, ok, err := market.Get[market.OrderBook](ctx, m, "binance", "BTC-USDT"); !ok || err != nil || len(got.Bids) != 50 {
				b.Fatal(ok, err)
			}
		}
	})
}
