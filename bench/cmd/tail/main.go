// Command tail runs each contender open loop at a fixed rate (20 000
// decisions/s for 10 s by default) against a redis-server it starts, and
// reports p50, p99 and p99.9 latency per contender.
//
//	go run ./cmd/tail -rate 20000 -duration 10s -json tail.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redquota/redquota/bench"
)

func main() {
	rate := flag.Int("rate", 20000, "decisions per second")
	dur := flag.Duration("duration", 10*time.Second, "how long each contender runs")
	workers := flag.Int("workers", bench.Goroutines, "goroutines making decisions")
	libs := flag.String("libs", "ping,evalsha,redquota,redquota-coalesce,redquota-leased,redis_rate,ulule,throttled,xrate", "contenders, comma-separated")
	out := flag.String("json", "", "also write the results as JSON to this file")
	flag.Parse()

	srv, err := bench.StartServer()
	if err != nil {
		log.Fatalf("redis-server: %v", err)
	}
	defer srv.Close()
	env := bench.NewEnv(srv.Addr())
	defer env.Close()

	single, err := bench.Single(env)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	const key = "hot"
	var res []bench.TailResult
	for _, c := range append(bench.Floors(env), single...) {
		if !slices.Contains(strings.Split(*libs, ","), c.Name) {
			continue
		}
		if c.Prepare != nil {
			if err := c.Prepare(ctx, []string{key}); err != nil {
				log.Fatalf("%s: %v", c.Name, err)
			}
		}
		for range 1000 { // warm up: scripts loaded, connections open
			if err := c.Decide(ctx, key); err != nil {
				log.Fatalf("%s: %v", c.Name, err)
			}
		}
		r := bench.FixedRate(ctx, c, key, *rate, *dur, *workers)
		res = append(res, r)
		fmt.Fprintf(os.Stderr, "%-16s achieved %8.0f/s  p50 %7.1fµs  p99 %8.1fµs  p99.9 %8.1fµs  (from schedule p99 %8.1fµs)  errors %d dropped %d\n",
			r.Lib, r.Achieved, r.P50, r.P99, r.P999, r.SchedP99, r.Errors, r.Dropped)
	}
	if *out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
