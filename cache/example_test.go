package cache_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/cache"
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

	c := cache.New(rdb, cache.Options{})
	_ = c.Set(ctx, "btc_price", 45000.50, 60*time.Second)
	var price float64
	found, _ := c.Get(ctx, "btc_price", &price)
	fmt.Println(found, price)

	// Tagged values live in a group: one slot for a value and its tags.
	binance := c.Group("binance")
	_ = binance.Set(ctx, "orderbook:BTC-USDT", []float64{45000, 1.5}, 500*time.Millisecond, "BTC-USDT")
	_ = binance.Set(ctx, "ticker:BTC-USDT", 45000.50, 2*time.Second, "BTC-USDT")
	n, _ := binance.InvalidateTags(ctx, "BTC-USDT")
	fmt.Println("invalidated", n)

	v, _ := cache.GetOrLoad(ctx, c, "eth_price", time.Minute, func(context.Context) (float64, error) {
		return 2500, nil // the exchange call
	})
	fmt.Println(v)

	st, _ := c.Stats(ctx)
	fmt.Printf("hits %d misses %d loads %d\n", st.Hits, st.Misses, st.Loads)
	// Output:
	// true 45000.5
	// invalidated 2
	// 2500
	// hits 1 misses 1 loads 1
}
