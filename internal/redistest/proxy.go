package redistest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// FaultProxy forwards TCP connections to a server, passing requests at once.
// It can hold every reply back for a delay, or drop replies and cut the
// connection: either way Redis has run the command but the client does not
// hear of it in time — the case in which a client that retries (go-redis
// resends after a connection lost with io.EOF) makes Redis run a command twice.
type FaultProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	delay  time.Duration
	drop   func(reply []byte) bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

// NewFaultProxy starts a proxy to target on a free loopback port; it is closed when the test ends.
func NewFaultProxy(tb testing.TB, target string) *FaultProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &FaultProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address.
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// SetDelay sets how long each reply is held back from now on.
func (p *FaultProxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// SetDropReplies makes the proxy, from now on, discard each reply for which
// drop returns true and close the connection it came on (nil: drop none).
// Match only the replies of the commands under test: a connection's
// handshake (HELLO) must get through for a retry to reach Redis.
func (p *FaultProxy) SetDropReplies(drop func(reply []byte) bool) {
	p.mu.Lock()
	p.drop = drop
	p.mu.Unlock()
}

func (p *FaultProxy) faults() (time.Duration, func([]byte) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay, p.drop
}

// Close stops the proxy and closes every connection through it.
func (p *FaultProxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *FaultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); _, _ = io.Copy(s, c); _ = s.Close() }()
		go func() {
			defer p.wg.Done()
			defer c.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 {
					delay, drop := p.faults()
					if drop != nil && drop(buf[:n]) {
						_ = s.Close()
						return
					}
					time.Sleep(delay)
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}
