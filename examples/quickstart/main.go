// Quickstart: one limit shared through Redis, checked with Allow and waited
// on with Wait.
//
//	go run ./examples/quickstart
//
// It runs on an embedded miniredis unless REDIS_URL is set.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/redquota/redquota/examples/internal/exampleenv"
	"github.com/redquota/redquota/limiter"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h: flag has printed the usage
		}
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	rate := fs.Int("rate", 5, "events per second the limit allows")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate < 1 {
		return fmt.Errorf("-rate must be at least 1, not %d", *rate)
	}
	env, err := exampleenv.Start(ctx)
	if err != nil {
		return err
	}
	defer env.Close()
	rdb := env.NewLimiterClient()
	defer rdb.Close()
	fmt.Fprintln(stdout, "redis:", env)

	// --- the part to copy -------------------------------------------------
	lim := limiter.New(rdb, limiter.Options{Prefix: exampleenv.Prefix("quickstart")})
	limit := limiter.PerSecond(*rate) // GCRA: a smooth bucket of `rate` tokens
	fmt.Fprintln(stdout, "limit:", limit)

	// Allow takes a token now or says how long until one fits.
	for i := 1; i <= *rate+2; i++ {
		res, err := lim.Allow(ctx, limiter.Key("user:42", limit).Take(1))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "allow #%d: allowed=%t remaining=%d retry-after=%v\n",
			i, res.Allowed, res.Remaining, res.RetryAfter.Round(time.Millisecond))
	}

	// Wait books the next free slot in Redis and sleeps exactly until it.
	start := time.Now()
	for i := 1; i <= 3; i++ {
		if err := lim.Wait(ctx, limiter.Key("user:42", limit).Take(1)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wait #%d: went after %v\n", i, time.Since(start).Round(10*time.Millisecond))
	}

	// Wait refuses at once, charging nothing, when its turn would come after
	// the context's deadline (the next token is about 1/rate away).
	short, cancel := context.WithTimeout(ctx, time.Second/time.Duration(4**rate))
	defer cancel()
	err = lim.Wait(short, limiter.Key("user:42", limit).Take(1))
	fmt.Fprintln(stdout, "wait with a short deadline: refused at once:", errors.Is(err, limiter.ErrWouldExceedDeadline))
	// ----------------------------------------------------------------------
	return nil
}
