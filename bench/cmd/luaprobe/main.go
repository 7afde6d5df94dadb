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
// then -n times between two callgrind dumps; the idle server's instructions
// over the same time are subtracted.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redquota/redquota/bench"
)

func field(s, k string) string {
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), k+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func main() {
	n := flag.Int("n", 1000, "calls per probe")
	dir := flag.String("dir", "cmd/luaprobe/probes", "directory of the probe scripts")
	flag.Parse()
	files, _ := filepath.Glob(filepath.Join(*dir, "*.lua"))
	sort.Strings(files)
	tmp, _ := os.MkdirTemp("", "probe-")
	defer os.RemoveAll(tmp)
	base := filepath.Join(tmp, "cg.out")
	srv, err := bench.StartServerUnder("valgrind", "--tool=callgrind", "--callgrind-out-file="+base)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	ctx := context.Background()
	pid := field(c.Info(ctx, "server").Val(), "process_id")
	dumps := 0
	dump := func() float64 {
		dumps++
		if b, err := exec.Command("callgrind_control", "-d", pid).CombinedOutput(); err != nil {
			log.Fatalf("callgrind_control: %v %s", err, b)
		}
		b, err := os.ReadFile(fmt.Sprintf("%s.%d", base, dumps))
		if err != nil {
			log.Fatal(err)
		}
		x, _ := strconv.ParseFloat(field(string(b), "summary"), 64)
		return x
	}
	type probe struct {
		name string
		sha  string
		keys []string
		args []any
	}
	var ps []probe
	for _, f := range files {
		b, _ := os.ReadFile(f)
		src := string(b)
		first, _, _ := strings.Cut(src, "\n")
		spec := strings.TrimPrefix(first, "-- ")
		ks, as, _ := strings.Cut(spec, ";")
		p := probe{name: filepath.Base(f)}
		p.keys = strings.Fields(strings.TrimPrefix(strings.TrimSpace(ks), "keys:"))
		for _, a := range strings.Fields(strings.TrimPrefix(strings.TrimSpace(as), "args:")) {
			p.args = append(p.args, a)
		}
		sha, err := c.ScriptLoad(ctx, src).Result()
		if err != nil {
			log.Fatalf("%s: %v", f, err)
		}
		p.sha = sha
		if r, err := c.EvalSha(ctx, sha, p.keys, p.args...).Result(); err != nil && err != redis.Nil {
			log.Fatalf("%s: %v", f, err)
		} else {
			fmt.Printf("%-28s reply %v\n", p.name, r)
		}
		ps = append(ps, p)
	}
	dump()
	t0 := time.Now()
	time.Sleep(2 * time.Second)
	idle := dump() / time.Since(t0).Seconds()
	for _, p := range ps {
		dump()
		t0 := time.Now()
		for range *n {
			c.EvalSha(ctx, p.sha, p.keys, p.args...)
		}
		total := dump()
		fmt.Printf("%-28s %9.0f\n", p.name, (total-idle*time.Since(t0).Seconds())/float64(*n))
	}
}
