package middleware_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// An exchange client whose every process shares one weight budget in Redis,
// learns the exchange's own count from its usage header, and pauses the whole
// fleet on a 429.
func Example() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	mr.SetTime(time.Date(2025, 1, 15, 12, 0, 30, 0, time.UTC)) // a fixed clock, for fixed output
	lim := limiter.New(redis.NewClient(&redis.Options{Addr: mr.Addr()}), limiter.Options{})

	// A stand-in exchange: it has counted 40 weight this minute (ours and
	// others'), and rate limits the order endpoint.
	exchange := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-MBX-USED-WEIGHT-1M", "40")
		if r.URL.Path == "/api/v3/order" {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	defer exchange.Close()

	binance := limiter.Quota{Name: "binance", Limits: []limiter.NamedLimit{
		{Name: "weight", Limit: limiter.Limit{Rate: 6000, Period: time.Minute, Burst: 6000, Algorithm: limiter.FixedWindow}},
	}}
	tr, err := middleware.NewTransport(nil, lim, middleware.Options{}, middleware.Rule{
		PathPrefix: "/api/",
		Quota:      binance,
		Cost:       limiter.Cost{"weight": 2},
		Usage:      []middleware.UsageParser{exchanges.BinanceUsage(map[string]string{"1m": "weight"}, nil)},
	})
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: tr}

	resp, _ := client.Get(exchange.URL + "/api/v3/ticker/price")
	resp.Body.Close()
	res, _ := lim.Allow(context.Background(), limiter.Charge{Quota: binance, Cost: limiter.Cost{"weight": 1}})
	fmt.Println(resp.StatusCode, "weight left:", res.Remaining)

	resp, _ = client.Post(exchange.URL+"/api/v3/order", "application/json", nil)
	resp.Body.Close()
	res, _ = lim.Allow(context.Background(), limiter.Charge{Quota: binance, Cost: limiter.Cost{"weight": 1}})
	fmt.Println(resp.StatusCode, "allowed:", res.Allowed, "denied by", res.DeniedBy, "for", res.RetryAfter)
	// Output:
	// 200 weight left: 5959
	// 429 allowed: false denied by (hold) for 30s
}
