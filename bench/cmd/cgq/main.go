// Command cgq counts redis-server's instructions per script call (callgrind)
// of the decisions BENCHMARKS.md has rows for: Allow, AllowQuota(3), Wait,
// WaitQuota(3) and a lease call (a new Leaser's first Allow), single key and
// 3-limit quota. Issue 18 used it to compare the per-mode scripts with the old
// quota.lua (953e914, measured with an ops file written against that API).
//
//	cd bench && go run ./cmd/cgq -n 1000        # needs valgrind
//
// The "before" column (953e914): in a worktree of that commit, copy main.go
// here and ops_953e914.go.txt as ops.go (its API) into bench/cmd/cgq, then
// run the same command.
//
// Per op: CONFIG RESETSTAT, callgrind dump, n decisions, dump; instructions
// (less the idle server's over the same time) ÷ eval+evalsha+fcall calls.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redquota/redquota/bench"
	"github.com/redquota/redquota/limiter"
)

var probeClient *redis.Client

type op struct {
	name string
	do   func(ctx context.Context) error
}

var q3 = []limiter.NamedLimit{
	{Name: "weight", Limit: limiter.Limit{Rate: 1e9, Period: time.Minute, Algorithm: limiter.FixedWindow}},
	{Name: "orders", Limit: limiter.Limit{Rate: 1e9, Period: 10 * time.Second, Algorithm: limiter.SlidingWindowCounter}},
	{Name: "daily", Limit: limiter.Limit{Rate: 1e9, Period: 24 * time.Hour, Burst: 1e9}},
}
var cost3 = limiter.Cost{"weight": 5, "orders": 1, "daily": 1}
var gcra = limiter.PerSecond(1_000_000)
var fw = limiter.Limit{Rate: 1_000_000_000, Period: time.Second, Algorithm: limiter.FixedWindow}

func calls(c *redis.Client) float64 {
	info := c.Info(context.Background(), "commandstats").Val()
	var n float64
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range []string{"cmdstat_eval:", "cmdstat_evalsha:", "cmdstat_fcall:"} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
				for _, f := range strings.Split(rest, ",") {
					k, v, _ := strings.Cut(f, "=")
					if k == "calls" {
						x, _ := strconv.ParseFloat(v, 64)
						n += x
					}
				}
			}
		}
	}
	return n
}

func main() {
	n := flag.Int("n", 500, "decisions per op")
	only := flag.String("only", "", "ops whose name contains this")
	flag.Parse()
	cg, err := bench.StartCallgrind()
	if err != nil {
		log.Fatal(err)
	}
	defer cg.Close()
	c := redis.NewClient(&redis.Options{Addr: cg.Addr(), MaxRetries: -1})
	probeClient = c
	lim := limiter.New(c, limiter.Options{Prefix: "cg", Timeout: time.Minute})
	ctx := context.Background()
	dump := func() float64 {
		x, err := cg.Dump()
		if err != nil {
			log.Fatal(err)
		}
		return x
	}
	all := ops(lim)
	for _, o := range all {
		if !strings.Contains(o.name, *only) {
			continue
		}
		if err := o.do(ctx); err != nil {
			log.Fatalf("%s: %v", o.name, err)
		}
	}
	idle, err := cg.IdleRate(2 * time.Second)
	if err != nil {
		log.Fatal(err)
	}
	for _, o := range all {
		if !strings.Contains(o.name, *only) {
			continue
		}
		c.ConfigResetStat(ctx)
		dump()
		t0 := time.Now()
		for range *n {
			if err := o.do(ctx); err != nil {
				log.Fatalf("%s: %v", o.name, err)
			}
		}
		total := dump()
		k := calls(c)
		fmt.Printf("%-22s %9.0f instructions per script call (%.0f calls, %d ops)\n", o.name, (total-idle*time.Since(t0).Seconds())/k, k, *n)
	}
}
