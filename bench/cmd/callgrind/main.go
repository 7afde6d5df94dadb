// Command callgrind counts the instructions redis-server executes per
// decision for each Redis contender, with redis-server running under
// valgrind's callgrind. Instruction counts are repeatable on a noisy shared
// machine where wall-clock µs are not: the same binary and inputs give the
// same count whatever else the machine is doing.
//
//	go run ./cmd/callgrind -n 2000 -json results/callgrind.json
//
// Each contender makes one decision (to load its script), then the counters
// are dumped and n more decisions are counted on one hot key.
//
// The floor quoted in BENCHMARKS.md was measured the same way with two probe
// scripts (3 keys, 7 arguments, like redquota's single-limit call):
//
//	-- empty: about 32 000 instructions per call on Redis 7.0
//	return {1, 0, 0, 0, 5, 1000, 0}
//
//	-- the least a GCRA with Redis's clock can do: about 71 000
//	local tm = redis.call('TIME')
//	local v = redis.call('MGET', KEYS[1], KEYS[3])
//	local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
//	local tat = tonumber(v[2] or '0')
//	if tat < now then tat = now end
//	redis.call('SET', KEYS[3], string.format('%d', tat + tonumber(ARGV[6])), 'PX', 1)
//	return {1, 0, 0, 0, 5, 1000, 0}
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/redquota/redquota/bench"
)

// Row is one contender's server instructions per decision.
type Row struct {
	Case   string  `json:"case"`
	Lib    string  `json:"lib"`
	Instrs float64 `json:"instructions_per_decision"`
}

func main() {
	n := flag.Int("n", 2000, "decisions per contender")
	out := flag.String("json", "", "write the rows as JSON to this file")
	flag.Parse()
	if _, err := exec.LookPath("valgrind"); err != nil {
		log.Fatal("valgrind not found (Debian package valgrind)")
	}
	dir, err := os.MkdirTemp("", "redquota-callgrind-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	base := filepath.Join(dir, "cg.out")
	srv, err := bench.StartServerUnder("valgrind", "--tool=callgrind", "--callgrind-out-file="+base)
	if err != nil {
		log.Fatalf("redis-server under callgrind: %v", err)
	}
	defer srv.Close()
	env := bench.NewEnv(srv.Addr())
	defer env.Close()
	pid, err := env.Client.Do(context.Background(), "INFO", "server").Text()
	if err != nil {
		log.Fatal(err)
	}
	pid = bench.Field(pid, "process_id")

	single, err := bench.Single(env)
	if err != nil {
		log.Fatal(err)
	}
	quota, err := bench.QuotaContenders(env)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	dumps := 0
	dump := func() string {
		dumps++
		if b, err := exec.Command("callgrind_control", "-d", pid).CombinedOutput(); err != nil {
			log.Fatalf("callgrind_control: %v: %s", err, b)
		}
		return fmt.Sprintf("%s.%d", base, dumps)
	}
	var rows []Row
	for _, set := range []struct {
		name string
		cs   []bench.Contender
	}{{"single", append(bench.Floors(env), single...)}, {"quota3", quota}} {
		for _, c := range set.cs {
			if len(c.Commands) == 0 {
				continue // not a Redis contender
			}
			if c.Prepare != nil {
				if err := c.Prepare(ctx, []string{"hot"}); err != nil {
					log.Fatal(err)
				}
			}
			if err := c.Decide(ctx, "hot"); err != nil {
				log.Fatalf("%s: %v", c.Name, err)
			}
			dump() // discard the warm-up
			for range *n {
				if err := c.Decide(ctx, "hot"); err != nil {
					log.Fatalf("%s: %v", c.Name, err)
				}
			}
			b, err := os.ReadFile(dump())
			if err != nil {
				log.Fatal(err)
			}
			total, err := strconv.ParseFloat(bench.Field(string(b), "summary"), 64)
			if err != nil {
				log.Fatalf("%s: no summary in the dump", c.Name)
			}
			r := Row{Case: set.name, Lib: c.Name, Instrs: total / float64(*n)}
			rows = append(rows, r)
			fmt.Fprintf(os.Stderr, "%-7s %-16s %9.0f instructions per decision\n", r.Case, r.Lib, r.Instrs)
		}
	}
	if *out != "" {
		b, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
