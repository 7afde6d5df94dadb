package wsguard_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redquota/redquota/internal/oteltest"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/wsguard"
)

func newMiniGuard(t *testing.T, opts wsguard.Options) (*wsguard.Guard, *limiter.Limiter) {
	t.Helper()
	_, rdb := redistest.NewMini(t)
	// No per-call timeout: a script call on miniredis under -race on a
	// loaded machine can take more than the default 250 ms.
	lim := limiter.New(rdb, limiter.Options{Timeout: -1})
	g, err := wsguard.New(lim, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g, lim
}

func dialer(s *fakeSocket) func(context.Context) (wsguard.Socket, error) {
	return func(context.Context) (wsguard.Socket, error) { return s, nil }
}

// Subscribe refuses, sending nothing, what would take a connection past
// MaxStreams, and counts what it lets through; streams named in the URL
// (a nil message) count too.
func TestSubscribeStreamCap(t *testing.T) {
	g, _ := newMiniGuard(t, wsguard.Options{MaxStreams: 1024})
	s := newFakeSocket()
	c, err := g.Dial(context.Background(), dialer(s))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Subscribe(ctx, nil, 1000); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx, []byte(`{"method":"SUBSCRIBE"}`), 25); !errors.Is(err, wsguard.ErrInvalid) {
		t.Fatalf("1025th stream: %v, want ErrInvalid (too many streams)", err)
	}
	if out, _ := s.written(); len(out) != 0 {
		t.Fatalf("a refused subscribe sent %d messages", len(out))
	}
	if err := c.Subscribe(ctx, []byte(`{"method":"SUBSCRIBE"}`), 24); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx, []byte(`{"method":"UNSUBSCRIBE"}`), -4); err != nil {
		t.Fatal(err)
	}
	if out, _ := s.written(); len(out) != 2 || wsguard.Streams(c) != 1020 {
		t.Fatalf("sent %d, streams %d; want 2 and 1020", len(out), wsguard.Streams(c))
	}
}

