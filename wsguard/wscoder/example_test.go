package wscoder_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/wsguard"
	"github.com/redquota/redquota/wsguard/wscoder"
)

// Guarding a Binance stream connection: the attempt is charged to the
// fleet's connection quota, messages are limited per connection and a
// subscription past 1024 streams is refused before it is sent.
func Example() {
	mr, _ := miniredis.Run() // your Redis; every process of the fleet shares it
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	lim := limiter.New(rdb, limiter.Options{})

	// A stand-in for wss://stream.binance.com:9443/ws that answers each message.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			if _, _, err := c.Read(r.Context()); err != nil {
				return
			}
			_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"result":null,"id":1}`))
		}
	}))
	defer srv.Close()

	_, streams, err := exchanges.BinanceWebSocket(exchanges.BinanceOptions{})
	if err != nil {
		panic(err)
	}
	g, err := wsguard.New(lim, streams)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	c, err := g.Dial(ctx, wscoder.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil))
	if err != nil {
		panic(err)
	}
	defer c.Close(int(websocket.StatusNormalClosure), "")

	if err := c.Subscribe(ctx, []byte(`{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}`), 1); err != nil {
		panic(err)
	}
	answer, _ := c.Read(ctx)
	fmt.Println(string(answer))

	// 1 + 1024 streams would pass MaxStreams: refused, nothing sent.
	err = c.Subscribe(ctx, []byte(`{"method":"SUBSCRIBE","params":[...],"id":2}`), 1024)
	fmt.Println(errors.Is(err, wsguard.ErrInvalid))
	// Output:
	// {"result":null,"id":1}
	// true
}
