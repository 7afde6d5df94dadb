package main

import (
	"bytes"
	"fmt"
	"math"
	"path/filepath"
	"strings"
)

// The near cache's section (issue 24) and GetMany against one GET per round
// (issue 19's cache target), from cache.txt and market.txt (every benchmark
// once per round) and near.txt (the fixed-size staleness and churn runs,
// once per round; .ci/bench's near_round).

// roundCheck is one target judged on its per-round values: the median of
// the rounds against the bound, and whether every round met it.
type roundCheck struct {
	text, measured string
	rounds         []float64
	bound          float64
	atLeast        bool
	format         func(float64) string
}

func (r roundCheck) row() string {
	if len(r.rounds) == 0 {
		return fmt.Sprintf("| %s | not measured | | – |\n", r.text)
	}
	ok := func(v float64) bool {
		if r.atLeast {
			return v >= r.bound
		}
		return v <= r.bound
	}
	every := true
	for _, v := range r.rounds {
		every = every && ok(v)
	}
	verdict := "met in every round"
	switch {
	case !ok(median(r.rounds)):
		verdict = "**missed**"
	case !every:
		verdict = "met (not in every round)"
	}
	lo, hi := minMax(r.rounds)
	measured := r.measured
	if measured == "" {
		measured = r.format(median(r.rounds))
	}
	return fmt.Sprintf("| %s | %s | %s–%s | %s |\n", r.text, measured, r.format(lo), r.format(hi), verdict)
}

// ratios is a[i]/b[i] for every round both have.
func ratios(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i] != 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

func fmtX(v float64) string   { return fmtNum(v) + "×" }
func fmtUs(v float64) string  { return fmtDur(v * 1e3) }
func fmtAny(v float64) string { return fmtNum(v) }

func writeNear(w *bytes.Buffer, c config, inpkg map[string]*results) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	cache, market := inpkg["cache"], inpkg["market"]
	near, _ := parse(filepath.Join(c.dir, "near.txt"))
	cs := func(name, unit string) []float64 { return cache.get("/cache", name, unit) }
	ms := func(name, unit string) []float64 { return market.get("/market", name, unit) }
	ns := func(name, unit string) []float64 { return near.get("/cache", name, unit) }

	p("## Near cache (issue 24)\n\n")
	if cache == nil {
		p("Not run (no cache.txt).\n\n")
	} else {
		p("The near cache's targets, from the rounds of this run: `BenchmarkNearGet` and `BenchmarkGetTickerNear` in the in-package rounds (`-benchtime %s`), "+
			"`BenchmarkNearStaleness` (10 000 writes) and `BenchmarkNearChurn` (50 000 reads) once per round into `near.txt`. "+
			"Each target is judged on the median of the rounds; \"per round\" is the lowest and highest round.\n\n", c.inpkgTime)
		p("| target | measured (median of rounds) | per round | verdict |\n|---|---|---|---|\n")
		tickRedis, tickNear := ms("GetTickerNear/redis", "ns/op"), ms("GetTickerNear/near", "ns/op")
		checks := []roundCheck{
			{text: "near hit median ≤ 1 µs, raw value (`*string`)", rounds: cs("NearGet/near/raw", "ns/op"), bound: 1000, format: fmtDur},
			{text: "… a ~200-byte JSON struct", rounds: cs("NearGet/near/json", "ns/op"), bound: 1000, format: fmtDur},
			{text: "zero allocations for raw values (allocs/op)", rounds: cs("NearGet/near/raw", "allocs/op"), bound: 0, format: fmtAny},
			{text: "GetTicker through the near cache ≥ 50× faster than through Redis, same run",
				rounds: ratios(tickRedis, tickNear), bound: 50, atLeast: true, format: fmtX,
				measured: fmt.Sprintf("%s (%s / %s)", fmtX(median(tickRedis)/median(tickNear)), fmtDur(median(tickRedis)), fmtDur(median(tickNear)))},
			{text: "staleness: after A's write, B stops serving the old value within p99 ≤ 5 ms (10 000 writes per round)",
				rounds: ns("NearStaleness", "p99-us"), bound: 5000, format: fmtUs},
			{text: "memory bound under key churn: peak size / MaxBytes ≤ 1", rounds: ns("NearChurn", "peak/max"), bound: 1, format: fmtAny},
		}
		for _, t := range checks {
			p("%s", t.row())
		}
		p("\n")
		p("- **BenchmarkNearGet** (`./cache/`): `Cache.Get` of a 200-byte raw value into a `*string` and of a ~200-byte JSON struct into a fresh value, " +
			"from a Cache with a near cache (every read a near hit; the benchmark fails if one went to Redis) and from one without (`redis/…`).\n")
		p("- **BenchmarkGetTickerNear** (`./market/`): `Market.GetTicker` through a cache with a near cache against one without, same Redis, same round.\n")
		p("- **BenchmarkNearStaleness** (`./cache/`, `-benchtime 10000x`): process A (the test binary run again, a Cache on its own client) writes one key; " +
			"for each write, the time from A's write returning to the near cache of process B (the benchmark) having dropped the key on Redis's invalidation push, " +
			"both read on the wall clock the two processes share. 0 means the push was handled before A had its reply.\n")
		p("- **BenchmarkNearChurn** (`./cache/`, `-benchtime 50000x`): reads rotating over 100 000 keys of 200 bytes through a near cache of 1 MiB; " +
			"peak/max is the largest `Stats().NearBytes` seen (every 1000 reads, after the store's pending maintenance) over `MaxBytes`.\n\n")

		get := func(name string) string {
			row := func(unit string) string {
				v := cs(name, unit)
				if len(v) == 0 {
					return "–"
				}
				if unit == "ns/op" {
					return fmtDur(median(v))
				}
				return fmtNum(median(v))
			}
			return fmt.Sprintf("| %s | %s | %s | %s |\n", name, row("ns/op"), row("B/op"), row("allocs/op"))
		}
		p("| benchmark | time/op | B/op | allocs/op |\n|---|---|---|---|\n")
		for _, n := range []string{"NearGet/redis/raw", "NearGet/near/raw", "NearGet/redis/json", "NearGet/near/json"} {
			p("%s", get(n))
		}
		for _, n := range []string{"GetTickerNear/redis", "GetTickerNear/near"} {
			m := func(unit string) string {
				v := ms(n, unit)
				if len(v) == 0 {
					return "–"
				}
				if unit == "ns/op" {
					return fmtDur(median(v))
				}
				return fmtNum(median(v))
			}
			p("| %s | %s | %s | %s |\n", n, m("ns/op"), m("B/op"), m("allocs/op"))
		}
		p("\nMedians of the rounds.\n\n")

		if near == nil {
			p("Staleness and churn: not run (no near.txt).\n\n")
		} else {
			units := []string{"p50-us", "p90-us", "p99-us", "p99.9-us", "max-us"}
			p("Staleness distribution per round, µs from A's write returning (10 000 writes each):\n\n")
			p("| round | p50 | p90 | p99 | p99.9 | max |\n|---|---|---|---|---|---|\n")
			n := len(ns("NearStaleness", "p99-us"))
			for i := range n {
				cells := make([]string, len(units))
				for j, u := range units {
					v := ns("NearStaleness", u)
					cells[j] = "–"
					if i < len(v) {
						cells[j] = fmtNum(v[i])
					}
				}
				p("| %d | %s |\n", i+1, strings.Join(cells, " | "))
			}
			peak, ev := ns("NearChurn", "peak/max"), ns("NearChurn", "evictions")
			p("\nKey churn per round (1 MiB near cache, 50 000 reads over 100 000 keys):\n\n")
			p("| round | peak / MaxBytes | evictions |\n|---|---|---|\n")
			for i := range peak {
				e := math.NaN()
				if i < len(ev) {
					e = ev[i]
				}
				p("| %d | %.3f | %s |\n", i+1, peak[i], fmtNum(e))
			}
			p("\nRaw: `bench/results/near.txt`.\n\n")
		}
		p("Reproduce: `go test -run '^$' -bench 'BenchmarkNearGet$' -benchtime %s ./cache/`, `go test -run '^$' -bench 'BenchmarkGetTickerNear$' -benchtime %s ./market/`, "+
			"`go test -run '^$' -bench 'BenchmarkNearStaleness$' -benchtime 10000x ./cache/`, `go test -run '^$' -bench 'BenchmarkNearChurn$' -benchtime 50000x ./cache/`; "+
			"each once per round as `.ci/bench` runs them.\n\n", c.inpkgTime, c.inpkgTime)
	}

	writeGetManyRounds(w, cs)
}

