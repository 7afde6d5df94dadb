// Command plain prints issue 19's table: a plain decision (Limiter.Allow, one
// key, one GCRA limit) against redis_rate v10's Allow and a go-redis PING,
// with a go-redis client at its default options (it retries) and with one
// that never retries (MaxRetries -1), on one hot key and on 10 000 keys.
//
//	go run ./cmd/plain                 wall-clock and allocations
//	go run ./cmd/plain -callgrind      server instructions per decision
//	go run ./cmd/plain -md ../BENCHMARKS.md   also write the table into that file
//
// Wall-clock: every pass runs every contender of every case in turn
// (sequential latency over -n decisions, then parallel throughput from
// -goroutines goroutines for -par), reversing the order on odd passes, so a
// pass's redquota and redis_rate share the machine's load of that moment.
// The ratio reported is the median of the per-pass ratios, with the lowest
// and highest in brackets. Allocations are runtime.MemStats mallocs per
// sequential decision (median over passes).
//
// Callgrind: redis-server runs under valgrind --tool=callgrind; for each case
// the counters are dumped before and after -cg-n decisions, and the server's
// idle instructions over the same time (measured before each row, every
// client connected, none calling) are subtracted. Instruction counts are repeatable on a noisy
// machine where times are not.
//
// The table is written between <!-- plain:MODE --> and <!-- /plain:MODE -->
// in the -md file (appended at its end the first time).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/bench"
	"github.com/redquota/redquota/limiter"
)

var (
	passes     = flag.Int("passes", 11, "interleaved passes (wall-clock mode)")
	seqN       = flag.Int("n", 2000, "sequential decisions per contender per pass")
	parDur     = flag.Duration("par", 400*time.Millisecond, "parallel run per contender per pass")
	goroutines = flag.Int("goroutines", 32, "goroutines of the parallel run")
	cg         = flag.Bool("callgrind", false, "count server instructions per decision under valgrind instead")
	cgN        = flag.Int("cg-n", 1000, "decisions per contender under callgrind")
	mdFile     = flag.String("md", "", "write the table into this markdown file, between markers")
	quick      = flag.Bool("quick", false, "callgrind: the no-retry client, hot key, Allow only (a quick check while changing a script)")
)

// rate is every limit's rate per second (burst the same): far above what one
// Redis serves, so every decision takes the allowed path.
const rate = 1_000_000

type contender struct {
	name   string
	decide func(ctx context.Context, key string) error
}

type clientCase struct {
	name string
	c    *redis.Client
	cs   []contender
	q3   []contender // AllowQuota of 3 limits, against three redis_rate calls
}

var seq atomic.Int64

func pfx(s string) string { return "p" + strconv.FormatInt(seq.Add(1), 10) + s }

func cases(addr string) []*clientCase {
	var out []*clientCase
	for _, cc := range []struct {
		name string
		o    *redis.Options
	}{
		{"default client", &redis.Options{Addr: addr}},
		{"MaxRetries -1", &redis.Options{Addr: addr, MaxRetries: -1}},
	} {
		c := redis.NewClient(cc.o)
		opts := limiter.Options{Prefix: pfx("rq")}
		if *cg {
			// The first calls under valgrind take longer than the default
			// 250 ms bound of a retrying client; the server's count is the same.
			opts.Timeout = time.Minute
		}
		rq := limiter.New(c, opts)
		rr := redis_rate.NewLimiter(c)
		rrp := pfx("rr") + ":"
		rqLimit, rrLimit := limiter.PerSecond(rate), redis_rate.PerSecond(rate)
		q3 := []limiter.NamedLimit{
			{Name: "weight", Limit: limiter.Limit{Rate: 1e9, Period: time.Minute, Algorithm: limiter.FixedWindow}},
			{Name: "orders", Limit: limiter.Limit{Rate: 1e9, Period: 10 * time.Second, Algorithm: limiter.SlidingWindowCounter}},
			{Name: "daily", Limit: limiter.Limit{Rate: 1e9, Period: 24 * time.Hour, Burst: 1e9}},
		}
		cost := limiter.Cost{"weight": 5, "orders": 1, "daily": 1}
		rrq := [3]redis_rate.Limit{
			{Rate: 1e9, Burst: 1e9, Period: time.Minute},
			{Rate: 1e9, Burst: 1e9, Period: 10 * time.Second},
			{Rate: 1e9, Burst: 1e9, Period: 24 * time.Hour},
		}
		out = append(out, &clientCase{name: cc.name, c: c,
			cs: []contender{
				{"redquota", func(ctx context.Context, k string) error {
					r, err := rq.Allow(ctx, limiter.Key(k, rqLimit).Take(1))
					return verdict(r.Allowed, err)
				}},
				{"redis_rate", func(ctx context.Context, k string) error {
					r, err := rr.Allow(ctx, rrp+k, rrLimit)
					if err != nil {
						return err
					}
					return verdict(r.Allowed > 0, nil)
				}},
				{"ping", func(ctx context.Context, _ string) error { return c.Ping(ctx).Err() }},
			},
			q3: []contender{
				{"redquota AllowQuota(3)", func(ctx context.Context, k string) error {
					r, err := rq.Allow(ctx, limiter.Charge{Quota: limiter.Quota{Name: k, Limits: q3}, Cost: cost})
					return verdict(r.Allowed, err)
				}},
				{"redis_rate ×3", func(ctx context.Context, k string) error {
					for i, n := range [3]int{5, 1, 1} {
						r, err := rr.AllowN(ctx, rrp+strconv.Itoa(i)+":"+k, rrq[i], n)
						if err != nil {
							return err
						}
						if r.Allowed == 0 {
							return bench.ErrDenied
						}
					}
					return nil
				}},
			}})
	}
	return out
}

