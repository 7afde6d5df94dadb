package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/holdtest"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
)

var update = flag.Bool("update", false, "rewrite the golden files from this run's output")

// binary is the redquota command built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "redquota-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binary = filepath.Join(dir, "redquota")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(2)
	}
	code := m.Run()
	redistest.StopAll()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// fleet puts quotas in the states an operator meets, through the library's
// own calls, and waits for the registry to describe them:
//
//	kraken    held 30 min with a reason, a quarter used
//	coinbase  exhausted (sliding window 30/30)
//	binance   mid-window: 40 % of its fixed-window weight, 25 % of its daily orders
//	pair[XBT/USD]  an instance of a template (Quota.For), 60 % used
//	user:42   a single key (sliding-window counter), 10 % used
//	okx       idle: decided on, then reset
//
// Every limit is long (an hour or more, and a GCRA unit takes three minutes or
// more to refill) so that nothing refills while the commands run; durations
// are shown rounded up to the minute at that size.
func fleet(t *testing.T, c redis.UniversalClient, prefix string) {
	t.Helper()
	ctx := context.Background()
	// The fixed window (an hour) and the counter (a day) must not roll over
	// while a test reads them: start at least 30 s before the next hour
	// (Redis runs on this machine's clock). Waits at most 30 s.
	if left := time.Until(time.Now().Truncate(time.Hour).Add(time.Hour)); left < 30*time.Second {
		time.Sleep(left + time.Second)
	}
	// A 5 s Timeout: the default 250 ms was seen passed on the cluster at
	// load 17 (-race), and this sets the stage, it tests no timeout.
	lim := limiter.New(c, limiter.Options{Prefix: prefix, Timeout: 5 * time.Second})
	must := func(r limiter.Result, err error) {
		t.Helper()
		require.NoError(t, err)
		require.True(t, r.Allowed, "%+v", r)
	}
	binance := limiter.Quota{Name: "binance", Limits: []limiter.NamedLimit{
		{Name: "weight", Limit: limiter.Limit{Rate: 6000, Period: time.Hour, Burst: 6000, Algorithm: limiter.FixedWindow}},
		{Name: "orders", Limit: limiter.PerDay(500)},
	}}
	must(lim.Allow(ctx, limiter.Charge{Quota: binance, Cost: limiter.Cost{"weight": 2400, "orders": 125}}))
	coinbase := limiter.Quota{Name: "coinbase", Limits: []limiter.NamedLimit{
		{Name: "private", Limit: limiter.Limit{Rate: 30, Period: time.Hour, Burst: 30, Algorithm: limiter.SlidingWindow}},
	}}
	must(lim.Allow(ctx, limiter.Charge{Quota: coinbase, Cost: limiter.Cost{"private": 30}}))
	kraken := limiter.Quota{Name: "kraken", Limits: []limiter.NamedLimit{
		{Name: "calls", Limit: limiter.PerHour(20)},
	}}
	must(lim.Allow(ctx, limiter.Charge{Quota: kraken, Cost: limiter.Cost{"calls": 5}}))
	_, err := lim.Hold(ctx, kraken, 30*time.Minute, "exchange maintenance (alice@desk)")
	pair := limiter.Quota{Name: "pair", Limits: []limiter.NamedLimit{{Name: "calls", Limit: limiter.PerHour(15)}}}
	must(lim.Allow(ctx, limiter.Charge{Quota: pair.For("XBT/USD"), Cost: limiter.Cost{"calls": 9}}))
	require.NoError(t, err)
	r, err := lim.Allow(ctx, limiter.Key("user:42", limiter.Limit{Rate: 100, Period: 24 * time.Hour, Burst: 100, Algorithm: limiter.SlidingWindowCounter}).Take(10))
	require.NoError(t, err)
	require.True(t, r.Allowed)
	okx := limiter.Quota{Name: "okx", Limits: []limiter.NamedLimit{{Name: "public", Limit: limiter.PerHour(600)}}}
	must(lim.Allow(ctx, limiter.Charge{Quota: okx, Cost: limiter.Cost{"public": 1}}))
	require.NoError(t, lim.Reset(ctx, okx))
	// The registry writes from its own goroutine: wait until all six are
	// described (bounded: 5 s).
	for deadline := time.Now().Add(5 * time.Second); ; {
		st, err := lim.Inspect(ctx)
		require.NoError(t, err)
		n := 0
		for _, s := range st {
			if len(s.Quota.Limits) > 0 {
				n++
			}
		}
		if n == 6 {
			return
		}
		require.False(t, time.Now().After(deadline), "registry wrote %d of 6 definitions", n)
		time.Sleep(10 * time.Millisecond)
	}
}

