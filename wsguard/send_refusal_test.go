package wsguard_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redquota/redquota/internal/holdtest"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/wsguard"
)

// A Send whose turn under the connection's local message limit would come
// after ctx's deadline fails, unsent, with an error wrapping
// limiter.ErrWouldExceedDeadline, as Send documents (and as a turn the
// fleet's quotas refuse does); ctx itself has not ended. One message per
// 1000 s with a burst of 1: the second message's turn is ~1000 s away, far
// past the 10 s deadline however slow the machine.
func TestSendLocalLimitPastDeadline(t *testing.T) {
	g, _ := newMiniGuard(t, wsguard.Options{MessageRate: 0.001})
	s := newFakeSocket()
	c, err := g.Dial(context.Background(), dialer(s))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(context.Background(), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Send(ctx, []byte("{}"))
	if !errors.Is(err, limiter.ErrWouldExceedDeadline) {
		t.Fatalf("second Send: %v, want an error wrapping limiter.ErrWouldExceedDeadline", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Send waited for the deadline: %v", ctx.Err())
	}
	if out, _ := s.written(); len(out) != 1 {
		t.Fatalf("sent %d messages, want 1", len(out))
	}
}

// A closed connection says so with net.ErrClosed, which callers can test
// for, on Send, Subscribe and Read alike; nothing more is written.
func TestClosedConnErrors(t *testing.T) {
	g, _ := newMiniGuard(t, wsguard.Options{})
	s := newFakeSocket()
	c, err := g.Dial(context.Background(), dialer(s))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(1000, ""); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Send(ctx, []byte("{}")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send after Close: %v, want net.ErrClosed", err)
	}
	if err := c.Subscribe(ctx, []byte("{}"), 1); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Read(ctx); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
	}
	if out, _ := s.written(); len(out) != 0 {
		t.Fatalf("wrote %d messages after Close", len(out))
	}
}

// Two refusals of one signal that name the same request (one per quota it
// was charged: an exchange that refuses an order for its IP weight and its
// account's order count at once) hold both quotas: the request's charges are
// not forgotten after the first; a refusal naming a request the connection
// has no charges for is reported, not dropped in silence.
func TestRefusalsOfOneRequest(t *testing.T) {
	ip := limiter.Quota{Name: "ip", Limits: []limiter.NamedLimit{{Name: "w", Limit: limiter.PerMinute(1000)}}}
	acct := limiter.Quota{Name: "acct", Limits: []limiter.NamedLimit{{Name: "o", Limit: limiter.PerMinute(100)}}}
	var errs []error
	g, lim := newMiniGuard(t, wsguard.Options{
		Charges: func(msg []byte) (string, []limiter.Charge, error) {
			return string(msg), []limiter.Charge{
				{Quota: ip, Cost: limiter.Cost{"w": 1}},
				{Quota: acct.For("a1"), Cost: limiter.Cost{"o": 1}},
			}, nil
		},
		Refusals: func(s wsguard.Signal) []wsguard.Refusal {
			id := string(s.Message)
			return []wsguard.Refusal{{Quota: "ip", ID: id, Hold: time.Hour}, {Quota: "acct", ID: id, Hold: time.Hour}}
		},
		OnError: func(err error) { errs = append(errs, err) },
	})
	s := newFakeSocket()
	ctx := context.Background()
	c, err := g.Dial(ctx, dialer(s))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, []byte("r1")); err != nil {
		t.Fatal(err)
	}
	s.in <- []byte("r1")
	if _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	held := func(q limiter.Quota, key string) bool { return isHeld(t, lim, q, key) }
	if !held(ip, "") || !held(acct, "a1") || len(errs) != 0 {
		t.Fatalf("held: ip %v, acct a1 %v (errors %v); want both, no error", held(ip, ""), held(acct, "a1"), errs)
	}
}

// A refusal that names only a request the connection has no charges for
// (never priced, or forgotten) holds nothing it could name, and says so
// through OnError instead of dropping the exchange's refusal in silence.
func TestRefusalOfUnknownRequestReported(t *testing.T) {
	var errs []error
	g, _ := newMiniGuard(t, wsguard.Options{
		Refusals: func(s wsguard.Signal) []wsguard.Refusal { return []wsguard.Refusal{{ID: "gone"}} },
		OnError:  func(err error) { errs = append(errs, err) },
	})
	s := newFakeSocket()
	ctx := context.Background()
	c, err := g.Dial(ctx, dialer(s))
	if err != nil {
		t.Fatal(err)
	}
	s.in <- []byte("{}")
	if _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if len(errs) != 1 {
		t.Fatalf("OnError got %v, want one error for the unknown request", errs)
	}
}