func verdict(ok bool, err error) error {
	if err != nil {
		return err
	}
	if !ok {
		return bench.ErrDenied
	}
	return nil
}

var keySets = func() [][]string {
	rot := make([]string, 10_000)
	for i := range rot {
		rot[i] = "k" + strconv.Itoa(i)
	}
	return [][]string{{"hot"}, rot}
}()

func main() {
	flag.Parse()
	log.SetFlags(0)
	load0 := loadavg()
	var md string
	var err error
	if *cg {
		md, err = callgrind()
	} else {
		md, err = wallclock()
	}
	if err != nil {
		log.Fatal(err)
	}
	mode := "wall"
	if *cg {
		mode = "callgrind"
	}
	title := "## Plain Allow against redis_rate (issue 19): wall-clock and allocations"
	if *cg {
		title = "## Plain Allow against redis_rate (issue 19): server instructions"
	}
	args := slices.DeleteFunc(slices.Clone(os.Args[1:]), func(a string) bool { return strings.HasPrefix(a, "-md") || strings.HasSuffix(a, ".md") })
	md = fmt.Sprintf("%s\n\n%s\nLoad average (1, 5, 15 min): at start %s; at end %s. redis-server: %s; %s. Generated by `make bench-plain` (`%s`).\n",
		title, md, load0, loadavg(), redisVersion(), time.Now().UTC().Format("2006-01-02 15:04 MST"),
		strings.TrimSpace("cd bench && go run ./cmd/plain "+strings.Join(args, " ")))
	fmt.Print(md)
	if *mdFile != "" {
		if err := splice(*mdFile, mode, md); err != nil {
			log.Fatal(err)
		}
	}
}

// ---- wall-clock and allocations

type samples map[string][]float64 // "case|keys|contender|metric" → one value per pass

func (s samples) add(k string, v float64) { s[k] = append(s[k], v) }

