package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/limiter"
)

func Example() {
	mr := miniredis.NewMiniRedis()
	_ = mr.Start()
	defer mr.Close()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	ctx := context.Background()

	lim := limiter.New(client, limiter.Options{})
	limit := limiter.PerSecond(3)
	for i := 0; i < 4; i++ {
		r, err := lim.Allow(ctx, limiter.Key("user:42", limit).Take(1))
		if err != nil {
			panic(err)
		}
		fmt.Println(r.Allowed, r.Remaining)
	}
	// Output:
	// true 2
	// true 1
	// true 0
	// false 0
}

// Most callers should use Wait: it books the turn in Redis, in the call that
// checks, and sleeps exactly until it; past the context's deadline it charges
// nothing and says so at once.
func ExampleLimiter_Wait() {
	mr := miniredis.NewMiniRedis()
	_ = mr.Start()
	defer mr.Close()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	ctx := context.Background()

	lim := limiter.New(client, limiter.Options{})
	api := limiter.Key("api", limiter.PerHour(2))
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		err := lim.Wait(ctx, api.Take(1))
		cancel()
		fmt.Println(err == nil, errors.Is(err, limiter.ErrWouldExceedDeadline))
	}
	// Output:
	// true false
	// true false
	// false true
}

// A quota charges several limits together, all or nothing, in one round trip.
// The figures are an example's; package exchanges holds each exchange's own.
func ExampleLimiter_Allow_quota() {
	mr := miniredis.NewMiniRedis()
	_ = mr.Start()
	defer mr.Close()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	ctx := context.Background()

	lim := limiter.New(client, limiter.Options{})
	exchange := limiter.Quota{Name: "exchange", Limits: []limiter.NamedLimit{
		{Name: "weight", Limit: limiter.Limit{Rate: 1200, Period: time.Minute, Algorithm: limiter.FixedWindow}},
		{Name: "orders", Limit: limiter.Limit{Rate: 10, Period: 10 * time.Second, Algorithm: limiter.SlidingWindow}},
	}}
	r, _ := lim.Allow(ctx, limiter.Charge{Quota: exchange, Cost: limiter.Cost{"weight": 1, "orders": 1}}) // place an order
	fmt.Println(r.Allowed, r.Limits[0].Remaining, r.Limits[1].Remaining)
	r, _ = lim.Allow(ctx, limiter.Charge{Quota: exchange, Cost: limiter.Cost{"weight": 1200}}) // more than is left this minute
	fmt.Println(r.Allowed, r.DeniedBy)
	// Output:
	// true 1199 9
	// false weight
}

// A Leaser answers most decisions in-process from units leased from Redis
// several at a time; every unit is still counted against the global limit.
func ExampleLimiter_NewLeaser() {
	mr := miniredis.NewMiniRedis()
	_ = mr.Start()
	defer mr.Close()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	ctx := context.Background()

	lim := limiter.New(client, limiter.Options{})
	ls, err := lim.NewLeaser(limiter.Key("exchange", limiter.PerSecond(1000)).Take(1), limiter.LeaseOptions{})
	if err != nil {
		panic(err)
	}
	defer ls.Close()
	allowed := 0
	for range 500 {
		if ok, err := ls.Allow(ctx, 1); err == nil && ok {
			allowed++
		}
	}
	st := ls.Stats()
	fmt.Println(allowed, "allowed;", "most answered locally:", st.Local > st.Calls)
	// Output:
	// 500 allowed; most answered locally: true
}

// A quota is a template: For gives each key (an account, an API key) its own
// instance. Quotas sharing a Group sit in one Redis Cluster slot, so one
// request charges them together, all or nothing, in one round trip: here
// Binance's weight per IP, shared by every account behind it, and orders per
// account.
func ExampleLimiter_Allow_groups() {
	mr := miniredis.NewMiniRedis()
	_ = mr.Start()
	defer mr.Close()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	ctx := context.Background()

	lim := limiter.New(client, limiter.Options{})
	ip := limiter.Quota{Name: "binance-ip", Group: "binance-ip1", Limits: []limiter.NamedLimit{
		{Name: "weight", Limit: limiter.Limit{Rate: 6000, Period: time.Minute, Algorithm: limiter.FixedWindow}},
	}}
	orders := limiter.Quota{Name: "binance-orders", Group: "binance-ip1", Limits: []limiter.NamedLimit{
		{Name: "orders", Limit: limiter.Limit{Rate: 1, Period: 10 * time.Second, Algorithm: limiter.FixedWindow}},
	}}
	order := func(account string) limiter.Result {
		r, err := lim.Allow(ctx,
			limiter.Charge{Quota: ip, Cost: limiter.Cost{"weight": 1}},
			limiter.Charge{Quota: orders.For(account), Cost: limiter.Cost{"orders": 1}})
		if err != nil {
			panic(err)
		}
		return r
	}
	fmt.Println(order("alice").Allowed)
	r := order("alice") // alice's second order in 10 s: refused, and no weight taken
	fmt.Println(r.Allowed, r.DeniedQuota, r.DeniedBy)
	r = order("bob") // bob has his own orders, and shares the IP's weight
	fmt.Println(r.Allowed, r.Limits[0].Quota, r.Limits[0].Remaining)
	// Output:
	// true
	// false binance-orders orders
	// true binance-ip 5998
}
