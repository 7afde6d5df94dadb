package limiter

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/redquota/redquota/internal/redistest"
)

// The soak test (make soak; not part of make test): several OS processes,
// each with its own client and limiter, hammer 20 quotas of mixed algorithms
// on one real redis-server. Every grant is logged with its Redis time; the
// parent then checks each limit's bound from the merged logs alone, and that
// once every window has passed Redis holds no key at all (every key has a TTL).
//
//	REDQUOTA_SOAK=1 go test -run TestSoak -timeout 10m ./limiter/
//	REDQUOTA_SOAK_DURATION=60s REDQUOTA_SOAK_PROCS=8 (defaults)

const soakQuotas = 20

// soakQuota returns quota i: two limits of different algorithms with short
// periods, so that windows turn over many times in a soak.
func soakQuota(i int) Quota {
	algs := []Algorithm{GCRA, SlidingWindow, SlidingWindowCounter, FixedWindow}
	a, b := algs[i%4], algs[(i/4+1+i)%4]
	return Quota{Name: fmt.Sprintf("soak%d", i), Limits: []NamedLimit{
		{"a", Limit{Rate: 50 + 10*i, Period: time.Second, Burst: 20 + i, Algorithm: a}},
		{"b", Limit{Rate: 200 + 25*i, Period: 3 * time.Second, Burst: 40, Algorithm: b}},
	}}
}