func wallclock() (string, error) {
	srv, err := bench.StartServer()
	if err != nil {
		return "", err
	}
	defer srv.Close()
	ccs := cases(srv.Addr())
	ctx := context.Background()
	for _, cc := range ccs { // load the scripts, warm the pools
		for _, c := range cc.cs {
			if err := c.decide(ctx, "warm"); err != nil {
				return "", fmt.Errorf("%s: %w", c.name, err)
			}
		}
	}
	s := samples{}
	for pass := range *passes {
		for _, cc := range ccs {
			for _, keys := range keySets {
				cs := slices.Clone(cc.cs)
				if pass%2 == 1 {
					slices.Reverse(cs)
				}
				id := cc.name + "|" + strconv.Itoa(len(keys)) + "|"
				for _, c := range cs {
					ns, allocs, err := sequential(ctx, c, keys)
					if err != nil {
						return "", fmt.Errorf("%s: %w", c.name, err)
					}
					s.add(id+c.name+"|ns", ns)
					s.add(id+c.name+"|allocs", allocs)
				}
				for _, c := range cs {
					dps, err := parallel(ctx, c, keys)
					if err != nil {
						return "", fmt.Errorf("%s: %w", c.name, err)
					}
					s.add(id+c.name+"|dps", dps)
				}
			}
		}
		fmt.Fprintf(os.Stderr, "pass %d of %d done (load %s)\n", pass+1, *passes, loadavg())
	}
	var w bytes.Buffer
	p := func(f string, a ...any) { fmt.Fprintf(&w, f, a...) }
	p("Wall-clock: %d interleaved passes; sequential latency over %d decisions, parallel throughput from %d goroutines for %v, per contender per pass. Ratios are redquota's over redis_rate's, the median of the per-pass ratios (lowest–highest); for latency lower is better, for throughput higher. Allocations are per decision, exact.\n\n",
		*passes, *seqN, *goroutines, *parDur)
	p("| client | keys | redquota latency | redis_rate latency | PING latency | latency ratio | redquota decisions/s | redis_rate decisions/s | throughput ratio | redquota allocs | redis_rate allocs | PING allocs |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, cc := range ccs {
		for _, keys := range keySets {
			id := cc.name + "|" + strconv.Itoa(len(keys)) + "|"
			get := func(c, m string) []float64 { return s[id+c+"|"+m] }
			p("| %s | %d | %.1f µs | %.1f µs | %.1f µs | %s | %.0f | %.0f | %s | %.1f | %.1f | %.1f |\n",
				cc.name, len(keys),
				median(get("redquota", "ns"))/1e3, median(get("redis_rate", "ns"))/1e3, median(get("ping", "ns"))/1e3,
				ratio(get("redquota", "ns"), get("redis_rate", "ns")),
				median(get("redquota", "dps")), median(get("redis_rate", "dps")),
				ratio(get("redquota", "dps"), get("redis_rate", "dps")),
				median(get("redquota", "allocs")), median(get("redis_rate", "allocs")), median(get("ping", "allocs")))
		}
	}
	return w.String(), nil
}

func sequential(ctx context.Context, c contender, keys []string) (ns, allocs float64, err error) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	t0 := time.Now()
	for i := range *seqN {
		if err := c.decide(ctx, keys[i%len(keys)]); err != nil {
			return 0, 0, err
		}
	}
	d := time.Since(t0)
	runtime.ReadMemStats(&m1)
	n := float64(*seqN)
	return float64(d.Nanoseconds()) / n, float64(m1.Mallocs-m0.Mallocs) / n, nil
}

func parallel(ctx context.Context, c contender, keys []string) (float64, error) {
	var done atomic.Int64
	var stop atomic.Bool
	var first atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for g := range *goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := g * 7919 // each goroutine starts elsewhere in the key ring
			for !stop.Load() {
				if err := c.decide(ctx, keys[i%len(keys)]); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
				done.Add(1)
				i++
			}
		}()
	}
	time.Sleep(*parDur)
	stop.Store(true)
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return 0, err
	}
	return float64(done.Load()) / time.Since(t0).Seconds(), nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratio is the median of a[i]/b[i] with its lowest and highest.
func ratio(a, b []float64) string {
	var r []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			r = append(r, a[i]/b[i])
		}
	}
	if len(r) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", median(r), slices.Min(r), slices.Max(r))
}

// ---- callgrind