// cmd runs the built binary with env (added to a clean environment) and
// returns its stdout, stderr and exit code.
func cmd(t *testing.T, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, binary, args...)
	c.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	c.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return out.String(), errb.String(), code
}

// windowReset matches the time left on a fixed-window or sliding-counter row
// (ALL FREE IN, after FREE IN): those windows are aligned to the clock, so it
// depends on when the test runs.
var windowReset = regexp.MustCompile(`(?m)^(\S+ +\S+ +(?:fixed|counter) .*%  +\S+ +)(\S+)$`)

// golden compares got with testdata/name, after replacing the clock-aligned
// window resets with "<window>" (each checked to parse as a time left first).
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = windowReset.ReplaceAllStringFunc(got, func(line string) string {
		m := windowReset.FindStringSubmatch(line)
		require.Regexp(t, `^(\d+\.\ds|\d+s|\d+m\d\ds|\d+m|\d+h\d\dm|\d+d\d\dh)$`, m[2], "window reset in %q", line)
		return m[1] + "<window>"
	})
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), got)
}

// normalJSON checks each reset of status --json against its limit and
// rounds what depends on the clock: window resets become -1, other times
// are rounded up to the minute (every limit of the fleet is an hour or more).
func normalJSON(t *testing.T, out string) string {
	t.Helper()
	var v struct {
		Prefix string `json:"prefix"`
		Quotas []struct {
			Name       string           `json:"name"`
			HoldMS     int64            `json:"hold_ms"`
			HoldReason string           `json:"hold_reason"`
			Limits     []map[string]any `json:"limits"`
		} `json:"quotas"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	minute := func(ms float64) int64 { return int64(math.Ceil(ms/60000)) * 60000 }
	v.Prefix = "PREFIX"
	for i := range v.Quotas {
		q := &v.Quotas[i]
		q.HoldMS = minute(float64(q.HoldMS))
		for _, l := range q.Limits {
			reset, period := l["reset_ms"].(float64), l["period_ms"].(float64)
			free, ok := l["free_ms"].(float64)
			require.True(t, ok, "free_ms missing in %v", l)
			require.GreaterOrEqual(t, reset, 0.0)
			require.LessOrEqual(t, reset, 2*period)
			require.GreaterOrEqual(t, free, 0.0)
			require.LessOrEqual(t, free, reset, "the next unit is free before the last")
			if a := l["algorithm"]; a == "fixed" || a == "counter" {
				l["reset_ms"] = -1
				if free > 0 {
					l["free_ms"] = -1
				}
			} else {
				l["reset_ms"], l["free_ms"] = minute(reset), minute(free)
			}
		}
	}
	b, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	return string(b) + "\n"
}

// The built binary against a real redis-server: status, status --json,
// status of named quotas, and check, compared with golden files.
func TestStatusAndCheckRedis(t *testing.T) {
	srv := redistest.Private(t)
	c := srv.Client()
	defer c.Close()
	fleet(t, c, "rq")
	env := []string{"REDIS_URL=redis://" + srv.Addr()}

	out, errOut, code := cmd(t, env, "", "status")
	require.Equal(t, 0, code, errOut)
	golden(t, "status.txt", out)

	out, errOut, code = cmd(t, env, "", "status", "--json")
	require.Equal(t, 0, code, errOut)
	golden(t, "status.json", normalJSON(t, out))

	out, errOut, code = cmd(t, env, "", "status", "okx", "kraken", "nowhere")
	require.Equal(t, 0, code, errOut)
	golden(t, "status-named.txt", out)

	// The seed's variables instead of REDIS_URL.
	out, errOut, code = cmd(t, []string{"REDIS_HOST=127.0.0.1", fmt.Sprintf("REDIS_PORT=%d", srv.Port())}, "", "check")
	require.Equal(t, 0, code, errOut)
	golden(t, "check.txt", regexp.MustCompile(`Redis \d+\.\d+\.\d+`).ReplaceAllString(out, "Redis X.Y.Z"))
}

// A fixed window full now whose next window is booked full too frees its
// next unit a window later, not when the window ends: status shows when
// (FREE IN, free_ms), as Reserve would book it; with the next window booked
// in part, at that window's start. Before, RESETS IN alone showed the end of
// the last booked window for both. The relations are exact (one reading, on
// Redis's clock): free == reset > period for the first, reset − free ==
// period > free for the second.
func TestStatusFreeInBookedWindows(t *testing.T) {
	srv := redistest.Private(t)
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	// The hour must not roll over while the test runs (as fleet's).
	if left := time.Until(time.Now().Truncate(time.Hour).Add(time.Hour)); left < 30*time.Second {
		time.Sleep(left + time.Second)
	}
	lim := limiter.New(c, limiter.Options{Prefix: "rq", Timeout: 5 * time.Second})
	hourly := limiter.Limit{Rate: 10, Period: time.Hour, Burst: 10, Algorithm: limiter.FixedWindow}
	full := limiter.Quota{Name: "full", Limits: []limiter.NamedLimit{{Name: "w", Limit: hourly}}}
	part := limiter.Quota{Name: "part", Limits: []limiter.NamedLimit{{Name: "w", Limit: hourly}}}
	for _, b := range []struct {
		q     limiter.Quota
		units int
	}{{full, 10}, {full, 10}, {part, 10}, {part, 4}} {
		r, err := lim.Reserve(ctx, limiter.Charge{Quota: b.q, Cost: limiter.Cost{"w": b.units}})
		require.NoError(t, err)
		require.True(t, r.OK())
	}
	for deadline := time.Now().Add(5 * time.Second); ; { // the registry's writes (bounded: 5 s)
		st, err := lim.Inspect(ctx, "full", "part")
		require.NoError(t, err)
		if len(st) == 2 && len(st[0].Quota.Limits) > 0 && len(st[1].Quota.Limits) > 0 {
			break
		}
		require.False(t, time.Now().After(deadline), "definitions not written: %+v", st)
		time.Sleep(10 * time.Millisecond)
	}
	env := []string{"REDIS_URL=redis://" + srv.Addr()}
	out, errOut, code := cmd(t, env, "", "status", "--json")
	require.Equal(t, 0, code, errOut)
	var v struct {
		Quotas []struct {
			Name   string `json:"name"`
			Limits []struct {
				FreeMS  int64 `json:"free_ms"`
				ResetMS int64 `json:"reset_ms"`
			} `json:"limits"`
		} `json:"quotas"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	require.Len(t, v.Quotas, 2, out)
	period := time.Hour.Milliseconds()
	for _, q := range v.Quotas {
		require.Len(t, q.Limits, 1, out)
		l := q.Limits[0]
		switch q.Name {
		case "full":
			require.Equal(t, l.ResetMS, l.FreeMS, "full, next booked full: free when the booked window ends")
			require.Greater(t, l.FreeMS, period)
		case "part":
			require.Equal(t, period, l.ResetMS-l.FreeMS, "next window booked in part: free at its start")
			require.Less(t, l.FreeMS, period)
		}
	}
	out, errOut, code = cmd(t, env, "", "status")
	require.Equal(t, 0, code, errOut)
	// FREE IN, then ALL FREE IN: over an hour (rounded up to the minute:
	// 2h00m within a minute of the hour's start) for both limits, except
	// part's FREE IN, under it.
	require.Regexp(t, `(?m)^full +w +fixed +10/1h +10/10 +100% +[12]h\d\dm +[12]h\d\dm$`, out)
	require.Regexp(t, `(?m)^part +w +fixed +10/1h +10/10 +100% +(\d+m|\d+m\d\ds|\d+s|1h00m) +[12]h\d\dm$`, out)
}

// The same fleet on the three-master cluster: every master is scanned, and
// the table is the single server's, line for line.
func TestStatusAndCheckCluster(t *testing.T) {
	c := redistest.NewClusterClient(t)
	prefix := redistest.NewPrefix(t)
	fleet(t, c, prefix)
	var urls []string
	for _, n := range redistest.SharedCluster(t) {
		urls = append(urls, "redis://"+n.Addr())
	}
	env := []string{"REDIS_URL=" + strings.Join(urls, ","), "REDQUOTA_PREFIX=" + prefix}

	out, errOut, code := cmd(t, env, "", "status")
	require.Equal(t, 0, code, errOut)
	golden(t, "status.txt", out)
	out, errOut, code = cmd(t, env, "", "status", "--json")
	require.Equal(t, 0, code, errOut)
	golden(t, "status.json", normalJSON(t, out))

	out, errOut, code = cmd(t, env, "", "check")
	require.Equal(t, 0, code, errOut)
	out = strings.ReplaceAll(out, prefix, "PREFIX")
	golden(t, "check-cluster.txt", regexp.MustCompile(`Redis \d+\.\d+\.\d+`).ReplaceAllString(out, "Redis X.Y.Z"))
}

// A user without rights on the prefix fails the check: exit 1, with the
// grant to make.
func TestCheckFailsForRestrictedUser(t *testing.T) {
	srv := redistest.Private(t)
	admin := srv.Client()
	defer admin.Close()
	require.NoError(t, admin.Do(context.Background(), "acl", "setuser", "app", "on", ">pw", "~other:*", "+@all").Err())
	out, errOut, code := cmd(t, []string{"REDIS_URL=redis://app:pw@" + srv.Addr()}, "", "check", "--json")
	require.Equal(t, 1, code, errOut)
	golden(t, "check-acl.json", regexp.MustCompile(`Redis \d+\.\d+\.\d+`).ReplaceAllString(out, "Redis X.Y.Z"))

	// A wrong password is refused credentials, not an unreachable Redis.
	_, errOut, code = cmd(t, []string{"REDIS_URL=redis://app:wrong@" + srv.Addr()}, "", "status")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "refused the credentials: WRONGPASS")
	require.NotContains(t, errOut, "cannot reach Redis")
	// A right the command needs and the user lacks (SCAN) says the
	// credentials were accepted, and where to look.
	require.NoError(t, admin.Do(context.Background(), "acl", "setuser", "noscan", "on", ">pw", "~rq:*", "+@all", "-scan").Err())
	_, errOut, code = cmd(t, []string{"REDIS_URL=redis://noscan:pw@" + srv.Addr()}, "", "status")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "the credentials were accepted: the ACL user lacks a permission): NOPERM")
	require.Contains(t, errOut, "'redquota check' names the ACL rights the user lacks")
}

