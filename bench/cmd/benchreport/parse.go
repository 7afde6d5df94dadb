package main

import (
	"bufio"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
)

// results holds every sample of one raw `go test -bench` output, by
// package, benchmark name (without the -GOMAXPROCS suffix) and unit, in run
// order: sample i of two benchmarks comes from the same round of -count.
type results struct {
	order []string                        // pkg + " " + name, first appearance
	vals  map[string]map[string][]float64 // pkg + " " + name → unit → samples
}

// procSuffix is the -GOMAXPROCS go test appends to every name (none when 1):
// the report runs on the machine that ran the benchmarks.
var procSuffix = "-" + strconv.Itoa(runtime.GOMAXPROCS(0))

func parse(path string) (*results, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &results{vals: map[string]map[string][]float64{}}
	pkg := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := strings.TrimSuffix(strings.TrimPrefix(f[0], "Benchmark"), procSuffix)
		id := pkg + " " + name
		m := r.vals[id]
		if m == nil {
			m = map[string][]float64{}
			r.vals[id] = m
			r.order = append(r.order, id)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			m[f[i+1]] = append(m[f[i+1]], v)
		}
	}
	return r, sc.Err()
}

// get returns the samples of the benchmark whose name is name in any package
// whose path ends in pkgSuffix.
func (r *results) get(pkgSuffix, name, unit string) []float64 {
	if r == nil {
		return nil
	}
	for _, id := range r.order {
		p, n, _ := strings.Cut(id, " ")
		if n == name && strings.HasSuffix(p, pkgSuffix) {
			return r.vals[id][unit]
		}
	}
	return nil
}

// libs are the lib= values of the benchmarks named group + "/lib=…", in order.
func (r *results) libs(group string) []string {
	var out []string
	for _, id := range r.order {
		_, n, _ := strings.Cut(id, " ")
		if lib, ok := strings.CutPrefix(n, group+"/lib="); ok {
			out = append(out, lib)
		}
	}
	return out
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// roundRatios pairs sample i of a with sample i of b (the same -count round).
func roundRatios(a, b []float64) (lo, hi float64, ok bool) {
	n := min(len(a), len(b))
	for i := range n {
		if b[i] == 0 {
			return 0, 0, false
		}
		r := a[i] / b[i]
		if i == 0 || r < lo {
			lo = r
		}
		if i == 0 || r > hi {
			hi = r
		}
	}
	return lo, hi, n > 0
}