// Messages a connection sends are spaced by its local limit: 10 messages at
// 50 per second with a burst of 1 cannot all go within 9/50 s of the first
// (x/time/rate's guarantee, so this lower bound cannot flake).
func TestSendLocalLimit(t *testing.T) {
	g, _ := newMiniGuard(t, wsguard.Options{MessageRate: 50})
	s := newFakeSocket()
	c, err := g.Dial(context.Background(), dialer(s))
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := c.Send(context.Background(), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	_, at := s.written()
	if span := at[9].Sub(at[0]); span < 9*time.Second/50-time.Millisecond {
		t.Fatalf("10 messages within %v, want at least %v", span, 9*time.Second/50)
	}
	// A deadline the next turn would pass: not sent.
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := c.Send(ctx, []byte("{}")); err == nil {
		t.Fatal("sent past the local limit within 1ms")
	}
	if out, _ := s.written(); len(out) != 10 {
		t.Fatalf("sent %d, want 10", len(out))
	}
}

// A refusal naming a quota and a request id holds the quota instance that
// request was charged (one account's), and nothing else; one without an id
// holds the connection quota. A dial attempt during the hold is not made:
// its turn would pass the context's deadline.
func TestRefusalHoldsTheChargedInstance(t *testing.T) {
	ip := limiter.Quota{Name: "ip", Limits: []limiter.NamedLimit{{Name: "w", Limit: limiter.PerMinute(1000)}}}
	acct := limiter.Quota{Name: "acct", Limits: []limiter.NamedLimit{{Name: "o", Limit: limiter.PerMinute(100)}}}
	conn := limiter.Quota{Name: "conn", Limits: []limiter.NamedLimit{{Name: "c", Limit: limiter.PerMinute(100)}}}
	var errs []error
	g, lim := newMiniGuard(t, wsguard.Options{
		Connect: []limiter.Charge{{Quota: conn, Cost: limiter.Cost{"c": 1}}},
		Charges: func(msg []byte) (string, []limiter.Charge, error) {
			return "req-" + string(msg), []limiter.Charge{
				{Quota: ip, Cost: limiter.Cost{"w": 1}},
				{Quota: acct.For(string(msg)), Cost: limiter.Cost{"o": 1}},
			}, nil
		},
		Refusals: func(s wsguard.Signal) []wsguard.Refusal {
			if s.Close != nil {
				return []wsguard.Refusal{{Hold: time.Hour}}
			}
			return []wsguard.Refusal{{Quota: "acct", ID: string(s.Message), Hold: time.Hour}, {Quota: "nope"}}
		},
		OnError: func(err error) { errs = append(errs, err) },
	})
	s := newFakeSocket()
	ctx := context.Background()
	c, err := g.Dial(ctx, dialer(s))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k1", "k2"} {
		if err := c.Send(ctx, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	s.in <- []byte("req-k1")
	if _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	held := func(q limiter.Quota, key string) bool { return isHeld(t, lim, q, key) }
	if !held(acct, "k1") || held(acct, "k2") || held(ip, "") || held(conn, "") {
		t.Fatalf("held: k1 %v, k2 %v, ip %v, conn %v; want only k1", held(acct, "k1"), held(acct, "k2"), held(ip, ""), held(conn, ""))
	}
	if len(errs) != 1 {
		t.Fatalf("OnError got %v, want one error for the unknown quota", errs)
	}
	// Each hold records its cause for operators (Inspect, redquota status):
	// the guard and the signal's kind, never the message's text.
	reason := func(q limiter.Quota, key string) string {
		st, err := lim.Inspect(ctx, q.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st {
			if s.Key == key {
				return s.HoldReason
			}
		}
		t.Fatalf("no state of %s[%s]: %+v", q.Name, key, st)
		return ""
	}
	if r := reason(acct, "k1"); r != "wsguard: refusal message" {
		t.Fatalf("hold of acct[k1]: reason %q", r)
	}
	s.closed <- &wsguard.CloseError{Code: 1008}
	if _, err := c.Read(ctx); !errors.As(err, new(*wsguard.CloseError)) {
		t.Fatalf("read %v, want the close", err)
	}
	if !held(conn, "") {
		t.Fatal("the close did not hold the connection quota")
	}
	if r := reason(conn, ""); r != "wsguard: closed with 1008" {
		t.Fatalf("hold of conn: reason %q", r)
	}
	dialled := false
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = g.Dial(dctx, func(context.Context) (wsguard.Socket, error) { dialled = true; return s, nil })
	if !errors.Is(err, limiter.ErrWouldExceedDeadline) || dialled {
		t.Fatalf("dial during a hold: %v (dialled %v), want ErrWouldExceedDeadline and no attempt", err, dialled)
	}
}

// Spans start only under a recording parent; the operations and holds are
// counted either way, named by the guard and the quota's name (never a key).
func TestTelemetry(t *testing.T) {
	h := oteltest.New()
	acct := limiter.Quota{Name: "acct", Limits: []limiter.NamedLimit{{Name: "o", Limit: limiter.PerMinute(100)}}}
	g, _ := newMiniGuard(t, wsguard.Options{
		Name:      "g1",
		Telemetry: h.Providers,
		Charges: func(msg []byte) (string, []limiter.Charge, error) {
			return "1", []limiter.Charge{{Quota: acct.For("secret-key"), Cost: limiter.Cost{"o": 1}}}, nil
		},
		Refusals: func(wsguard.Signal) []wsguard.Refusal { return []wsguard.Refusal{{ID: "1"}} },
	})
	s := newFakeSocket()
	c, err := g.Dial(context.Background(), dialer(s))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(context.Background(), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if n := len(h.Rec.Ended()); n != 0 {
		t.Fatalf("%d spans without a parent", n)
	}
	ctx, parent := h.Parent()
	if err := c.Send(ctx, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	parent.End()
	found := false
	for _, sp := range h.Rec.Ended() {
		if sp.Name() == "redquota.wsguard.Send" && sp.Parent().SpanID() == parent.SpanContext().SpanID() {
			found = true
		}
	}
	if !found {
		t.Fatal("no redquota.wsguard.Send span under the parent")
	}
	s.in <- []byte("answer")
	if _, err := c.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	ops := h.Sums(t, "redquota.wsguard.operations", "redquota.guard", "redquota.op", "redquota.result")
	if ops["g1/dial/ok"] != 1 || ops["g1/send/ok"] != 2 {
		t.Fatalf("operations %v", ops)
	}
	holds := h.Sums(t, "redquota.wsguard.holds", "redquota.quota")
	if len(holds) != 1 || holds["acct"] != 1 {
		t.Fatalf("holds %v, want acct: 1", holds)
	}
}

// Redial tries again after a failed dial, each attempt charged to the
// connection quota (exchanges count attempts, not connections), and starts
// the new connection with no streams.
func TestRedialChargesEachAttempt(t *testing.T) {
	conn := limiter.Quota{Name: "conn", Limits: []limiter.NamedLimit{{Name: "c", Limit: limiter.PerMinute(10)}}}
	g, lim := newMiniGuard(t, wsguard.Options{
		Connect:    []limiter.Charge{{Quota: conn, Cost: limiter.Cost{"c": 1}}},
		Jitter:     time.Millisecond,
		MaxStreams: 10,
	})
	ctx := context.Background()
	fails := 2
	dials := 0
	c, err := g.Dial(ctx, func(context.Context) (wsguard.Socket, error) {
		dials++
		if dials > 1 && fails > 0 {
			fails--
			return nil, errors.New("connection refused")
		}
		return newFakeSocket(), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx, nil, 5); err != nil {
		t.Fatal(err)
	}
	if err := c.Redial(ctx); err != nil {
		t.Fatal(err)
	}
	if dials != 4 || wsguard.Streams(c) != 0 {
		t.Fatalf("%d dials, %d streams; want 4 (one Dial, two failures, one success) and 0", dials, wsguard.Streams(c))
	}
	res, err := lim.Allow(ctx, limiter.Charge{Quota: conn, Cost: limiter.Cost{"c": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Remaining != 10-5 {
		t.Fatalf("remaining %d after 4 attempts and this call, want 5", res.Remaining)
	}
}