func callgrind() (string, error) {
	cg, err := bench.StartCallgrind() // hz 1, no dynamic-hz: the idle work it subtracts is small
	if err != nil {
		return "", err
	}
	defer cg.Close()
	ccs := cases(cg.Addr())
	ctx := context.Background()
	dump := cg.Dump
	// Every contender once (its script loaded, its client's connections
	// open), then the idle server's instructions per second (serverCron,
	// the event loop, the clients' cron) with those connections open.
	for _, cc := range ccs {
		for _, c := range append(slices.Clone(cc.cs), cc.q3...) {
			if err := c.decide(ctx, "warm"); err != nil {
				return "", fmt.Errorf("%s: %w", c.name, err)
			}
		}
	}
	var idleRate float64
	measureIdle := func() (err error) {
		idleRate, err = cg.IdleRate(2 * time.Second)
		return err
	}
	var idleRates []float64

	// pass counts the instructions per decision of -cg-n decisions on keys.
	pass := func(c contender, keys []string) (float64, error) {
		if _, err := dump(); err != nil {
			return 0, err
		}
		t0 := time.Now()
		for i := range *cgN {
			if err := c.decide(ctx, keys[i%len(keys)]); err != nil {
				return 0, err
			}
		}
		total, err := dump()
		if err != nil {
			return 0, err
		}
		return (total - idleRate*time.Since(t0).Seconds()) / float64(*cgN), nil
	}
	// count is pass, and on many keys a second pass over the same keys: the
	// first finds each key cold (a redquota limiter writes its definition,
	// issue 17's registry, once per key per minute), the second as a key
	// seen within the minute, the steady state of a busy key space.
	count := func(c contender, keys []string) (warm, cold float64, err error) {
		if cold, err = pass(c, keys); err != nil || len(keys) == 1 {
			return cold, cold, err
		}
		warm, err = pass(c, keys)
		return warm, cold, err
	}
	type row struct {
		client       string
		keys         int
		rq, rr, ping float64
		q3, rr3      float64
		rqCold       float64
	}
	var rows []row
	sets := keySets
	if *quick {
		sets = keySets[:1]
	}
	if *quick {
		ccs = ccs[1:]
	}
	for _, cc := range ccs {
		for _, keys := range sets {
			// Again for each row: the keys earlier rows left (with their
			// TTLs) make the server's expiry cycle busier.
			if err := measureIdle(); err != nil {
				return "", err
			}
			idleRates = append(idleRates, idleRate)
			r := row{client: cc.name, keys: len(keys)}
			xs := []struct {
				c contender
				v *float64
			}{{cc.cs[0], &r.rq}, {cc.cs[1], &r.rr}, {cc.cs[2], &r.ping}, {cc.q3[0], &r.q3}, {cc.q3[1], &r.rr3}}
			if *quick {
				xs = xs[:2]
			}
			for i, x := range xs {
				v, cold, err := count(x.c, keys)
				if err != nil {
					return "", fmt.Errorf("%s: %w", x.c.name, err)
				}
				*x.v = v
				if i == 0 {
					r.rqCold = cold
				}
				fmt.Fprintf(os.Stderr, "%-15s keys=%-5d %-24s %8.0f instructions per decision (cold keys: %.0f)\n", cc.name, len(keys), x.c.name, v, cold)
			}
			rows = append(rows, r)
		}
	}
	var w bytes.Buffer
	p := func(f string, a ...any) { fmt.Fprintf(&w, f, a...) }
	p("Server instructions per decision (callgrind, %d decisions per contender, the idle server's instructions over the same time subtracted: %.0f–%.0f per second, measured before each row; the server runs with hz 1, dynamic-hz no, so that idle work is small). On 10 000 keys the %d decisions go to %d distinct keys twice: the figures are the second pass (each key seen within the minute); \"cold\" is redquota's first pass, which also writes each key's definition (issue 17's registry, once per key per minute). AllowQuota(3) is one call charging a fixed window, a sliding-window counter and a GCRA; redis_rate ×3 is three AllowN calls.\n\n", *cgN, slices.Min(idleRates), slices.Max(idleRates), *cgN, *cgN)
	p("| client | keys | redquota Allow | redis_rate Allow | ratio | redquota Allow, cold keys | PING | AllowQuota(3) | ÷ Allow | redis_rate ×3 |\n")
	p("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		p("| %s | %d | %.0f | %.0f | %.2f× | %.0f | %.0f | %.0f | %.2f× | %.0f |\n",
			r.client, r.keys, r.rq, r.rr, r.rq/r.rr, r.rqCold, r.ping, r.q3, r.q3/r.rq, r.rr3)
	}
	return w.String(), nil
}

// field returns the value of "name:" in a line-oriented text.

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func redisVersion() string {
	b, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return "?"
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return "?"
}

// splice writes md into file between the markers of mode, replacing what
// was there, or appends it with its markers.
func splice(file, mode, md string) error {
	begin, end := "<!-- plain:"+mode+" -->\n", "<!-- /plain:"+mode+" -->\n"
	old, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s := string(old)
	block := begin + md + end
	if i := strings.Index(s, begin); i >= 0 {
		if j := strings.Index(s[i:], end); j >= 0 {
			s = s[:i] + block + s[i+j+len(end):]
			return os.WriteFile(file, []byte(s), 0o644)
		}
	}
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return os.WriteFile(file, []byte(s+"\n"+block), 0o644)
}
