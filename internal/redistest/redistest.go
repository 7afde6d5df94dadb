// Package redistest gives tests the Redis backends redquota runs on: an
// embedded miniredis, a real redis-server started on a free loopback port, and a
// real three-master Redis Cluster started the same way.
//
// Real servers are shared by the tests of one package: call Main from TestMain
// so they are stopped when the package's tests end. Tests that share a server
// keep apart by using the unique Prefix each Backend carries.
//
// When redis-server is not installed, tests that need it skip with a message
// naming the Debian package; with REDQUOTA_REQUIRE_REDIS=1 they fail instead.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// RequireEnv is the variable that turns a missing redis-server from a skip into a failure.
const RequireEnv = "REDQUOTA_REQUIRE_REDIS"

// Kind names a backend.
type Kind string

// The backends a test can run on.
const (
	Mini    Kind = "miniredis"
	Real    Kind = "redis"
	Cluster Kind = "cluster"
)

// Backend is one Redis a test body runs against.
type Backend struct {
	Kind   Kind
	Client redis.UniversalClient
	// Mini is set for the miniredis backend, so tests can control its clock.
	Mini *miniredis.Miniredis
	// Server is set for the real single-node backend.
	Server *Server
	// ClusterNodes is set for the cluster backend.
	ClusterNodes []*Server
	// Prefix is unique per test and backend; use it as the key prefix.
	Prefix string
}

var (
	mu         sync.Mutex
	shared     *Server
	sharedErr  error
	cluster    []*Server
	clusterErr error
	prefixSeq  atomic.Int64
	stopAll    []func()
)

// Main runs the package's tests and stops the servers they started. Use it as
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	StopAll()
	os.Exit(code)
}

// StopAll stops every server this package started.
func StopAll() {
	mu.Lock()
	defer mu.Unlock()
	for i := len(stopAll) - 1; i >= 0; i-- {
		stopAll[i]()
	}
	stopAll = nil
	shared, cluster = nil, nil
}

// Register arranges for stop to run when StopAll runs (at the end of Main),
// for servers a test or benchmark starts on its own.
func Register(stop func()) {
	mu.Lock()
	defer mu.Unlock()
	stopAll = append(stopAll, stop)
}

// Available reports whether redis-server is on the PATH.
func Available() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

// Required reports whether REDQUOTA_REQUIRE_REDIS asks real-Redis tests to fail, not skip.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// need skips (or fails, when required) a test that needs redis-server.
func need(tb testing.TB) {
	tb.Helper()
	if Available() {
		return
	}
	msg := "redis-server not found: install the Debian package redis-server (apt-get install -y redis-server redis-tools)"
	if Required() {
		tb.Fatalf("%s; %s=1 makes this a failure", msg, RequireEnv)
	}
	tb.Skip(msg)
}

// NewPrefix returns a key prefix unique within this test binary.
func NewPrefix(tb testing.TB) string {
	name := strings.NewReplacer("/", "_", " ", "_", "{", "_", "}", "_", ":", "_").Replace(tb.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	return fmt.Sprintf("t%d_%s", prefixSeq.Add(1), name)
}

// NewMini starts an embedded miniredis for this test and returns it with a client.
func NewMini(tb testing.TB) (*miniredis.Miniredis, *redis.Client) {
	tb.Helper()
	m := miniredis.RunT(tb)
	// miniredis runs in the test's process: on a loaded machine under -race
	// one of its script calls has taken past 2 s (a 1000-key batch; a
	// decision at load average 18). A stopped miniredis still fails a call
	// at once (connection refused or reset); nothing here waits on a hung one.
	o := ClientOptions(m.Addr())
	o.ReadTimeout, o.WriteTimeout = 10*time.Second, 10*time.Second
	c := redis.NewClient(o)
	c.AddHook(SlotCheck{})
	tb.Cleanup(func() { _ = c.Close() })
	return m, c
}

// ClientOptions are the options test clients use: short timeouts and few
// retries so that a stopped server fails a test quickly.
func ClientOptions(addr string) *redis.Options {
	return &redis.Options{
		Addr:            addr,
		DialTimeout:     time.Second,
		ReadTimeout:     2 * time.Second,
		WriteTimeout:    2 * time.Second,
		PoolSize:        64,
		MaxRetries:      1,
		MinRetryBackoff: time.Millisecond,
		MaxRetryBackoff: 10 * time.Millisecond,
		DialerRetries:   1,
		// Without it go-redis ignores context deadlines on reads and writes.
		ContextTimeoutEnabled: true,
	}
}

// Shared returns the package's shared real redis-server, starting it on first use.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	need(tb)
	mu.Lock()
	defer mu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = StartServer()
		if sharedErr == nil {
			s := shared
			stopAll = append(stopAll, s.Close)
		}
	}
	if sharedErr != nil {
		tb.Fatalf("redistest: start redis-server: %v", sharedErr)
	}
	return shared
}

