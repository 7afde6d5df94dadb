package redistest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process this package started: its own temp dir, no
// persistence, bound to loopback. Stop and Start restart it on the same port.
type Server struct {
	port    int
	dir     string
	args    []string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	stderr  bytes.Buffer
	ownsDir bool
}

// StartServer starts a redis-server on a free loopback port. extra are more
// "--name value" arguments.
func StartServer(extra ...string) (*Server, error) {
	dir, err := os.MkdirTemp("", "redquota-redis-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &Server{port: port, dir: dir, args: extra, ownsDir: true}
		if lastErr = s.Start(); lastErr == nil {
			return s, nil
		}
	}
	_ = os.RemoveAll(dir)
	return nil, lastErr
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the server's TCP port.
func (s *Server) Port() int { return s.port }

// Dir is the server's working directory.
func (s *Server) Dir() string { return s.dir }

// Start starts the server process (again, after Stop) and waits until it answers PING.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--enable-debug-command", "local",
		"--loglevel", "warning",
	}
	args = append(args, s.args...)
	cmd := exec.Command("redis-server", args...)
	s.stderr.Reset()
	cmd.Stdout = &s.stderr
	cmd.Stderr = &s.stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	if err := waitReady(s.Addr(), done, 10*time.Second); err != nil {
		_ = cmd.Process.Kill()
		<-done
		s.cmd = nil
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(s.stderr.String()))
	}
	return nil
}

// Stop kills the server process (SIGKILL: no goodbye to clients) and waits for it to exit.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Close stops the server and removes its directory.
func (s *Server) Close() {
	s.Stop()
	if s.ownsDir {
		_ = os.RemoveAll(s.dir)
	}
}

// Client returns a new client of this server; the caller closes it.
func (s *Server) Client() *redis.Client { return redis.NewClient(ClientOptions(s.Addr())) }

func waitReady(addr string, exited <-chan struct{}, limit time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond, DialerRetries: 1})
	defer c.Close()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("redistest: redis-server exited at start")
		default:
		}
		// Dial first: go-redis logs every failed dial to stderr, which is
		// the benchmark output that benchstat reads, and a log line between
		// two samples splits them.
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err = c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errNotReady
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartCluster starts n redis-server processes in cluster mode, assigns the
// 16384 slots evenly, joins them, and waits for cluster_state:ok on every node.
func StartCluster(n int) ([]*Server, error) {
	nodes := make([]*Server, 0, n)
	fail := func(err error) ([]*Server, error) {
		for _, s := range nodes {
			s.Close()
		}
		return nil, err
	}
	for i := 0; i < n; i++ {
		s, err := StartServer("--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000")
		if err != nil {
			return fail(err)
		}
		// Each node needs its own nodes.conf; StartServer gave each its own dir.
		nodes = append(nodes, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clients := make([]*redis.Client, n)
	for i, s := range nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: s.Addr()})
		defer clients[i].Close()
	}
	per := 16384 / n
	for i, c := range clients {
		lo, hi := i*per, (i+1)*per-1
		if i == n-1 {
			hi = 16383
		}
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			return fail(fmt.Errorf("redistest: ADDSLOTSRANGE on %s: %w", nodes[i].Addr(), err))
		}
	}
	for i := 1; i < n; i++ {
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", nodes[i].port).Err(); err != nil {
			return fail(fmt.Errorf("redistest: CLUSTER MEET: %w", err))
		}
	}
	for {
		ok := true
		for _, c := range clients {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(n)) {
				ok = false
				break
			}
		}
		if ok {
			return nodes, nil
		}
		select {
		case <-ctx.Done():
			return fail(fmt.Errorf("redistest: cluster never reached cluster_state:ok"))
		case <-time.After(20 * time.Millisecond):
		}
	}
}
