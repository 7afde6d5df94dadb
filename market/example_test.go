package market_test

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/market"
)

func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	m := market.New(cache.New(rdb, cache.Options{}), market.Options{})
	_ = m.SetTicker(ctx, "binance", "BTC-USDT", market.Ticker{Symbol: "BTC-USDT", Price: 45000.50, Volume: 1500.25})
	t, found, _ := m.GetTicker(ctx, "binance", "BTC-USDT")
	fmt.Println(found, t.Price)

	_ = m.SetTickers(ctx, "binance", map[string]market.Ticker{
		"ETH-USDT": {Symbol: "ETH-USDT", Price: 2500},
		"SOL-USDT": {Symbol: "SOL-USDT", Price: 100},
	})
	ts, _ := m.GetTickers(ctx, "binance", []string{"ETH-USDT", "SOL-USDT", "XRP-USDT"})
	fmt.Println(len(ts), ts["SOL-USDT"].Price)

	n, _ := m.IncrementAPICalls(ctx, "binance", "/api/v3/ticker", 0)
	fmt.Println("API calls this minute:", n)

	deleted, _ := m.InvalidateExchange(ctx, "binance")
	fmt.Println("invalidated", deleted)
	// Output:
	// true 45000.5
	// 2 100
	// API calls this minute: 1
	// invalidated 3
}

func ExampleOrFetch() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	m := market.New(cache.New(rdb, cache.Options{}), market.Options{})

	calls := 0
	fetch := func(context.Context) (market.OrderBook, error) { // the exchange's answer
		calls++
		return market.OrderBook{Symbol: "BTCUSDT", Bids: []market.Level{{Price: 45000, Size: 1.5}}}, nil
	}
	for range 3 {
		b, err := market.OrFetch(ctx, m, "binance", "BTCUSDT", fetch)
		fmt.Println(b.Bids[0].Price, err)
	}
	fmt.Println("exchange calls:", calls)

	_ = market.Set(ctx, m, "binance", "BTCUSDT", []market.Candle{{Open: 1, High: 2, Low: 1, Close: 2}}, "1m")
	c, found, _ := market.Get[[]market.Candle](ctx, m, "binance", "BTCUSDT", "1m")
	fmt.Println(found, len(c))
	// Output:
	// 45000 <nil>
	// 45000 <nil>
	// 45000 <nil>
	// exchange calls: 1
	// true 1
}
