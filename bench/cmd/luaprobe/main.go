// Command luaprobe counts redis-server's instructions per EVALSHA of small
// probe scripts, with redis-server under callgrind: what a key, an argument,
// a reply value, a redis.call, a number conversion or a Lua function
// definition costs a script call. BENCHMARKS.md's "What a script call costs"
// is its output.
//
//	cd bench && go run ./cmd/luaprobe        # needs valgrind
//
// Each *.lua file in -dir (cmd/luaprobe/probes), whose first line is
// "-- keys: k1 k2 … ; args: a1 a2 …", is called once (its reply printed),
// then -n times between two counts; the idle server's instructions over the
// same time are subtracted.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/bench"
)

type probe struct {
	name, sha string
	keys      []string
	args      []any
}

func main() {
	n := flag.Int("n", 1000, "calls per probe")
	dir := flag.String("dir", "cmd/luaprobe/probes", "directory of the probe scripts")
	flag.Parse()
	files, _ := filepath.Glob(filepath.Join(*dir, "*.lua"))
	sort.Strings(files)
	cg, err := bench.StartCallgrind()
	if err != nil {
		log.Fatal(err)
	}
	defer cg.Close()
	c := redis.NewClient(&redis.Options{Addr: cg.Addr(), MaxRetries: -1})
	defer c.Close()
	ctx := context.Background()
	var ps []probe
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			log.Fatal(err)
		}
		src := string(b)
		first, _, _ := strings.Cut(src, "\n")
		ks, as, _ := strings.Cut(strings.TrimPrefix(first, "-- "), ";")
		p := probe{name: filepath.Base(f), keys: strings.Fields(strings.TrimPrefix(strings.TrimSpace(ks), "keys:"))}
		for _, a := range strings.Fields(strings.TrimPrefix(strings.TrimSpace(as), "args:")) {
			p.args = append(p.args, a)
		}
		if p.sha, err = c.ScriptLoad(ctx, src).Result(); err != nil {
			log.Fatalf("%s: %v", f, err)
		}
		r, err := c.EvalSha(ctx, p.sha, p.keys, p.args...).Result()
		if err != nil && err != redis.Nil {
			log.Fatalf("%s: %v", f, err)
		}
		if s, ok := r.(string); ok {
			r = fmt.Sprintf("%q", s) // a packed reply is binary
		}
		fmt.Printf("%-28s reply %v\n", p.name, r)
		ps = append(ps, p)
	}
	idle, err := cg.IdleRate(2 * time.Second)
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range ps {
		if _, err := cg.Dump(); err != nil {
			log.Fatal(err)
		}
		t0 := time.Now()
		for range *n {
			c.EvalSha(ctx, p.sha, p.keys, p.args...)
		}
		total, err := cg.Dump()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-28s %9.0f\n", p.name, (total-idle*time.Since(t0).Seconds())/float64(*n))
	}
}