// watch for two refreshes: two frames, each with every quota, a bar per
// limit and the hold marked; then it exits 0 by itself (--count).
func TestWatchTwoRefreshes(t *testing.T) {
	srv := redistest.Private(t)
	c := srv.Client()
	defer c.Close()
	fleet(t, c, "rq")
	env := []string{"REDIS_URL=redis://" + srv.Addr()}
	out, errOut, code := cmd(t, env, "", "watch", "--count", "2", "--interval", "100ms")
	require.Equal(t, 0, code, errOut)
	frames := strings.Split(strings.TrimSuffix(out, "\n"), "\n\nredquota watch")
	require.Len(t, frames, 2, out)
	for _, f := range frames {
		require.Contains(t, f, "prefix rq")
		require.Regexp(t, `kraken +HOLD +!! held for (30|29)m !! +reason: exchange maintenance \(alice@desk\)`, f)
		require.Regexp(t, `coinbase +private +\[#{30}\] +30/30 100%`, f)
		require.Regexp(t, `binance +weight +\[#{12}\.{18}\] +2400/6000 40%`, f)
		require.Regexp(t, `okx +public +\[\.{30}\] +0/600 0%`, f)
		require.NotContains(t, f, "\x1b[", "escape sequences on a non-terminal")
	}
}

