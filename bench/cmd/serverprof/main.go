// Command serverprof shows where each Redis contender's server time goes: it
// makes n sequential decisions on one hot key against a redis-server it
// starts, then reports INFO commandstats per decision — the script command
// and every command the script ran inside it.
//
//	go run ./cmd/serverprof -n 5000 -json serverprof.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/redquota/redquota/bench"
)

// Row is one command's share of one contender's decisions.
type Row struct {
	Case     string  `json:"case"` // "single" or "quota3"
	Lib      string  `json:"lib"`
	Command  string  `json:"command"`
	Calls    float64 `json:"calls_per_decision"`
	Usec     float64 `json:"usec_per_decision"`
	TopLevel bool    `json:"top_level"` // sent by the client (else run inside a script)
}

func main() {
	n := flag.Int("n", 5000, "decisions per contender")
	out := flag.String("json", "", "also write the rows as JSON to this file")
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
	quota, err := bench.QuotaContenders(env)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	var rows []Row
	for _, set := range []struct {
		name string
		cs   []bench.Contender
	}{{"single", single}, {"quota3", quota}} {
		for _, c := range set.cs {
			if len(c.Commands) == 0 {
				continue
			}
			if c.Prepare != nil {
				if err := c.Prepare(ctx, []string{"hot"}); err != nil {
					log.Fatal(err)
				}
			}
			if err := c.Decide(ctx, "hot"); err != nil {
				log.Fatalf("%s: %v", c.Name, err)
			}
			if err := bench.ResetStats(ctx, env.Client); err != nil {
				log.Fatal(err)
			}
			for range *n {
				if err := c.Decide(ctx, "hot"); err != nil {
					log.Fatalf("%s: %v", c.Name, err)
				}
			}
			st, err := bench.CommandStats(ctx, env.Client)
			if err != nil {
				log.Fatal(err)
			}
			var names []string
			for name := range st {
				if name == "info" || name == "hello" || strings.HasPrefix(name, "config") || strings.HasPrefix(name, "client") {
					continue
				}
				names = append(names, name)
			}
			sort.Slice(names, func(i, j int) bool { return st[names[i]].Usec > st[names[j]].Usec })
			for _, name := range names {
				r := Row{Case: set.name, Lib: c.Name, Command: name,
					Calls:    float64(st[name].Calls) / float64(*n),
					Usec:     float64(st[name].Usec) / float64(*n),
					TopLevel: slices.Contains(c.Commands, name)}
				rows = append(rows, r)
				fmt.Fprintf(os.Stderr, "%-7s %-16s %-12s %5.2f calls %7.2f µs per decision\n", r.Case, r.Lib, r.Command, r.Calls, r.Usec)
			}
		}
	}
	if *out != "" {
		b, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
