// Package exampleenv gives redquota's examples their Redis: an embedded
// miniredis started in the example's own process, unless REDIS_URL is set, in
// which case every client is built by package config from REDIS_URL and the
// other REDIS_* variables (a cluster when REDIS_URL lists several URLs).
//
// The examples never start or look for a redis-server: with REDIS_URL unset
// they need nothing but Go.
package exampleenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/config"
	"github.com/redquota/redquota/telemetry"
	"github.com/redquota/redquota/telemetry/prom"
)

// URLEnv is the variable that, when set and not empty, points the examples at
// a real Redis or cluster instead of the embedded miniredis.
const URLEnv = "REDIS_URL"

// Env is where an example's Redis lives. Its clients are independent, each with
// its own connection pool, as separate processes would have.
type Env struct {
	cfg  config.Config
	mini *miniredis.Miniredis
}

// Start returns the example's Redis. With REDIS_URL unset or empty it starts an
// embedded miniredis on a free loopback port, whose key TTLs follow the wall
// clock (miniredis only expires keys on FastForward otherwise, and a cache
// whose values never expire would fetch nothing). With REDIS_URL set it reads
// the configuration with config.FromEnv and checks that Redis answers a PING
// within ctx's deadline, or 3 s.
func Start(ctx context.Context) (*Env, error) {
	// go-redis logs every failed dial on its own ("pool.go:770: … failed to
	// dial"): hundreds of lines when Redis goes away under the demo, before
	// the examples' own report of the errors (a count, and the first).
	redis.SetLogger(quiet{})
	if os.Getenv(URLEnv) == "" {
		m := miniredis.NewMiniRedis()
		if err := m.Start(); err != nil {
			return nil, fmt.Errorf("exampleenv: start embedded miniredis: %w", err)
		}
		m.ClockTTL(true)
		url := "redis://" + m.Addr()
		// The client's own settings still count; where Redis is does not.
		cfg, err := config.Parse(func(k string) (string, bool) {
			switch k {
			case URLEnv:
				return url, true
			case "REDIS_SOCKET_TIMEOUT", "REDIS_MAX_CONNECTIONS":
				return os.LookupEnv(k)
			}
			return "", false
		})
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("exampleenv: %w", err)
		}
		return &Env{cfg: cfg, mini: m}, nil
	}
	cfg, err := config.FromEnv()
	if err != nil {
		return nil, fmt.Errorf("exampleenv: %w", err)
	}
	e := &Env{cfg: cfg}
	rdb := e.NewClient()
	defer rdb.Close()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		if m := err.Error(); strings.HasPrefix(m, "WRONGPASS") || strings.HasPrefix(m, "NOAUTH") {
			return nil, fmt.Errorf("exampleenv: Redis (%s) refused the credentials: check the user and password in %s: %w", e, URLEnv, err)
		}
		return nil, fmt.Errorf("exampleenv: %s is set but Redis (%s) does not answer: %w", URLEnv, e, err)
	}
	return e, nil
}

// quiet is a go-redis logger that drops what go-redis logs.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// Embedded reports whether the Redis is the embedded miniredis.
func (e *Env) Embedded() bool { return e.mini != nil }

// String describes the Redis in use, with any password redacted.
func (e *Env) String() string {
	if e.mini != nil {
		return "embedded miniredis at " + e.mini.Addr() + " (set " + URLEnv + " to use a real Redis or cluster)"
	}
	kind := "Redis"
	if e.cfg.Cluster {
		kind = "Redis Cluster"
	}
	scheme := "redis://"
	if e.cfg.TLS {
		scheme = "rediss://"
	}
	return fmt.Sprintf("%s at %s%s (from %s)", kind, scheme, strings.Join(e.cfg.Addrs, ","), URLEnv)
}

// WatchCommand is the command that shows, live, the quotas an example keeps
// under prefix: redquota watch, pointed at this Redis. For the embedded
// miniredis it names its address; for REDIS_URL it relies on the variable
// already set (never echoing a password).
func (e *Env) WatchCommand(prefix string) string {
	cmd := "go run ./cmd/redquota watch --prefix " + prefix
	if e.mini != nil {
		return URLEnv + "=redis://" + e.mini.Addr() + " " + cmd
	}
	return cmd + "   (with the same " + URLEnv + ")"
}

// NewClient returns a new client with go-redis retries on (config's default
// MaxRetries), for caches: a read retried after a timeout is harmless.
func (e *Env) NewClient() redis.UniversalClient { return e.cfg.NewClient() }

// NewLimiterClient returns a new client with go-redis retries off
// (MaxRetries -1), the client the limiter's documentation recommends: a
// decision is never sent twice, so the limiter needs no per-call dedupe key
// (limiter.Options.DedupeWindow) and its failure policy sees a dead Redis
// within one socket timeout.
func (e *Env) NewLimiterClient() redis.UniversalClient {
	c := e.cfg
	c.MaxRetries = -1
	return c.NewClient()
}

// Close stops the embedded miniredis, if any. Close the clients first.
func (e *Env) Close() {
	if e.mini != nil {
		e.mini.Close()
	}
}

// Prefix returns a key prefix for one run of an example, unique to it, so that
// a run on a shared Redis never reads what an earlier run left (every key
// redquota writes has a TTL, so nothing stays behind for long).
func Prefix(example string) string {
	return fmt.Sprintf("rqex:%s:%x", example, time.Now().UnixNano())
}

// MetricsFlag is the usage text of the examples' -metrics flag.
const MetricsFlag = "serve Prometheus metrics on this address (e.g. :9464, path /metrics); empty: off"

// ServeMetrics serves the library's metrics for Prometheus on addr at /metrics,
// with telemetry/prom, and returns the Providers to give every limiter, cache,
// market and Transport (and InstrumentClient) so that they report there, and a
// function that stops serving. With addr empty it serves nothing and returns
// zero Providers (the global ones, no-ops unless the program sets them).
func ServeMetrics(addr string) (telemetry.Providers, func(), error) {
	if addr == "" {
		return telemetry.Providers{}, func() {}, nil
	}
	h, providers, err := prom.New()
	if err != nil {
		return telemetry.Providers{}, nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return telemetry.Providers{}, nil, fmt.Errorf("exampleenv: metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return providers, func() { _ = srv.Close() }, nil
}

// Instrument adds redisotel's metrics and spans to each client, reporting to
// p; with p zero (no -metrics) it does nothing.
func Instrument(p telemetry.Providers, clients ...redis.UniversalClient) error {
	if p == (telemetry.Providers{}) {
		return nil
	}
	for _, c := range clients {
		if err := telemetry.InstrumentClient(c, p); err != nil {
			return err
		}
	}
	return nil
}