// Private starts a redis-server of the test's own, stopped when the test ends:
// for faults (stops, restarts, memory limits) that must not disturb the
// package's shared server. It skips or fails like Shared when redis-server is
// missing.
func Private(tb testing.TB, args ...string) *Server {
	tb.Helper()
	need(tb)
	s, err := StartServer(args...)
	if err != nil {
		tb.Fatalf("redistest: start redis-server: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// PrivateCluster starts a three-master cluster of the test's own, stopped when
// it ends: for a test that stops or restarts nodes, which the shared cluster
// must not see.
func PrivateCluster(tb testing.TB) []*Server {
	tb.Helper()
	need(tb)
	nodes, err := StartCluster(3)
	if err != nil {
		tb.Fatalf("redistest: start cluster: %v", err)
	}
	tb.Cleanup(func() {
		for _, n := range nodes {
			n.Close()
		}
	})
	return nodes
}

// NewReal returns a client of the shared real redis-server.
func NewReal(tb testing.TB) *redis.Client {
	tb.Helper()
	s := Shared(tb)
	c := redis.NewClient(ClientOptions(s.Addr()))
	c.AddHook(SlotCheck{})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// SharedCluster returns the package's shared three-master cluster, starting it on first use.
func SharedCluster(tb testing.TB) []*Server {
	tb.Helper()
	need(tb)
	mu.Lock()
	defer mu.Unlock()
	if cluster == nil && clusterErr == nil {
		cluster, clusterErr = StartCluster(3)
		if clusterErr == nil {
			nodes := cluster
			stopAll = append(stopAll, func() {
				for _, n := range nodes {
					n.Close()
				}
			})
		}
	}
	if clusterErr != nil {
		tb.Fatalf("redistest: start cluster: %v", clusterErr)
	}
	return cluster
}

// NewClusterClient returns a client of the shared cluster.
func NewClusterClient(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	nodes := SharedCluster(tb)
	c := redis.NewClusterClient(ClusterOptions(nodes))
	tb.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return m.Ping(ctx).Err() }); err != nil {
		tb.Fatalf("redistest: cluster not reachable: %v", err)
	}
	return c
}

// ClusterOptions are the options test cluster clients use.
func ClusterOptions(nodes []*Server) *redis.ClusterOptions {
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr()
	}
	o := ClientOptions("")
	return &redis.ClusterOptions{
		Addrs:                 addrs,
		DialTimeout:           o.DialTimeout,
		ReadTimeout:           o.ReadTimeout,
		WriteTimeout:          o.WriteTimeout,
		PoolSize:              o.PoolSize,
		MaxRetries:            o.MaxRetries,
		MinRetryBackoff:       o.MinRetryBackoff,
		MaxRetryBackoff:       o.MaxRetryBackoff,
		DialerRetries:         o.DialerRetries,
		MaxRedirects:          3,
		ContextTimeoutEnabled: true,
	}
}

// Each runs body as a subtest on every backend available: miniredis always, the
// shared real redis-server and the shared cluster when redis-server is installed
// (or fails the test when REDQUOTA_REQUIRE_REDIS=1 and it is not). Each
// subtest gets its own Prefix.
func Each(t *testing.T, body func(t *testing.T, b Backend)) {
	t.Helper()
	t.Run(string(Mini), func(t *testing.T) {
		m, c := NewMini(t)
		body(t, Backend{Kind: Mini, Client: c, Mini: m, Prefix: NewPrefix(t)})
	})
	t.Run(string(Real), func(t *testing.T) {
		c := NewReal(t)
		body(t, Backend{Kind: Real, Client: c, Server: Shared(t), Prefix: NewPrefix(t)})
	})
	t.Run(string(Cluster), func(t *testing.T) {
		c := NewClusterClient(t)
		body(t, Backend{Kind: Cluster, Client: c, ClusterNodes: SharedCluster(t), Prefix: NewPrefix(t)})
	})
}

// EachReal is Each without miniredis, for behaviour miniredis does not model
// (INFO commandstats, SCRIPT FLUSH across a cluster, server restarts).
func EachReal(t *testing.T, body func(t *testing.T, b Backend)) {
	t.Helper()
	t.Run(string(Real), func(t *testing.T) {
		c := NewReal(t)
		body(t, Backend{Kind: Real, Client: c, Server: Shared(t), Prefix: NewPrefix(t)})
	})
	t.Run(string(Cluster), func(t *testing.T) {
		c := NewClusterClient(t)
		body(t, Backend{Kind: Cluster, Client: c, ClusterNodes: SharedCluster(t), Prefix: NewPrefix(t)})
	})
}

// errNotReady is returned while a server does not answer yet.
var errNotReady = errors.New("redistest: server not ready")