// Ctrl-C (SIGINT) ends watch at once, exit 0.
func TestWatchInterrupt(t *testing.T) {
	srv := redistest.Private(t)
	c := exec.Command(binary, "watch")
	c.Env = []string{"REDIS_URL=redis://" + srv.Addr()}
	out := &lockedBuffer{}
	c.Stdout = out
	require.NoError(t, c.Start())
	// Bounded: the first frame within 10 s.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "no quotas yet"); {
		require.False(t, time.Now().After(deadline), "no first frame: %q", out.String())
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, c.Process.Signal(syscall.SIGINT))
	require.NoError(t, c.Wait())
}

// A Redis that goes away under watch is shown as unreachable, and watched
// again: the view comes back when Redis does, and Ctrl-C still exits 0. (It
// used to exit 2 at the first failed refresh.)
func TestWatchOutlivesRedis(t *testing.T) {
	srv := redistest.Private(t)
	c := exec.Command(binary, "watch", "--interval", "100ms")
	c.Env = []string{"REDIS_URL=redis://" + srv.Addr()}
	out := &lockedBuffer{}
	c.Stdout, c.Stderr = out, out
	require.NoError(t, c.Start())
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	// Bounded waits: each state shows within 10 s (a refresh is 100 ms,
	// a dial to a dead port fails at once).
	waitFor := func(from int, text string) int {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			if i := strings.Index(out.String()[from:], text); i >= 0 {
				return from + i + len(text)
			}
			select {
			case err := <-exited:
				t.Fatalf("watch exited (%v) before showing %q: %q", err, text, out.String())
			default:
			}
			require.False(t, time.Now().After(deadline), "no %q: %q", text, out.String())
			time.Sleep(10 * time.Millisecond)
		}
	}
	at := waitFor(0, "no quotas yet")
	srv.Stop()
	at = waitFor(at, "Redis unreachable, trying again every 100ms")
	require.NoError(t, srv.Start())
	waitFor(at, "no quotas yet")
	require.NoError(t, c.Process.Signal(syscall.SIGINT))
	require.NoError(t, <-exited)
}

