// Command redquota is the operator's view of a fleet's quotas: which quota is
// full, which of its limits, until when, whether a hold is in force and why;
// and the operations to act on them — hold, release, reset — which are the
// library's own, so every process sees them at once.
//
//	redquota status [--json] [QUOTA…]    every quota in use, fullest first
//	redquota watch [--interval 1s] [--count N] [QUOTA…]   the same, live
//	redquota hold QUOTA DURATION [--reason TEXT] [--key K]
//	redquota release QUOTA [--key K]
//	redquota reset QUOTA [--key K]
//	redquota check [--json]              the Redis server's settings, pass/warn/fail
//
// It is configured like the library (package config): REDIS_URL, or the
// REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, REDIS_DB variables; several URLs or
// REDIS_CLUSTER=1 for a cluster; rediss:// for TLS (REDIS_TLS_CA_FILE for a
// private CA); a user name in the URL for an ACL user. --prefix (default
// $REDQUOTA_PREFIX, else "rq") is the limiter's Options.Prefix.
//
// hold, release and reset ask for confirmation unless --yes is given.
// Exit codes: 0 ok; 1 a check failed, the operator declined, or reset found
// no such quota; 2 a usage error or Redis could not be reached.
//
// Install with go install github.com/redquota/redquota/cmd/redquota@latest.
//
// The flags are parsed with the standard library's flag package: six
// commands with a handful of flags each do not need cobra's dependency tree,
// and flag's -h output is what Go users expect.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/config"
	"github.com/redquota/redquota/internal/bound"
	"github.com/redquota/redquota/limiter"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a check failed, the operator declined, or reset found no such quota
	exitUsage  = 2 // a usage error, or Redis could not be reached
)