// A handshake refused 429 with Retry-After as an HTTP date is measured from
// the answer's Date, the server's clock (as package middleware reads it),
// not from this host's: a server whose clock is an hour behind ours still
// holds the connection quota for the minute it asked. (The hold left is
// checked within (30 s, 60 s]: only a 30 s stall of the test could fail it.)
func TestHandshakeRetryAfterDateFromServerClock(t *testing.T) {
	conn := limiter.Quota{Name: "conn", Limits: []limiter.NamedLimit{{Name: "c", Limit: limiter.PerMinute(100)}}}
	g, lim := newMiniGuard(t, wsguard.Options{Connect: []limiter.Charge{{Quota: conn, Cost: limiter.Cost{"c": 1}}}})
	server := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	h := http.Header{}
	h.Set("Date", server.Format(http.TimeFormat))
	h.Set("Retry-After", server.Add(time.Minute).Format(http.TimeFormat))
	ctx := context.Background()
	_, err := g.Dial(ctx, func(context.Context) (wsguard.Socket, error) {
		return nil, &wsguard.HandshakeError{StatusCode: http.StatusTooManyRequests, Header: h}
	})
	if !errors.As(err, new(*wsguard.HandshakeError)) {
		t.Fatalf("dial: %v, want the handshake error", err)
	}
	left, err := holdtest.Left(ctx, lim, "conn", "")
	if err != nil {
		t.Fatal(err)
	}
	if left <= 30*time.Second || left > time.Minute {
		t.Fatalf("hold left %v, want the minute Retry-After asked for, from the server's Date", left)
	}
}

// writeWatch is a Socket whose Write records how many writes overlap: the
// first Write blocks until released, and tells when it has begun.
type writeWatch struct {
	*fakeSocket
	in, most atomic.Int32
	began    chan struct{}
	release  chan struct{}
	first    sync.Once
}

func (s *writeWatch) Write(ctx context.Context, msg []byte) error {
	n := s.in.Add(1)
	defer s.in.Add(-1)
	for {
		m := s.most.Load()
		if n <= m || s.most.CompareAndSwap(m, n) {
			break
		}
	}
	s.first.Do(func() {
		close(s.began)
		<-s.release
	})
	return s.fakeSocket.Write(ctx, msg)
}

// Send may be called by several goroutines, but a Socket is written by one
// writer at a time (its contract: gorilla/websocket, for one, panics on
// concurrent writes): two concurrent Sends never overlap in Write. The first
// Write is held until the second Send has reached Write (the bug) or 200 ms
// have passed; a correct guard passes whatever the timing.
func TestSendWritesOneAtATime(t *testing.T) {
	g, _ := newMiniGuard(t, wsguard.Options{})
	s := &writeWatch{fakeSocket: newFakeSocket(), began: make(chan struct{}), release: make(chan struct{})}
	ctx := context.Background()
	c, err := g.Dial(ctx, func(context.Context) (wsguard.Socket, error) { return s, nil })
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- c.Send(ctx, []byte("a")) }()
	<-s.began
	go func() { errs <- c.Send(ctx, []byte("b")) }()
	deadline := time.Now().Add(200 * time.Millisecond)
	for s.most.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(s.release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if m := s.most.Load(); m != 1 {
		t.Fatalf("%d writes overlapped, want 1 at a time", m)
	}
}

// countingSocket is a fakeSocket that counts how many of its kind are open.
type countingSocket struct {
	*fakeSocket
	open *atomic.Int64
	shut atomic.Bool
}

func (s *countingSocket) Close(int, string) error {
	if s.shut.CompareAndSwap(false, true) {
		s.open.Add(-1)
	}
	return nil
}

// Of Redials run at once, one connection stays open: each closes the one it
// dialled if another got there first. A Close that comes while Redial dials
// is final: the socket dialled then is closed, Redial says net.ErrClosed, and
// so does every later Redial, which dials nothing.
func TestRedialConcurrentAndClose(t *testing.T) {
	g, _ := newMiniGuard(t, wsguard.Options{Jitter: -1})
	var open, dials atomic.Int64
	var gate chan struct{} // when set, a dial waits for it
	var entered chan struct{}
	// The four Redials' dials wait for each other, so that all four are
	// under way at once.
	var together chan struct{}
	var arrived atomic.Int64
	dial := func(context.Context) (wsguard.Socket, error) {
		dials.Add(1)
		if together != nil {
			if arrived.Add(1) == 4 {
				close(together)
			}
			<-together
		}
		if gate != nil {
			entered <- struct{}{}
			<-gate
		}
		open.Add(1)
		return &countingSocket{fakeSocket: newFakeSocket(), open: &open}, nil
	}
	ctx := context.Background()
	c, err := g.Dial(ctx, dial)
	if err != nil {
		t.Fatal(err)
	}
	together = make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := c.Redial(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	together = nil
	if n := open.Load(); n != 1 {
		t.Fatalf("%d sockets open after 4 concurrent Redials, want 1", n)
	}

	gate, entered = make(chan struct{}), make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- c.Redial(ctx) }()
	<-entered
	if err := c.Close(1000, ""); err != nil {
		t.Fatal(err)
	}
	close(gate)
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Redial across Close: %v, want net.ErrClosed", err)
	}
	if n := open.Load(); n != 0 {
		t.Fatalf("%d sockets open after Close, want 0", n)
	}
	before := dials.Load()
	if err := c.Redial(ctx); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Redial after Close: %v, want net.ErrClosed", err)
	}
	if dials.Load() != before {
		t.Fatal("Redial after Close dialled")
	}
}

