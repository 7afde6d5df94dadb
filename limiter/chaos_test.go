package limiter

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// The chaos soak (make chaos; not part of make test): the soak's 8 OS
// processes × 64 goroutines on its 20 quotas, for 60 s, through go-redis's
// failover client to a primary, a replica and three Sentinels, while a loop
// of faults runs on the primary, one every 8 s from 4 s until 12 s before the
// end (one round in 60 s): kill -9 and restart (no persistence: the state is
// lost), SCRIPT FLUSH, CLIENT KILL, DEBUG SLEEP beyond the workers' 1 s
// Timeout, maxmemory squeezed below what is used (noeviction: writes fail
// with OOM), and a failover (kill -9; Sentinel promotes the replica; the old
// primary comes back empty and Sentinel makes it a replica). The parent then
// checks, from the grant logs alone:
//
//   - no limit over its bound between two faults that lose state (kill -9
//     and restart, failover): every limit is checked on the grants of each
//     span between them. Across such a fault a limit may be over its bound
//     for up to one period (RELIABILITY.md: restarts and failovers); those
//     grants are counted, not failed;
//
//   - decisions back (a grant) within 1 s after each fault ended;
//
//   - no worker panicked or left a goroutine behind (each worker checks
//     with goleak after closing its client), and every key has a TTL.
//
//     REDQUOTA_CHAOS=1 go test -run '^TestChaos$' -timeout 10m -v ./limiter/
//     REDQUOTA_SOAK_DURATION=60s REDQUOTA_SOAK_PROCS=8 (defaults)
func TestChaos(t *testing.T) {
	if os.Getenv("REDQUOTA_CHAOS") != "1" {
		t.Skip("chaos soak: set REDQUOTA_CHAOS=1 (make chaos)")
	}
	dur, procs := 60*time.Second, 8
	if v := os.Getenv("REDQUOTA_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err)
		dur = d
	}
	if v := os.Getenv("REDQUOTA_SOAK_PROCS"); v != "" {
		procs, _ = strconv.Atoi(v)
	}
	// Sentinel must not fail over during the DEBUG SLEEP (1.5 s): down-after 3 s.
	st := redistest.StartSentinels(t, 3*time.Second, false)
	ctx := context.Background()
	sent := redis.NewSentinelClient(&redis.Options{Addr: st.Addrs[0]})
	defer sent.Close()
	sentinelsKnowReplica(t, st, sent)

	dir := t.TempDir()
	var cmds []*exec.Cmd
	for p := 0; p < procs; p++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSoakWorker$", "-test.v")
		cmd.Env = append(os.Environ(), "REDQUOTA_SOAK_WORKER=1", "REDQUOTA_CHAOS=1",
			"REDQUOTA_SOAK_SENTINELS="+strings.Join(st.Addrs, ","), "REDQUOTA_SOAK_MASTER="+st.Master,
			"REDQUOTA_SOAK_LOG="+filepath.Join(dir, fmt.Sprintf("grants%d.log", p)),
			"REDQUOTA_SOAK_DURATION="+dur.String(), fmt.Sprintf("REDQUOTA_SOAK_SEED=%d", p))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		require.NoError(t, cmd.Start())
		cmds = append(cmds, cmd)
	}
	began := time.Now()

	primary, replica := st.Primary, st.Replica
	admin := func() *redis.Client {
		o := redistest.ClientOptions(primary.Addr())
		o.ReadTimeout = 5 * time.Second // DEBUG SLEEP answers after 1.5 s
		return redis.NewClient(o)
	}
	faults := []struct {
		name string
		// lost: the fault loses state (a limit may go over its bound for a
		// period after it).
		lost bool
		run  func(c *redis.Client) error
	}{
		{"kill -9 + restart", true, func(*redis.Client) error {
			primary.Stop()
			return primary.Start()
		}},
		{"SCRIPT FLUSH", false, func(c *redis.Client) error { return c.ScriptFlush(ctx).Err() }},
		{"CLIENT KILL TYPE normal", false, func(c *redis.Client) error {
			return c.Do(ctx, "client", "kill", "type", "normal").Err()
		}},
		{"DEBUG SLEEP 1.5 (Timeout 1 s)", false, func(c *redis.Client) error {
			return c.Do(ctx, "debug", "sleep", "1.5").Err()
		}},
		{"maxmemory squeezed 1 s", false, func(c *redis.Client) error {
			info, err := c.Info(ctx, "memory").Result()
			if err != nil {
				return err
			}
			var mem int64
			for _, line := range strings.Split(info, "\r\n") {
				if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
					mem, _ = strconv.ParseInt(v, 10, 64)
				}
			}
			if err := c.ConfigSet(ctx, "maxmemory", strconv.FormatInt(mem/2, 10)).Err(); err != nil {
				return err
			}
			time.Sleep(time.Second)
			return c.ConfigSet(ctx, "maxmemory", "0").Err()
		}},
		{"failover (kill -9 primary)", true, func(*redis.Client) error {
			primary.Stop()
			want := []string{"127.0.0.1", strconv.Itoa(replica.Port())}
			deadline := time.Now().Add(30 * time.Second)
			for {
				addr, err := sent.GetMasterAddrByName(ctx, st.Master).Result()
				if err == nil && slices.Equal(addr, want) {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("no promotion within 30 s (master %v, %v)", addr, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			// The old primary comes back (empty); Sentinel makes it a replica.
			primary, replica = replica, primary
			return replica.Start()
		}},
	}
	type event struct {
		name       string
		lost       bool
		start, end time.Time
	}
	var events []event
	const every = 8 * time.Second
	for i := 0; ; i++ {
		at := began.Add(4*time.Second + time.Duration(i)*every)
		if at.After(began.Add(dur - 12*time.Second)) {
			break // leave time to see decisions come back (a failover takes ~5 s)
		}
		time.Sleep(time.Until(at))
		f := faults[i%len(faults)] // the failover comes last: a restarted promoted replica would come back a replica (redistest keeps its --replicaof)
		c := admin()
		start := time.Now()
		err := f.run(c)
		end := time.Now()
		_ = c.Close()
		require.NoError(t, err, "fault %s", f.name)
		events = append(events, event{f.name, f.lost, start, end})
	}
	for _, c := range cmds {
		// A worker that panicked, failed a check or left a goroutine exits non-zero.
		require.NoError(t, c.Wait(), "worker")
	}

	gl := readGrantLogs(t, dir, procs)
	logs, failed := gl.limits, gl.failed
	var grantsAt []int64 // every grant's time, sorted
	for _, gs := range logs {
		for _, g := range gs {
			grantsAt = append(grantsAt, g.t)
		}
	}
	slices.Sort(grantsAt)
	var table strings.Builder
	fmt.Fprintf(&table, "| fault | at | lasted | first grant after it ended | decisions failed (fault start to 1 s after its end) |\n|---|---|---|---|---|\n")
	var slow []string
	for _, e := range events {
		i, _ := slices.BinarySearch(grantsAt, e.end.UnixMicro())
		back := "none"
		if i < len(grantsAt) {
			d := time.Duration(grantsAt[i]-e.end.UnixMicro()) * time.Microsecond
			back = d.Round(time.Millisecond).String()
			if d > time.Second {
				slow = append(slow, e.name)
			}
		} else {
			slow = append(slow, e.name)
		}
		lo, _ := slices.BinarySearch(failed, e.start.UnixMicro())
		hi, _ := slices.BinarySearch(failed, e.end.Add(time.Second).UnixMicro())
		fmt.Fprintf(&table, "| %s | %.1f s | %v | %s | %d |\n", e.name, e.start.Sub(began).Seconds(),
			e.end.Sub(e.start).Round(time.Millisecond), back, hi-lo)
	}
	// Each limit is checked strictly on each span between faults that lose
	// state; over the whole run, what is over its bound is counted.
	var cuts []int64
	for _, e := range events {
		if e.lost {
			cuts = append(cuts, e.start.UnixMicro())
		}
	}
	var outside []string
	across, acrossLimits := 0, 0
	for id, gs := range logs {
		lim := soakQuota(id[0]).Limits[id[1]].Limit
		from := 0
		for k := 0; k <= len(cuts); k++ {
			to := len(gs)
			if k < len(cuts) {
				to, _ = slices.BinarySearchFunc(gs, cuts[k], func(g soakGrant, t int64) int { return int(g.t - t) })
			}
			if n, msg := overBound(lim, gs[from:to]); n > 0 {
				outside = append(outside, fmt.Sprintf("quota %d limit %s, span %d: %d grants, first: %s", id[0], lim, k, n, msg))
			}
			from = to
		}
		if n, _ := overBound(lim, gs); n > 0 {
			across += n
			acrossLimits++
		}
	}
	sort.Strings(outside)
	fmt.Fprintf(&table, "\n%d limit grants, %d decisions denied and %d failed, logged by %d processes × 64 goroutines in %v on %d quotas (%d limits).\n",
		gl.grants, gl.denied, len(failed), procs, dur, soakQuotas, len(logs))
	fmt.Fprintf(&table, "Over its bound between state-losing faults: %d limits. Across them (kill -9 + restart, failover): %d grants over the bound, on %d limits.\n",
		len(outside), across, acrossLimits)
	fmt.Fprintf(&table, "Workers: no panic, no goroutine left behind (goleak after Close), exit 0.\n")

	// Every key has a TTL.
	c := admin()
	defer c.Close()
	keys, err := c.Keys(ctx, "*").Result() // a private server: KEYS is fine here
	require.NoError(t, err)
	noTTL := 0
	for _, k := range keys {
		if c.PTTL(ctx, k).Val() == -1 { // -2: expired since KEYS
			noTTL++
		}
	}
	fmt.Fprintf(&table, "Keys on the primary at the end: %d, without a TTL: %d.\n", len(keys), noTTL)
	t.Logf("chaos table (RELIABILITY.md):\n%s", table.String())
	require.Empty(t, outside, "limits over their bound outside the failover and restart windows")
	require.Empty(t, slow, "faults after which no decision was granted within 1 s")
	require.Zero(t, noTTL, "keys without a TTL")
}

// quiet drops go-redis's log lines (a chaos worker's dials are refused
// thousands of times).
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// sentinelsKnowReplica waits until the Sentinels know st's replica and it is
// in sync: they learn it from the primary's INFO, every 10 s at worst; 30 s
// is past that.
func sentinelsKnowReplica(t *testing.T, st *redistest.Sentinels, sent *redis.SentinelClient) {
	t.Helper()
	ctx := context.Background()
	rc := st.Replica.Client()
	defer rc.Close()
	require.Eventually(t, func() bool {
		rs, err := sent.Replicas(ctx, st.Master).Result()
		if err != nil || len(rs) != 1 {
			return false
		}
		info, err := rc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	}, 30*time.Second, 50*time.Millisecond)
}
