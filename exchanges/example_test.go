package exchanges_test

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
)

// A Binance client whose every process shares one weight budget in Redis: an
// order book of 500 levels costs 25 of the minute's 6000 weight, one of the
// 300000 raw requests of five minutes, and no order.
func Example() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	mr.SetTime(time.Date(2025, 1, 15, 12, 0, 30, 0, time.UTC)) // a fixed clock, for fixed output
	lim := limiter.New(redis.NewClient(&redis.Options{Addr: mr.Addr()}), limiter.Options{})
	exchange := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer exchange.Close()

	p, _ := exchanges.Binance(exchanges.BinanceOptions{Hosts: []string{"127.0.0.1"}}) // the stand-in's host
	client, _ := p.Client(lim, nil)
	resp, _ := client.Get(exchange.URL + "/api/v3/depth?symbol=BTCUSDT&limit=500")
	resp.Body.Close()

	res, _ := lim.Allow(context.Background(), limiter.Charge{Quota: p.Quotas[0], Cost: limiter.Cost{"weight-1m": 1, "raw-5m": 1}})
	for _, l := range res.Limits {
		fmt.Println(l.Name, "left:", l.Remaining)
	}
	// Output:
	// weight-1m left: 5974
	// raw-5m left: 299998
}

// Binance states its limits in exchangeInfo; a preset can use them instead of
// the built-in figures.
func ExampleParseBinanceExchangeInfo() {
	doc := []byte(`{"timezone": "UTC", "rateLimits": [
		{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
		{"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
		{"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
		{"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000}]}`)
	rls, err := exchanges.ParseBinanceExchangeInfo(doc)
	if err != nil {
		fmt.Println(err)
		return
	}
	p, _ := exchanges.Binance(exchanges.BinanceOptions{RateLimits: rls})
	for _, q := range p.Quotas[:2] { // the IP's, then the accounts' (the test network's follow)
		for _, l := range q.Limits {
			fmt.Println(q.Name, l.Name, l.Limit)
		}
	}

	_, err = exchanges.ParseBinanceExchangeInfo([]byte(`{"rateLimits": [{"rateLimitType": "ORDERS", "interval": "WEEK", "intervalNum": 1, "limit": 5}]}`))
	fmt.Println(err)
	// Output:
	// binance weight-1m 6000 req/m (fixed)
	// binance raw-5m 61000 req/5m0s (fixed)
	// binance-orders orders-10s 100 req/10s (fixed)
	// binance-orders orders-1d 200000 req/day (fixed)
	// exchanges: invalid rate limits: rateLimits[0].interval: unknown interval: "WEEK"
}