// lockedBuffer is a bytes.Buffer safe to read while a process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// hold, release and reset are the library's operations: every process sees
// them; each asks for confirmation unless --yes, and a "no" changes nothing.
func TestHoldReleaseReset(t *testing.T) {
	srv := redistest.Private(t)
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	fleet(t, c, "rq")
	lim := limiter.New(c, limiter.Options{})
	binance := limiter.Quota{Name: "binance", Limits: []limiter.NamedLimit{
		{Name: "weight", Limit: limiter.Limit{Rate: 6000, Period: time.Hour, Burst: 6000, Algorithm: limiter.FixedWindow}},
		{Name: "orders", Limit: limiter.PerDay(500)},
	}}
	env := []string{"REDIS_URL=redis://" + srv.Addr(), "REDQUOTA_OPERATOR=bob", "REDQUOTA_HOST=ops1"}

	// Declined: nothing held, exit 1.
	out, _, code := cmd(t, env, "n\n", "hold", "binance", "10m")
	require.Equal(t, 1, code)
	require.Contains(t, out, "Hold binance for 10m0s?")
	r, err := lim.Allow(ctx, limiter.Charge{Quota: binance, Cost: limiter.Cost{"weight": 1}})
	require.NoError(t, err)
	require.True(t, r.Allowed)

	out, errOut, code := cmd(t, env, "y\n", "hold", "binance", "10m", "--reason", "deploy")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "binance held for 10m: deploy (bob@ops1)")
	require.NotContains(t, errOut, "no process has decided", "binance is in use: no warning")
	r, err = lim.Allow(ctx, limiter.Charge{Quota: binance, Cost: limiter.Cost{"weight": 1}})
	require.NoError(t, err)
	require.Equal(t, limiter.HoldName, r.DeniedBy, "a process sees the hold")

	out, errOut, code = cmd(t, env, "", "release", "binance", "--yes")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "binance released\n", out)
	r, err = lim.Allow(ctx, limiter.Charge{Quota: binance, Cost: limiter.Cost{"weight": 1}})
	require.NoError(t, err)
	require.True(t, r.Allowed, "a process sees the release")

	// A name no process uses (a typo) is held, as asked, but the operator is
	// told before the question; a template held without --key is told which
	// keys its processes use.
	out, errOut, code = cmd(t, env, "", "hold", "binanse", "1m", "--yes")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "binanse held for 1m")
	require.Equal(t, "redquota hold: no process has decided on binanse under prefix \"rq\" lately (check the name, --key and --prefix)\n", errOut)
	_, errOut, code = cmd(t, env, "n\n", "hold", "pair", "1m")
	require.Equal(t, 1, code, "declined")
	require.Contains(t, errOut, "no process has decided on pair under prefix \"rq\" lately; its instances in use are --key XBT/USD")

	// An instance of a template: --key.
	out, errOut, code = cmd(t, env, "", "hold", "pair", "5m", "--key", "XBT/USD", "--yes")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "pair[XBT/USD] held for 5m00s: set with redquota by bob@ops1")
	held, err := holdtest.Left(ctx, lim, "pair", "XBT/USD")
	require.NoError(t, err)
	require.Positive(t, held)
	out, errOut, code = cmd(t, env, "", "reset", "pair", "--key", "XBT/USD", "--yes")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "pair[XBT/USD] reset\n", out)
	st, err := lim.Inspect(ctx, "pair")
	require.NoError(t, err)
	require.Zero(t, st[0].Hold)
	require.Equal(t, 15, st[0].Limits[0].Remaining)

	// reset: coinbase was exhausted; after it, full again.
	out, errOut, code = cmd(t, env, "", "reset", "--yes", "coinbase")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "coinbase reset\n", out)
	st, err = lim.Inspect(ctx, "coinbase")
	require.NoError(t, err)
	require.Equal(t, 30, st[0].Limits[0].Remaining)
	// A single key resets too; an unknown name is refused.
	_, errOut, code = cmd(t, env, "", "reset", "--yes", "user:42")
	require.Equal(t, 0, code, errOut)
	_, errOut, code = cmd(t, env, "", "reset", "--yes", "nowhere")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `no definition of "nowhere"`)
}

