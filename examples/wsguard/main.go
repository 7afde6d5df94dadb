// WebSocket guard: a fleet of processes keeps its WebSocket connections inside
// an exchange's connection limit, shared through Redis, through a reconnect
// storm and a ban.
//
//	go run ./examples/wsguard [-processes 4] [-conns 15]
//
// It talks to a simulated exchange on a local port that counts connection
// attempts in clock-aligned 1 s windows (limit 20, as Binance counts 300 per
// 5 minutes), then drops every connection with close code 1008 and refuses
// connections for 500 ms. Each process reconnects at once; the guard spreads
// the storm over the windows and makes no attempt during the hold the 1008
// placed. It runs on an embedded miniredis unless REDIS_URL is set.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/redquota/redquota/examples/internal/exampleenv"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/wsguard"
	"github.com/redquota/redquota/wsguard/wscoder"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h: flag has printed the usage
		}
		fmt.Fprintln(os.Stderr, "wsguard:", err)
		os.Exit(1)
	}
}

const (
	connLimit = 20          // attempts per window, per IP
	window    = time.Second // the exchange's clock-aligned window
	ban       = 500 * time.Millisecond
)

// exchange counts connection attempts per window and the attempts made during
// its ban; drop closes every connection with 1008 and starts the ban.
type exchange struct {
	mu       sync.Mutex
	attempts map[int64]int
	banned   int
	banUntil time.Time
	open     []*websocket.Conn
	accepted chan struct{} // one per connection accepted
	srv      *httptest.Server
}

func (e *exchange) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	now := time.Now()
	e.attempts[now.UnixNano()/int64(window)]++
	refused := now.Before(e.banUntil)
	if refused {
		e.banned++
	}
	e.mu.Unlock()
	if refused {
		http.Error(w, "banned", http.StatusTeapot)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	e.mu.Lock()
	e.open = append(e.open, c)
	e.mu.Unlock()
	select {
	case e.accepted <- struct{}{}:
	default:
	}
	for { // answer subscriptions until the connection ends
		if _, _, err := c.Read(r.Context()); err != nil {
			return
		}
		if err := c.Write(r.Context(), websocket.MessageText, []byte(`{"result":null,"id":1}`)); err != nil {
			return
		}
	}
}

func (e *exchange) drop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.banUntil = time.Now().Add(ban)
	for _, c := range e.open {
		_ = c.Close(websocket.StatusPolicyViolation, "too many messages")
	}
	e.open = nil
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("wsguard", flag.ContinueOnError)
	procs := fs.Int("processes", 4, "processes (each its own Redis client, limiter and guard)")
	conns := fs.Int("conns", 15, "connections per process")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *procs < 1 || *conns < 1 {
		return errors.New("need -processes ≥ 1 and -conns ≥ 1")
	}
	// Cancelled on return: a run that ends early ends its connections too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	env, err := exampleenv.Start(ctx)
	if err != nil {
		return err
	}
	defer env.Close()
	fmt.Fprintln(stdout, "redis:", env)
	ex := &exchange{attempts: map[int64]int{}, accepted: make(chan struct{}, 2**procs**conns)}
	ex.srv = httptest.NewServer(ex)
	defer ex.srv.Close()
	url := "ws" + strings.TrimPrefix(ex.srv.URL, "http") + "/ws"
	prefix := exampleenv.Prefix("wsguard")

	// The whole guard: a connection quota every process shares, a local
	// message limit and a stream cap per connection, and a close 1008 read as
	// a hold on the connection quota (exchanges.BinanceWebSocket builds these
	// options with Binance's figures).
	// Guard: an attempt granted within 400 ms of its window's end is booked
	// into the next window, so that a slow dial cannot land in the next one.
	conn := limiter.Quota{Name: "exchange-connections", Guard: 400 * time.Millisecond, Limits: []limiter.NamedLimit{
		{Name: "attempts", Limit: limiter.Limit{Rate: connLimit, Period: window, Algorithm: limiter.FixedWindow}},
	}}
	opts := wsguard.Options{
		Connect:      []limiter.Charge{{Quota: conn, Cost: limiter.Cost{"attempts": 1}}},
		MessageRate:  4,
		MaxStreams:   1024,
		Jitter:       200 * time.Millisecond,
		FallbackHold: ban,
		Refusals: func(s wsguard.Signal) []wsguard.Refusal {
			if s.Close != nil && s.Close.Code == int(websocket.StatusPolicyViolation) {
				return []wsguard.Refusal{{Quota: conn.Name}}
			}
			return nil
		},
	}

	var opened, done sync.WaitGroup
	dropped := make(chan struct{})
	errs := make(chan error, *procs**conns)
	for p := range *procs {
		rdb := env.NewLimiterClient()
		defer rdb.Close()
		g, err := wsguard.New(limiter.New(rdb, limiter.Options{Prefix: prefix}), opts)
		if err != nil {
			return err
		}
		for range *conns {
			opened.Add(1)
			done.Go(func() {
				c, err := g.Dial(ctx, wscoder.Dial(url, nil))
				opened.Done()
				if err != nil {
					errs <- fmt.Errorf("process %d: %w", p, err)
					return
				}
				sub := []byte(`{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}`)
				if err := c.Subscribe(ctx, sub, 1); err != nil {
					errs <- err
					return
				}
				for { // read until the exchange drops us, then reconnect once
					if _, err := c.Read(ctx); err != nil {
						break
					}
				}
				select {
				case <-dropped:
				case <-ctx.Done():
					return
				}
				if err := c.Redial(ctx); err != nil {
					errs <- fmt.Errorf("process %d: %w", p, err)
					return
				}
				_ = c.Close(int(websocket.StatusNormalClosure), "")
			})
		}
	}
	opened.Wait()
	// The client's Dial returns before the exchange has registered the
	// connection: wait for all of them, so that drop closes every one. A
	// connection that failed is never accepted: its error ends the wait.
	for range *procs * *conns {
		select {
		case <-ex.accepted:
		case err := <-errs:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fmt.Fprintf(stdout, "%d connections open; the exchange drops them all (1008) and bans connecting for %v\n", *procs**conns, ban)
	ex.drop()
	close(dropped)
	done.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ws := slices.Sorted(func(yield func(int64) bool) {
		for w := range ex.attempts {
			if !yield(w) {
				return
			}
		}
	})
	for _, w := range ws {
		fmt.Fprintf(stdout, "window %s attempts %d/%d\n", time.Unix(0, w*int64(window)).Format("15:04:05"), ex.attempts[w], connLimit)
	}
	fmt.Fprintf(stdout, "attempts during the ban: %d\n", ex.banned)
	if ex.banned > 0 {
		return errors.New("a connection was attempted during the ban")
	}
	return nil
}
