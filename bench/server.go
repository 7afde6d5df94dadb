package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process started for a benchmark run: loopback
// only, a free port, its own temp directory, no persistence.
type Server struct {
	cmd  *exec.Cmd
	dir  string
	addr string
	done chan struct{}
}

// StartServer starts redis-server (from PATH) and waits until it answers PING.
func StartServer() (*Server, error) { return StartServerUnder() }

// StartServerUnder starts redis-server as the last argument of wrapper (for
// example valgrind --tool=callgrind …) and waits until it answers PING.
func StartServerUnder(wrapper ...string) (*Server, error) {
	dir, err := os.MkdirTemp("", "redquota-bench-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 { // a free port can be taken between probing and binding
		port, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		s := &Server{dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		if lastErr = s.start(port, wrapper); lastErr == nil {
			return s, nil
		}
	}
	_ = os.RemoveAll(dir)
	return nil, lastErr
}

func (s *Server) start(port int, wrapper []string) error {
	argv := append(append([]string{}, wrapper...), "redis-server",
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--loglevel", "warning",
	)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.SysProcAttr = procAttr()
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	c := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second) // valgrind starts slowly
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("redis-server exited at start")
		default:
		}
		if c.Ping(context.Background()).Err() == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	return fmt.Errorf("redis-server on %s did not answer PING within 60s", s.addr)
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Close kills the server and removes its directory.
func (s *Server) Close() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	_ = os.RemoveAll(s.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Goroutines is how many goroutines the parallel benchmarks and the
// fixed-rate run make decisions from.
const Goroutines = 64

// PoolSize is every benchmark client's connection pool: enough for the 64
// goroutines of the parallel runs, so no contender waits for a connection.
const PoolSize = 64

// NewClient returns a client of addr. retries is go-redis MaxRetries (-1:
// never resend a command). Every contender gets the same options.
func NewClient(addr string, retries int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:         addr,
		MaxRetries:   retries,
		PoolSize:     PoolSize,
		MinIdleConns: 0,
	})
}
