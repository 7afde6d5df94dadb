package redistest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Sentinels is a primary, one replica and three Sentinels, each a process of
// its own on a free loopback port, stopped when the test ends.
type Sentinels struct {
	Primary, Replica *Server
	// Addrs are the Sentinels' addresses.
	Addrs []string
	// Master is the name the Sentinels monitor.
	Master string
	// Link is the replica's way to the primary when StartSentinels was asked
	// for a proxy; nil otherwise.
	Link *FaultProxy
}

// StartSentinels starts a primary, a replica of it and three Sentinels
// (`redis-server <conf> --sentinel`) that declare the primary down after
// downAfter and fail over to the replica. With proxied, the replica reaches
// the primary through Link, a FaultProxy (to delay the replication stream or
// cut it); Sentinel still sees the replica's own address. It skips or fails
// like Shared when redis-server is missing.
func StartSentinels(tb testing.TB, downAfter time.Duration, proxied bool) *Sentinels {
	tb.Helper()
	need(tb)
	s := &Sentinels{Master: "rq"}
	s.Primary = Private(tb)
	port := s.Primary.Port()
	if proxied {
		s.Link = NewFaultProxy(tb, s.Primary.Addr())
		_, ps, _ := net.SplitHostPort(s.Link.Addr())
		port, _ = strconv.Atoi(ps)
	}
	s.Replica = Private(tb, "--replicaof", "127.0.0.1", strconv.Itoa(port))
	for range 3 {
		port, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		dir := tb.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		cfg := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds %s %d\nsentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
			port, dir, s.Master, s.Primary.Port(), s.Master, downAfter.Milliseconds(), s.Master, s.Master)
		if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command("redis-server", conf, "--sentinel", "--loglevel", "warning")
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		tb.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if err := waitReady(addr, done, 10*time.Second); err != nil {
			tb.Fatalf("redistest: sentinel: %v", err)
		}
		s.Addrs = append(s.Addrs, addr)
	}
	return s
}