// help prints the usage on stdout and exits 0, as -h does.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		out, errOut, code := cmd(t, nil, "", args...)
		require.Equal(t, 0, code, "%v: %s", args, errOut)
		require.Contains(t, out+errOut, "usage: redquota", args)
		require.Contains(t, out+errOut, "--count N", args)
	}
}

// With no variable naming a Redis, a connection error says that the
// default was used and what to set.
func TestConfigured(t *testing.T) {
	env := func(kv ...string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1], true
				}
			}
			return "", false
		}
	}
	require.False(t, configured(env()))
	require.False(t, configured(env("REDIS_URL", "", "REDIS_DB", "3")))
	require.True(t, configured(env("REDIS_URL", "redis://x:1")))
	require.True(t, configured(env("REDIS_HOST", "x")))
	require.True(t, configured(env("REDIS_PORT", "7000")))
}

// Usage and connection errors exit 2 and say what is wrong.
func TestUsageAndConnectionErrors(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, nil, "usage: redquota"},
		{nil, []string{"frob"}, `unknown command "frob"`},
		{nil, []string{"hold", "x"}, "wrong number of arguments"},
		{nil, []string{"hold", "x", "soon"}, `duration "soon"`},
		{nil, []string{"status", "--nope"}, "flag provided but not defined"},
		{[]string{"REDIS_URL=http://x"}, []string{"status"}, "REDIS_URL must start with"},
		{[]string{"REDIS_URL=redis://127.0.0.1:1"}, []string{"status"}, "cannot reach Redis"},
	} {
		_, errOut, code := cmd(t, tc.env, "", tc.args...)
		require.Equal(t, 2, code, "%v %v", tc.env, tc.args)
		require.Contains(t, errOut, tc.want)
		// The command's own message only: no go-redis log lines
		// ("redis: … pool.go:770: … failed to dial") before it.
		require.NotContains(t, errOut, "pool.go", "%v %v", tc.env, tc.args)
	}
}

// Over TLS (rediss://, a private CA) as an ACL user limited to the prefix:
// status reads the fleet and check passes, as the library is configured.
func TestTLSAndACLUser(t *testing.T) {
	redistest.Shared(t) // skips, or fails under REDQUOTA_REQUIRE_REDIS, without redis-server
	srv, files, tlsPort, err := redistest.StartTLSServer(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	admin := srv.Client()
	defer admin.Close()
	require.NoError(t, admin.Do(context.Background(), "acl", "setuser", "ops", "on", ">s3cret", "~rq:*", "+@all", "-@dangerous").Err())
	fleet(t, admin, "rq")
	env := []string{fmt.Sprintf("REDIS_URL=rediss://ops:s3cret@127.0.0.1:%d", tlsPort), "REDIS_TLS_CA_FILE=" + files.CA}
	out, errOut, code := cmd(t, env, "", "status")
	require.Equal(t, 0, code, errOut)
	golden(t, "status.txt", out)
	out, errOut, code = cmd(t, env, "", "check")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "PASS  acl          may read, write, script and SCAN rq:*")
	// Without the CA the certificate is refused: a connection error, exit 2.
	_, errOut, code = cmd(t, env[:1], "", "status")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "certificate")
}

// A database past the server's "databases" is a Redis that answered, not
// one that cannot be reached: the message says which setting to fix.
func TestDatabaseOutOfRange(t *testing.T) {
	srv := redistest.Shared(t)
	for _, env := range [][]string{
		{"REDIS_URL=redis://" + srv.Addr() + "/99"},
		{"REDIS_HOST=127.0.0.1", fmt.Sprintf("REDIS_PORT=%d", srv.Port()), "REDIS_DB=99"},
	} {
		_, errOut, code := cmd(t, env, "", "status")
		require.Equal(t, 2, code, errOut)
		require.NotContains(t, errOut, "cannot reach Redis", env)
		require.Contains(t, errOut, "refused database 99: ERR DB index is out of range", env)
		require.Contains(t, errOut, "databases setting", env)
	}
}