func TestSoak(t *testing.T) {
	if os.Getenv("REDQUOTA_SOAK") != "1" {
		t.Skip("soak test: set REDQUOTA_SOAK=1 (make soak)")
	}
	dur := 60 * time.Second
	if v := os.Getenv("REDQUOTA_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		dur = d
	}
	procs := 8
	if v := os.Getenv("REDQUOTA_SOAK_PROCS"); v != "" {
		procs, _ = strconv.Atoi(v)
	}
	srv := redistest.Private(t)
	dir := t.TempDir()
	var cmds []*exec.Cmd
	for p := 0; p < procs; p++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSoakWorker$", "-test.v")
		cmd.Env = append(os.Environ(), "REDQUOTA_SOAK_WORKER=1", "REDQUOTA_SOAK_ADDR="+srv.Addr(),
			"REDQUOTA_SOAK_LOG="+filepath.Join(dir, fmt.Sprintf("grants%d.log", p)),
			"REDQUOTA_SOAK_DURATION="+dur.String(), fmt.Sprintf("REDQUOTA_SOAK_SEED=%d", p))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("worker: %v", err)
		}
	}
	gl := readGrantLogs(t, dir, procs)
	t.Logf("%d grants logged by %d processes in %v (%d decisions denied)", gl.grants, procs, dur, gl.denied)
	for id, gs := range gl.limits {
		lim := soakQuota(id[0]).Limits[id[1]].Limit
		if n, msg := overBound(lim, gs); n > 0 {
			t.Fatalf("quota %d limit %s: %s", id[0], lim, msg)
		}
	}
	// Every key has a TTL: after the longest period (3 s) and the dedupe
	// window (10 s), nothing is left but the quotas' definitions (registry.go),
	// which outlive their state by registryEvery.
	c := srv.Client()
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		keys, err := c.Keys(context.Background(), "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, k := range keys {
			if !strings.HasSuffix(k, ":def") {
				left = append(left, k)
			} else if ttl := c.PTTL(context.Background(), k).Val(); ttl <= 0 || ttl > 2*3*time.Second+registryEvery {
				t.Fatalf("definition %s has TTL %s", k, ttl)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys still in Redis 20 s after the soak: %v", len(left), left[:min(10, len(left))])
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// soakGrant is one logged grant of one limit: Redis time (µs) and units.
type soakGrant struct{ t, cost int64 }

// grantLogs are the workers' logs merged.
type grantLogs struct {
	limits map[[2]int][]soakGrant // by quota and limit index, sorted by time
	failed []int64                // local times (µs) of failed decisions (chaos), sorted
	grants int                    // grant lines
	denied int                    // decisions denied
}

// readGrantLogs merges the workers' logs in dir.
func readGrantLogs(t *testing.T, dir string, procs int) grantLogs {
	t.Helper()
	logs := map[[2]int][]soakGrant{}
	var failed []int64
	total, denied := 0, 0
	for p := 0; p < procs; p++ {
		f, err := os.Open(filepath.Join(dir, fmt.Sprintf("grants%d.log", p)))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if at, ok := strings.CutPrefix(line, "e "); ok {
				us, err := strconv.ParseInt(at, 10, 64)
				if err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				failed = append(failed, us)
				continue
			}
			if n, ok := strings.CutPrefix(line, "d "); ok {
				d, err := strconv.Atoi(n)
				if err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				denied += d
				continue
			}
			var q, l int
			var g soakGrant
			if _, err := fmt.Sscan(line, &q, &l, &g.t, &g.cost); err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			logs[[2]int{q, l}] = append(logs[[2]int{q, l}], g)
			total++
		}
		f.Close()
	}
	for _, gs := range logs {
		sort.Slice(gs, func(i, j int) bool { return gs[i].t < gs[j].t })
	}
	sort.Slice(failed, func(i, j int) bool { return failed[i] < failed[j] })
	return grantLogs{logs, failed, total, denied}
}

// overBound checks lim's bound over gs (sorted by time): it returns how many
// grants broke it and what the first one broke (n = 0: none).
func overBound(lim Limit, gs []soakGrant) (n int, first string) {
	fail := func(format string, a ...any) {
		if n == 0 {
			first = fmt.Sprintf(format, a...)
		}
		n++
	}
	p := lim.periodUS()
	switch lim.Algorithm {
	case SlidingWindow, SlidingWindowCounter:
		bound := int64(lim.Rate)
		if lim.Algorithm == SlidingWindowCounter {
			bound *= 2 // approximate by design; never more than two windows' worth
		}
		var sum int64
		j := 0
		for i := range gs {
			sum += gs[i].cost
			for gs[j].t <= gs[i].t-p {
				sum -= gs[j].cost
				j++
			}
			if sum > bound {
				fail("window ending %d holds %d > %d", gs[i].t, sum, bound)
			}
		}
	case FixedWindow:
		per := map[int64]int64{}
		for _, g := range gs {
			per[g.t/p] += g.cost
			if per[g.t/p] > int64(lim.Rate) {
				fail("window %d holds %d", g.t/p, per[g.t/p])
			}
		}
	case GCRA:
		// Units in [t_i, t_j] ≤ burst + (t_j - t_i)/interval, for every pair:
		// checked in O(n) as a running maximum of (units so far - t/interval).
		iv := lim.intervalUS()
		var units int64
		best := int64(-1 << 62)
		for _, g := range gs {
			// units before this grant, minus its time in intervals
			best = max(best, -(units - g.t/iv))
			units += g.cost
			if units-g.t/iv+best > int64(lim.most())+1 {
				fail("%d units at %d exceed the burst bound", units-g.t/iv+best, g.t)
			}
		}
	}
	return n, first
}

// TestSoakWorker is one soak process; it runs only when TestSoak starts it.
func TestSoakWorker(t *testing.T) {
	if os.Getenv("REDQUOTA_SOAK_WORKER") != "1" {
		t.Skip("started by TestSoak only")
	}
	dur, _ := time.ParseDuration(os.Getenv("REDQUOTA_SOAK_DURATION"))
	seed, _ := strconv.Atoi(os.Getenv("REDQUOTA_SOAK_SEED"))
	chaos := os.Getenv("REDQUOTA_CHAOS") == "1"
	if chaos {
		redis.SetLogger(quiet{})
	}
	before := goleak.IgnoreCurrent() // what runs before the client exists
	o := redistest.ClientOptions(os.Getenv("REDQUOTA_SOAK_ADDR"))
	o.PoolSize = 64
	var c redis.UniversalClient
	if sentinels := os.Getenv("REDQUOTA_SOAK_SENTINELS"); sentinels != "" {
		// TestChaos: through the Sentinels, as a deployment with failover would.
		c = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: os.Getenv("REDQUOTA_SOAK_MASTER"), SentinelAddrs: strings.Split(sentinels, ","),
			DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
			PoolSize: o.PoolSize, MaxRetries: o.MaxRetries, MinRetryBackoff: o.MinRetryBackoff,
			MaxRetryBackoff: o.MaxRetryBackoff, DialerRetries: o.DialerRetries, ContextTimeoutEnabled: true,
		})
	} else {
		c = redis.NewClient(o) // retries on: dedupe on, as in a default deployment
	}
	// 512 goroutines in 8 processes saturate a 2-core machine: a call can
	// wait longer than the default 250 ms Timeout (meant to detect a dead
	// Redis), and three such calls in a row open the breaker. The soak tests
	// the limits, so it gives calls 2 s. The chaos soak gives them 1 s (its
	// DEBUG SLEEP lasts 1.5 s) and a 200 ms CoolDown, so that decisions come
	// back soon after a fault.
	opts := Options{Prefix: "soak", Timeout: 2 * time.Second}
	if chaos {
		opts.Timeout, opts.CoolDown = time.Second, 200*time.Millisecond
	}
	lim := New(c, opts)
	f, err := os.Create(os.Getenv("REDQUOTA_SOAK_LOG"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	defer w.Flush()
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(dur)
	errs, denied := 0, 0
	kinds := map[string]int{} // chaos: failures by message, digits dropped
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(g)))
			p, r := new(plan), new(reply)
			for time.Now().Before(end) {
				qi := rng.IntN(soakQuotas)
				q := soakQuota(qi)
				cost := Cost{"a": 1 + rng.IntN(3)}
				if rng.IntN(2) == 0 {
					cost["b"] = 1 + rng.IntN(5)
				}
				if err := lim.quota(p, Charge{Quota: q, Cost: cost}); err != nil {
					t.Error(err)
					return
				}
				// Max wait 1 µs: an Allow that also returns the grant time.
				if err := lim.decide(context.Background(), p, 1, r); err != nil {
					mu.Lock()
					if errs < 3 && !chaos {
						t.Log(err)
					}
					errs++
					if chaos { // failures are expected: logged with their local time
						fmt.Fprintf(w, "e %d\n", time.Now().UnixMicro())
						kinds[strings.Map(func(r rune) rune {
							if r >= '0' && r <= '9' {
								return -1
							}
							return r
						}, err.Error())]++
					}
					mu.Unlock()
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if !r.granted {
					mu.Lock()
					denied++
					mu.Unlock()
					time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
					continue
				}
				var b strings.Builder
				for i := 0; i < p.n; i++ {
					li := 0
					if p.names[i] == "b" {
						li = 1
					}
					fmt.Fprintf(&b, "%d %d %d %d\n", qi, li, r.grantUS, p.costs[i])
				}
				mu.Lock()
				_, _ = w.WriteString(b.String())
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	fmt.Fprintf(w, "d %d\n", denied)
	for k, n := range kinds {
		t.Logf("worker %d: %d× %s", seed, n, k)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	// No goroutine left behind by the limiter or its client once closed
	// (goleak retries for a while: a detached call may still be finishing).
	if err := goleak.Find(before); err != nil {
		t.Errorf("goroutines left behind: %v", err)
	}
	if errs > 0 && !chaos {
		t.Fatalf("%d decisions failed", errs)
	}
	t.Logf("worker %d: %d decisions failed", seed, errs)
}