func main() {
	// go-redis logs each failed dial on its own ("pool.go:770: … failed to
	// dial"), before the command's own one-line error says the same.
	redis.SetLogger(quiet{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	code := run(ctx, os.Args[1:], env{lookup: os.LookupEnv, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, tty: isTerminal(os.Stdout)})
	stop()
	os.Exit(code)
}

// quiet is a go-redis logger that drops what go-redis logs: the command
// reports every failure itself.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// env is what a run reads and writes, so tests can run it in process.
type env struct {
	lookup         func(string) (string, bool)
	stdin          io.Reader
	stdout, stderr io.Writer
	tty            bool // stdout is a terminal: clear the screen, highlight holds
}

const usage = `usage: redquota [--prefix P] COMMAND [flags] [args]

commands:
  status [--json] [QUOTA...]             every quota in use, fullest first
  watch [--interval 1s] [QUOTA...]       the same, live, with a bar per limit (Ctrl-C quits)
        (watch: --count N stops after N refreshes)
  hold QUOTA DURATION [--reason TEXT]    stop every grant of QUOTA for DURATION (e.g. 5m)
  release QUOTA                          end the hold on QUOTA now
  reset QUOTA                            forget QUOTA's counts and hold
        (hold, release, reset: --key K for the instance of a template for key K)
  check [--json]                         the Redis server's settings: pass / warn / fail

Redis is configured like the library: REDIS_URL (several URLs or REDIS_CLUSTER=1
for a cluster, rediss:// for TLS, user:password@ for ACL users), or REDIS_HOST,
REDIS_PORT, REDIS_PASSWORD, REDIS_DB. --prefix defaults to $REDQUOTA_PREFIX, else "rq".
hold, release and reset ask for confirmation unless --yes.
Exit codes: 0 ok, 1 a check failed, declined or no such quota to reset,
2 usage or connection error.
`

// opts are the flags every command accepts.
type opts struct {
	prefix   string
	json     bool
	yes      bool
	reason   string
	key      string
	interval time.Duration
	count    int
}

func run(ctx context.Context, args []string, e env) int {
	prefix := "rq"
	if p, ok := e.lookup("REDQUOTA_PREFIX"); ok && p != "" {
		prefix = p
	}
	// Flags may come before the command, after it, or among its arguments.
	var o opts
	fs := flag.NewFlagSet("redquota", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(e.stderr, usage) }
	fs.StringVar(&o.prefix, "prefix", prefix, "key prefix of the limiters (Options.Prefix)")
	fs.BoolVar(&o.json, "json", false, "status, check: print JSON")
	fs.BoolVar(&o.yes, "yes", false, "hold, release, reset: do not ask for confirmation")
	fs.StringVar(&o.reason, "reason", "", "hold: why, recorded with the hold (who is added)")
	fs.StringVar(&o.key, "key", "", "hold, release, reset: the instance of a quota template for this key (Quota.For)")
	fs.DurationVar(&o.interval, "interval", time.Second, "watch: time between refreshes")
	fs.IntVar(&o.count, "count", 0, "watch: stop after this many refreshes (0: until Ctrl-C)")
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if len(pos) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	if pos[0] == "help" {
		fmt.Fprint(e.stdout, usage)
		return exitOK
	}
	cmd, rest := pos[0], pos[1:]
	want := map[string][2]int{ // command → min, max arguments (-1: any)
		"status": {0, -1}, "watch": {0, -1}, "check": {0, 0},
		"hold": {2, 2}, "release": {1, 1}, "reset": {1, 1},
	}
	n, ok := want[cmd]
	if !ok {
		fmt.Fprintf(e.stderr, "redquota: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	if len(rest) < n[0] || n[1] >= 0 && len(rest) > n[1] {
		fmt.Fprintf(e.stderr, "redquota %s: wrong number of arguments\n\n%s", cmd, usage)
		return exitUsage
	}
	if o.prefix == "" {
		o.prefix = "rq" // as limiter.Options does: say so in what is printed
	}
	if o.interval <= 0 || o.count < 0 {
		fmt.Fprintln(e.stderr, "redquota: --interval must be > 0 and --count ≥ 0")
		return exitUsage
	}
	var holdFor time.Duration
	if cmd == "hold" {
		d, err := time.ParseDuration(rest[1])
		if err != nil || d <= 0 || d > bound.Hold {
			fmt.Fprintf(e.stderr, "redquota hold: duration %q must be like 30s or 5m, > 0 and ≤ %s\n", rest[1], bound.Hold)
			return exitUsage
		}
		holdFor = d
	}

	cfg, err := config.Parse(e.lookup)
	if err != nil {
		fmt.Fprintln(e.stderr, "redquota:", err)
		return exitUsage
	}
	client := cfg.NewClient()
	defer client.Close()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err = client.Ping(pctx).Err()
	cancel()
	if err != nil && refusedCredentials(err) {
		fmt.Fprintf(e.stderr, "redquota: Redis (%s) refused the credentials: %v\n", cfg, err)
		fmt.Fprintln(e.stderr, "redquota: check the user and password of REDIS_URL (redis://user:password@host:port), or REDIS_PASSWORD")
		return exitUsage
	}
	if err != nil && refusedDatabase(err) {
		fmt.Fprintf(e.stderr, "redquota: Redis (%s) refused database %d: %v\n", cfg, cfg.DB, err)
		fmt.Fprintln(e.stderr, "redquota: the database number (REDIS_URL's /N, or REDIS_DB) must be below the server's databases setting (16 by default)")
		return exitUsage
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "redquota: cannot reach Redis (%s): %v\n", cfg, err)
		if !configured(e.lookup) {
			fmt.Fprintln(e.stderr, "redquota: REDIS_URL is not set, so this was the default localhost:6379: set REDIS_URL=redis://[user:password@]host:port[/db] (or REDIS_HOST and REDIS_PORT)")
		}
		return exitUsage
	}
	lim := limiter.New(client, limiter.Options{Prefix: o.prefix})
	a := &app{env: e, o: o, lim: lim, client: client}
	switch cmd {
	case "status":
		return a.status(ctx, rest)
	case "watch":
		return a.watch(ctx, rest)
	case "check":
		return a.check(ctx)
	case "hold":
		return a.hold(ctx, rest[0], holdFor)
	case "release":
		return a.release(ctx, rest[0])
	default:
		return a.reset(ctx, rest[0])
	}
}

// configured reports whether any variable says where Redis is.
func configured(lookup func(string) (string, bool)) bool {
	for _, k := range []string{"REDIS_URL", "REDIS_HOST", "REDIS_PORT"} {
		if v, ok := lookup(k); ok && v != "" {
			return true
		}
	}
	return false
}

// app is one run's connection and options.
type app struct {
	env
	o      opts
	lim    *limiter.Limiter
	client redis.UniversalClient
}

// fail reports err and returns exitUsage: Redis failed under the command.
func (a *app) fail(cmd string, err error) int {
	fmt.Fprintf(a.stderr, "redquota %s: %v\n", cmd, err)
	if errors.Is(err, limiter.ErrAuth) {
		fmt.Fprintln(a.stderr, "redquota: 'redquota check' names the ACL rights the user lacks, and the ACL SETUSER that grants them")
	}
	return exitUsage
}

// refusedCredentials reports whether Redis answered a PING by refusing the
// client's password or user: Redis was reached.
func refusedCredentials(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return strings.HasPrefix(msg, "WRONGPASS") || strings.HasPrefix(msg, "NOAUTH")
}

// refusedDatabase reports whether err is Redis refusing the SELECT of a
// database it does not have: Redis answered, so it is not unreachable.
func refusedDatabase(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(re.Error(), "DB index is out of range")
}

// confirm asks question unless --yes, and reports whether to go on.
func (a *app) confirm(question string) bool {
	if a.o.yes {
		return true
	}
	fmt.Fprintf(a.stdout, "%s [y/N] ", question)
	var line [64]byte
	n, _ := a.stdin.Read(line[:])
	ans := strings.ToLower(strings.TrimSpace(string(line[:n])))
	if ans == "y" || ans == "yes" {
		return true
	}
	fmt.Fprintln(a.stdout, "not done")
	return false
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
