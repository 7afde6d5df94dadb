package limiter

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
)

// Environment of a lease child process (TestLeaseChild).
const (
	leaseChildEnv  = "REDQUOTA_LEASE_CHILD" // "bound" or "hold"
	leaseAddrEnv   = "REDQUOTA_LEASE_ADDR"
	leasePrefixEnv = "REDQUOTA_LEASE_PREFIX"
)

// leaseBoundQuota is what TestLeaseProcesses' children share: a token bucket
// and a fixed window that both bind.
var leaseBoundQuota = Quota{Name: "fleet", Limits: []NamedLimit{
	{"gcra", Limit{Rate: 20000, Period: time.Second, Burst: 2000}},
	{"fixed", Limit{Rate: 1500, Period: 100 * time.Millisecond, Algorithm: FixedWindow}},
}}

var leaseUnit = Cost{"gcra": 1, "fixed": 1}

// leaseHoldLimit is the limit TestLeaseKilledChild's child leases from: its
// lease of 10 (a tenth) stays charged for 100ms + 10 × 100ms.
var leaseHoldLimit = Every(100, 10*time.Second)

func leaseChildStart(t *testing.T, mode, addr, prefix string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLeaseChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), leaseChildEnv+"="+mode, leaseAddrEnv+"="+addr, leasePrefixEnv+"="+prefix)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	return cmd, sc
}

// TestLeaseProcesses: four processes, each with four goroutines calling a
// Leaser as fast as they can for a second, against one quota on a real Redis.
// Every spend of every process (local ones at the Leaser's clock, direct ones
// at Redis's grant time; one kernel clock for all) is replayed against an
// independent model of each limit: the exchange would refuse none.
func TestLeaseProcesses(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := redistest.NewPrefix(t)
	var spends []spend
	var st LeaseStats
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		_, sc := leaseChildStart(t, "bound", srv.Addr(), prefix)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []spend
			var s LeaseStats
			for sc.Scan() {
				line := sc.Text()
				if rest, ok := strings.CutPrefix(line, "stats "); ok {
					if _, err := fmt.Sscan(rest, &s.Decisions, &s.Local, &s.Calls, &s.Leased, &s.Expired); err != nil {
						t.Errorf("stats line %q: %v", line, err)
					}
					continue
				}
				var x spend
				if _, err := fmt.Sscan(line, &x.at, &x.n); err == nil {
					local = append(local, x)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			spends = append(spends, local...)
			st.Decisions += s.Decisions
			st.Local += s.Local
			st.Calls += s.Calls
			st.Leased += s.Leased
			st.Expired += s.Expired
		}()
	}
	wg.Wait()
	if st.Decisions == 0 {
		t.Fatal("no child reported its stats")
	}
	if err := checkExchange(spends, leaseBoundQuota.Limits); err != nil {
		t.Fatalf("global bound broken across processes: %v", err)
	}
	units := 0
	for _, s := range spends {
		units += s.n
	}
	// A second holds 2000 + 20000 units of the bucket (15000 of the window);
	// the children run about a second each, started within a few ms.
	t.Logf("4 processes: %d units spent, stats %+v", units, st)
	if units < 5000 {
		t.Errorf("only %d units spent in a second of 15000 available: leases starve the fleet", units)
	}
	if st.Local == 0 || st.Leased == 0 {
		t.Errorf("no decision answered from a lease: %+v", st)
	}
}

// TestLeaseKilledChild: a process that took a lease is killed (SIGKILL) before
// spending it. Its units stay charged, so nothing is overshot, and they return
// to everyone when the lease's charge ages out, with nothing left to clean up.
func TestLeaseKilledChild(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := redistest.NewPrefix(t)
	cmd, sc := leaseChildStart(t, "hold", srv.Addr(), prefix)
	if !sc.Scan() || sc.Text() != "leased 10" {
		t.Fatalf("child: %q, %v", sc.Text(), sc.Err())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	ctx := context.Background()
	c := redistest.NewReal(t)
	lim := New(c, Options{Prefix: prefix})
	// The dead process's 10 units are still charged: the full bucket is not
	// there, and Redis says when it will be: at most the lease (100ms) plus 10
	// units at 100ms each after the lease was taken.
	r, err := lim.Allow(ctx, Key("killed", leaseHoldLimit).Take(100))
	if err != nil {
		t.Fatal(err)
	}
	if r.Allowed || r.RetryAfter <= 0 || r.RetryAfter > 1100*time.Millisecond {
		t.Fatalf("right after the kill: %+v, want denied for at most 1.1s", r)
	}
	key := prefix + ":{killed}:gcra"
	if ttl := c.PTTL(ctx, key).Val(); ttl <= 0 || ttl > 1100*time.Millisecond {
		t.Fatalf("the lease's state has TTL %s, want (0, 1.1s]", ttl)
	}
	time.Sleep(r.RetryAfter)
	r, err = lim.Allow(ctx, Key("killed", leaseHoldLimit).Take(100))
	if err != nil || !r.Allowed {
		t.Fatalf("after the lease aged out: %+v, %v; want the whole bucket", r, err)
	}
}

// TestLeaseChild is the child process of TestLeaseProcesses and
// TestLeaseKilledChild, run by them with the environment set.
func TestLeaseChild(t *testing.T) {
	mode := os.Getenv(leaseChildEnv)
	if mode == "" {
		t.Skip("child process of TestLeaseProcesses and TestLeaseKilledChild")
	}
	ctx := context.Background()
	opts := redistest.ClientOptions(os.Getenv(leaseAddrEnv))
	c := redis.NewClient(opts)
	defer c.Close()
	lim := New(c, Options{Prefix: os.Getenv(leasePrefixEnv), Timeout: 10 * time.Second})
	switch mode {
	case "hold":
		ls, err := lim.NewLeaser(Key("killed", leaseHoldLimit).Take(1), LeaseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := ls.fetch(ctx, ls.cap, make(chan struct{}), 0); !ok || err != nil {
			t.Fatal(ok, err)
		}
		// The units Redis granted, expired or not: held() would count the
		// 100 ms lease out if printing it came that late (seen under load).
		fmt.Printf("leased %d\n", ls.stats.leased.Load())
		time.Sleep(time.Minute) // killed long before
	case "bound":
		ls, err := lim.NewLeaser(Charge{Quota: leaseBoundQuota, Cost: leaseUnit}, LeaseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var log spendLog
		log.spy(t)
		var wg sync.WaitGroup
		end := time.Now().Add(time.Second)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					if _, err := ls.Allow(ctx, 1); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := ls.Close(); err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriter(os.Stdout)
		for _, s := range log.s {
			fmt.Fprintln(w, s.at, s.n)
		}
		s := ls.Stats()
		fmt.Fprintln(w, "stats", s.Decisions, s.Local, s.Calls, s.Leased, s.Expired)
		_ = w.Flush()
	}
}