// A handshake refused 418 (an IP ban: Binance's last from 2 minutes to 3
// days) without Retry-After holds the connection quota for 2 minutes, as
// package middleware's BanHold does, not for FallbackHold (1 s), which would
// let the fleet dial the banned IP again at once; a 429 without one still
// holds FallbackHold. (The hold left is checked within (1 min, 2 min]: only a
// minute's stall of the test could fail it; FallbackHold is 1 s.)
func TestHandshakeBanWithoutRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		status   int
		min, max time.Duration
	}{
		{http.StatusTeapot, time.Minute, 2 * time.Minute},
		{http.StatusTooManyRequests, 0, time.Second},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			conn := limiter.Quota{Name: "conn", Limits: []limiter.NamedLimit{{Name: "c", Limit: limiter.PerMinute(100)}}}
			g, lim := newMiniGuard(t, wsguard.Options{Connect: []limiter.Charge{{Quota: conn, Cost: limiter.Cost{"c": 1}}}})
			ctx := context.Background()
			_, err := g.Dial(ctx, func(context.Context) (wsguard.Socket, error) {
				return nil, &wsguard.HandshakeError{StatusCode: tc.status, Header: http.Header{}}
			})
			if !errors.As(err, new(*wsguard.HandshakeError)) {
				t.Fatalf("dial: %v, want the handshake error", err)
			}
			left, err := holdtest.Left(ctx, lim, "conn", "")
			if err != nil {
				t.Fatal(err)
			}
			if left <= tc.min || left > tc.max {
				t.Fatalf("%d without Retry-After: hold left %v, want within (%v, %v]", tc.status, left, tc.min, tc.max)
			}
		})
	}
}

// A refused handshake holds Options.Connect's quotas as middleware's
// Transport holds a 429 or 418 (its TestRefusalsHoldAsWsguard runs the same
// table): one rule, bound.RefusalHold. Before, a 418 with Retry-After 0 held
// 2 minutes here and nothing there. Exact, on miniredis's frozen clock.
func TestHandshakeHoldsAsMiddleware(t *testing.T) {
	for _, rf := range holdtest.Refusals() {
		t.Run(fmt.Sprintf("%d %q", rf.Status, rf.RetryAfter), func(t *testing.T) {
			m, rdb := redistest.NewMini(t)
			m.SetTime(time.Date(2025, 1, 15, 12, 0, 30, 0, time.UTC))
			lim := limiter.New(rdb, limiter.Options{Timeout: -1})
			conn := limiter.Quota{Name: "conn", Limits: []limiter.NamedLimit{{Name: "c", Limit: limiter.PerMinute(100)}}}
			g, err := wsguard.New(lim, wsguard.Options{Connect: []limiter.Charge{{Quota: conn, Cost: limiter.Cost{"c": 1}}}})
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			if rf.RetryAfter != "" {
				h.Set("Retry-After", rf.RetryAfter)
			}
			if rf.Date != "" {
				h.Set("Date", rf.Date)
			}
			ctx := context.Background()
			_, err = g.Dial(ctx, func(context.Context) (wsguard.Socket, error) {
				return nil, &wsguard.HandshakeError{StatusCode: rf.Status, Header: h}
			})
			if !errors.As(err, new(*wsguard.HandshakeError)) {
				t.Fatalf("dial: %v, want the handshake error", err)
			}
			left, err := holdtest.Left(ctx, lim, "conn", "")
			if err != nil {
				t.Fatal(err)
			}
			if left != rf.Hold {
				t.Fatalf("%d with Retry-After %q: hold left %v, want %v", rf.Status, rf.RetryAfter, left, rf.Hold)
			}
		})
	}
}

// A Redial whose dials keep failing stops at Close (before, it went on
// dialling, charged, until its ctx ended), and says net.ErrClosed. While it
// redials, a Send fails with an error that is not net.ErrClosed: the
// connection is coming back, not gone.
func TestRedialStopsAtClose(t *testing.T) {
	g, _ := newMiniGuard(t, wsguard.Options{Jitter: time.Millisecond})
	var dials atomic.Int64
	failing := atomic.Bool{}
	dial := func(context.Context) (wsguard.Socket, error) {
		dials.Add(1)
		if failing.Load() {
			return nil, errors.New("refused")
		}
		return newFakeSocket(), nil
	}
	ctx := context.Background()
	c, err := g.Dial(ctx, dial)
	if err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	done := make(chan error, 1)
	go func() { done <- c.Redial(ctx) }()
	for dials.Load() < 4 {
		time.Sleep(time.Millisecond)
	}
	if err := c.Send(ctx, []byte("{}")); err == nil || errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send while redialing: %v, want an error that is not net.ErrClosed", err)
	}
	if err := c.Close(1000, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Redial after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second): // its jitter is at most 32 ms
		t.Fatal("Redial went on after Close")
	}
	n := dials.Load()
	time.Sleep(100 * time.Millisecond)
	if dials.Load() != n {
		t.Fatal("dialled after Redial returned")
	}
}