// writeGetManyRounds is issue 19's cache target, GetMany(10) ≤ 1.3× one GET
// in every round, from BenchmarkPaired: both sides timed in turn in one loop.
func writeGetManyRounds(w *bytes.Buffer, cs func(name, unit string) []float64) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	const name = "Paired/GetMany-10"
	mean, p50 := cs(name, "y/x"), cs(name, "p50-y/x")
	y, x := cs(name, "cache-ns/op"), cs(name, "get-ns/op")
	p("## GetMany(10) against one GET, per round (issue 19)\n\n")
	if len(mean) == 0 {
		p("Not run.\n\n")
		return
	}
	p("`BenchmarkPaired/GetMany-10` (`./cache/`): `Cache.GetMany` of 10 ~200-byte JSON values into a map against one go-redis GET + `json.Unmarshal` of one, " +
		"timed in turn in one loop (alternating which goes first) so both sides share every moment of the machine's load. " +
		"**mean** is the ratio of the two sides' mean times, **median** the ratio of their median times per call: " +
		"on this shared machine a few calls of either side stall for milliseconds while a core is taken, and the mean carries those stalls where the median does not.\n\n")
	p("| target | measured (median of rounds) | per round | verdict |\n|---|---|---|---|\n")
	p("%s", roundCheck{text: "GetMany(10) ≤ 1.3× one GET + Unmarshal, median per call", rounds: p50, bound: 1.3, format: fmtX}.row())
	p("%s", roundCheck{text: "… mean per call", rounds: mean, bound: 1.3, format: fmtX}.row())
	p("\n| round | GetMany(10) mean | GET mean | mean ratio | median ratio |\n|---|---|---|---|---|\n")
	for i := range mean {
		at := func(v []float64, f func(float64) string) string {
			if i < len(v) {
				return f(v[i])
			}
			return "–"
		}
		p("| %d | %s | %s | %s | %s |\n", i+1, at(y, fmtDur), at(x, fmtDur), at(mean, fmtX), at(p50, fmtX))
	}
	p("\nReproduce: `go test -run '^$' -bench 'Paired/GetMany-10$' -benchtime 0.5s -count 6 ./cache/`\n\n")
}
