package wsguard_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/wsguard"
)

// exchangeSocket stands in for Binance's WebSocket API: it answers every
// request with a 429 whose retryAfter is 3 s after its serverTime.
type exchangeSocket struct{ answers chan []byte }

func (s *exchangeSocket) Write(_ context.Context, msg []byte) error {
	s.answers <- []byte(`{"id":"1","status":429,"error":{"code":-1003,"msg":"Too much request weight used",` +
		`"data":{"serverTime":1736942430000,"retryAfter":1736942433000}}}`)
	return nil
}

func (s *exchangeSocket) Read(ctx context.Context) ([]byte, error) {
	select {
	case m := <-s.answers:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *exchangeSocket) Close(int, string) error { return nil }

// A WebSocket API connection to Binance: its request is charged its REST
// weight to the quota REST requests use, and the exchange's 429 holds that
// quota until its retryAfter, for REST and WebSocket alike, in every process
// sharing the Redis.
func Example() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	mr.SetTime(time.Date(2025, 1, 15, 12, 0, 30, 0, time.UTC)) // a fixed clock, for fixed output
	lim := limiter.New(redis.NewClient(&redis.Options{Addr: mr.Addr()}), limiter.Options{})
	ctx := context.Background()

	api, _, _ := exchanges.BinanceWebSocket(exchanges.BinanceOptions{})
	g, err := wsguard.New(lim, api)
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := g.Dial(ctx, func(context.Context) (wsguard.Socket, error) {
		return &exchangeSocket{answers: make(chan []byte, 1)}, nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := c.Send(ctx, []byte(`{"id":"1","method":"depth","params":{"symbol":"BTCUSDT","limit":500}}`)); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := c.Read(ctx); err != nil { // the 429
		fmt.Println(err)
		return
	}

	// A REST request on the same IP, from any process, is held too.
	rest, _ := exchanges.Binance(exchanges.BinanceOptions{})
	res, _ := lim.Allow(ctx, limiter.Charge{Quota: rest.Quotas[0], Cost: limiter.Cost{"weight-1m": 1}})
	fmt.Println("allowed:", res.Allowed, "denied by:", res.DeniedBy, "for", res.RetryAfter)
	// Output:
	// allowed: false denied by: (hold) for 3s
}
