package limiter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// holdGate holds back the hold script calls on one hold key while armed
// (entered is closed at the first), and counts the decisions that key's
// quota was answered (decided).
type holdGate struct {
	key     string
	armed   atomic.Bool
	entered chan struct{}
	open    chan struct{}
	decided atomic.Int64
	once    atomic.Bool
}

func newHoldGate(key string) *holdGate {
	return &holdGate{key: key, entered: make(chan struct{}), open: make(chan struct{})}
}

// isHoldCall: hold.lua's call (one key, the hold key, and its duration).
func (g *holdGate) isHoldCall(a []any) bool {
	return len(a) == 5 && fmt.Sprint(a[2]) == "1" && fmt.Sprint(a[3]) == g.key
}

// isDecision: a script call with the hold key among more keys.
func (g *holdGate) isDecision(a []any) bool {
	if len(a) <= 5 {
		return false
	}
	for _, x := range a[3:6] {
		if fmt.Sprint(x) == g.key {
			return true
		}
	}
	return false
}

func (g *holdGate) DialHook(next redis.DialHook) redis.DialHook { return next }
func (g *holdGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if g.armed.Load() && g.isHoldCall(cmd.Args()) {
			if g.once.CompareAndSwap(false, true) {
				close(g.entered)
			}
			<-g.open
		}
		err := next(ctx, cmd)
		if err == nil && g.isDecision(cmd.Args()) {
			g.decided.Add(1)
		}
		return err
	}
}
func (g *holdGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if g.armed.Load() && slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return g.isHoldCall(c.Args()) }) {
			if g.once.CompareAndSwap(false, true) {
				close(g.entered)
			}
			<-g.open
		}
		err := next(ctx, cmds)
		for _, c := range cmds {
			if c.Err() == nil && g.isDecision(c.Args()) {
				g.decided.Add(1)
			}
		}
		return err
	}
}

// A decision that starts while another places the kept holds again after a
// restart (the resync, restart.go) must not be granted inside a hold that
// is not back in Redis yet. The resync counted the restart before placing
// the holds, so a decision that read the count in between, was answered by
// the empty Redis and found the check done when it got the lock was neither
// made again nor denied: granted inside the 418's ban.
func TestDecisionDuringResyncMadeAgain(t *testing.T) {
	q := Quota{Name: "exchange", Limits: []NamedLimit{{"weight", PerMinute(6000)}}}
	srv := redistest.Private(t)
	c := srv.Client()
	t.Cleanup(func() { _ = c.Close() })
	lim := New(c, Options{Timeout: 5 * time.Second})
	g := newHoldGate(lim.holdKey(q))
	c.AddHook(g)
	ctx := context.Background()
	require.True(t, settle(t, lim, q).Allowed)
	placed := time.Now()
	_, err := lim.Hold(ctx, q, holdFor, "418")
	require.NoError(t, err)

	srv.Stop()
	require.NoError(t, srv.Start())
	g.armed.Store(true)
	first := make(chan Result, 1)
	go func() { first <- settle(t, lim, q) }()
	select {
	case <-g.entered: // the resync is placing the hold again
	case <-time.After(20 * time.Second):
		close(g.open)
		t.Fatal("the kept hold was not placed again")
	}
	before := g.decided.Load()
	second := make(chan Result, 1)
	go func() {
		r, err := lim.Allow(ctx, q.Take(1))
		if err != nil {
			t.Error(err)
		}
		second <- r
	}()
	// Let the second decision be answered by Redis (without the hold) before
	// the hold is back.
	for deadline := time.Now().Add(10 * time.Second); g.decided.Load() == before; {
		if time.Now().After(deadline) {
			close(g.open)
			t.Fatal("the second decision was not answered")
		}
		time.Sleep(time.Millisecond)
	}
	close(g.open)
	requireHeld(t, <-first, q, placed)
	requireHeld(t, <-second, q, placed)
}

// A Wait booked before a hold this Limiter keeps, whose wake-up is the
// first call after Redis lost its state, must not take its turn inside the
// hold. The wake-up found the restart and placed the hold again, but its own
// answer came from the empty Redis (no hold: the booking stands), and a
// wake-up was never made again: Wait returned and the request went out
// inside the 418's ban.
func TestWakeAfterRestartSeesKeptHold(t *testing.T) {
	q := Key("exchange", Every(1, 3*time.Second))
	srv := redistest.Private(t)
	c := srv.Client()
	t.Cleanup(func() { _ = c.Close() })
	lim := New(c, Options{Timeout: 5 * time.Second})
	ctx := context.Background()
	require.True(t, settle(t, lim, q).Allowed)
	r, err := lim.Reserve(ctx, q.Take(1))
	require.NoError(t, err)
	require.True(t, r.OK())
	require.Greater(t, r.Delay(), time.Second, "booked ahead")
	_, err = lim.Hold(ctx, q, holdFor, "429")
	require.NoError(t, err)

	srv.Stop()
	require.NoError(t, srv.Start())
	// The client's pool holds dead connections: replace them without a
	// decision, so that the wake-up is the first call the limiter makes.
	for deadline := time.Now().Add(10 * time.Second); c.Ping(ctx).Err() != nil; {
		require.True(t, time.Now().Before(deadline), "no answer from the restarted server")
		time.Sleep(10 * time.Millisecond)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The hold ends about 30 s after it was placed, past the deadline: Wait
	// cannot take its turn.
	err = r.Wait(wctx)
	require.ErrorIs(t, err, ErrWouldExceedDeadline, "Wait took its turn inside the hold")
	require.EqualValues(t, 1, lim.Stats().Restarts)
}

// failInfo fails the INFO commands of a client while armed, as a lost
// connection would (not a server's refusal).
type failInfo struct{ armed atomic.Bool }

var errInfoLost = errors.New("test: INFO lost")

func (h *failInfo) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failInfo) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.Load() && cmd.Name() == "info" {
			cmd.SetErr(errInfoLost)
			return errInfoLost
		}
		return next(ctx, cmd)
	}
}
func (h *failInfo) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A decision granted at once while the restart check could not read the
// run_id (a master of a cluster unreachable during a failover, a timeout)
// does not show that a kept hold was released: it may come from a Redis
// that lost it. It used to forget the hold then, so when the check next
// succeeded and found the restart there was nothing to place again, and
// the ban was lost for good.
func TestKeptHoldNotForgottenOnUncheckedGrant(t *testing.T) {
	q := Quota{Name: "exchange", Limits: []NamedLimit{{"weight", PerMinute(6000)}}}
	srv := redistest.Private(t)
	c := srv.Client()
	t.Cleanup(func() { _ = c.Close() })
	var h failInfo
	c.AddHook(&h)
	lim := New(c, Options{Timeout: 5 * time.Second})
	ctx := context.Background()
	require.True(t, settle(t, lim, q).Allowed)
	placed := time.Now()
	_, err := lim.Hold(ctx, q, holdFor, "418")
	require.NoError(t, err)

	srv.Stop()
	require.NoError(t, srv.Start())
	h.armed.Store(true)
	// Redis has no hold and the check cannot tell: granted.
	require.True(t, settle(t, lim, q).Allowed)
	h.armed.Store(false)
	requireHeld(t, settle(t, lim, q), q, placed)
	require.EqualValues(t, 1, lim.Stats().Restarts)
	oc := srv.Client()
	t.Cleanup(func() { _ = oc.Close() })
	other := New(oc, Options{Timeout: 5 * time.Second})
	requireHeld(t, settle(t, other, q), q, placed)
}

// A LocalShare that is NaN (0/0: a share computed from a process count of
// 0) is outside (0, 1] and takes the default 0.1, as documented. It was
// kept: x/time/rate's limiter of NaN per second never refuses, so FailLocal
// granted every decision while Redis was down.
func TestFailLocalNaNShare(t *testing.T) {
	lim := deadLimiter(t, math.NaN())
	ctx := context.Background()
	limit := Every(100, time.Hour) // the default share: burst 10, one more every 6 min
	granted := 0
	for range 50 {
		r, err := lim.Allow(ctx, Key("k", limit).Take(1))
		require.NoError(t, err)
		require.True(t, r.Degraded)
		if r.Allowed {
			granted++
		}
	}
	require.Equal(t, 10, granted, "the default share's burst")
}

// A context already done sends nothing, whatever the call: Sync, Reset and
// a release changed Redis for a caller that had gone whenever the client had
// a connection at hand (go-redis reads only a context's deadline), and
// failed when it had to dial. Cancel is the exception: a done context is
// the usual reason to cancel, so it gives back all the same.
func TestDoneContextWritesNothing(t *testing.T) {
	mr, c := redistest.NewMini(t)
	lim := New(c, Options{Timeout: -1})
	ctx := context.Background()
	q := Quota{Name: "q", Limits: []NamedLimit{{"a", PerMinute(10)}}}
	r, err := lim.Allow(ctx, q.Take(1))
	require.NoError(t, err)
	require.Equal(t, 9, r.Remaining)
	_, err = lim.Hold(ctx, q, time.Minute, "")
	require.NoError(t, err)
	before := mr.Dump()

	done, cancel := context.WithCancel(ctx)
	cancel()
	_, err = lim.Sync(done, q, "a", 10)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, lim.Reset(done, q), context.Canceled)
	_, err = lim.Hold(done, q, 0, "")
	require.ErrorIs(t, err, context.Canceled)
	_, err = lim.Hold(done, q, 2*time.Minute, "")
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, before, mr.Dump(), "a done context changed Redis")

	_, err = lim.Hold(ctx, q, 0, "")
	require.NoError(t, err)
	rv, err := lim.Reserve(ctx, q.Take(9))
	require.NoError(t, err)
	require.True(t, rv.OK())
	rv2, err := lim.Reserve(ctx, q.Take(1))
	require.NoError(t, err)
	require.Positive(t, rv2.Delay())
	n, err := rv2.Cancel(done)
	require.NoError(t, err)
	require.Equal(t, 1, n, "Cancel with a done context gives back")
}

// A zero Reservation (not made by Reserve) behaves as the nil one: every
// method answered a nil pointer dereference.
func TestZeroReservation(t *testing.T) {
	ctx := context.Background()
	var r Reservation
	require.False(t, r.OK())
	require.Zero(t, r.Result().Limits)
	_ = r.Delay()
	n, err := r.Cancel(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.ErrorIs(t, r.Wait(ctx), ErrInvalid)
	_, err = r.Sync(ctx, "", "", 1)
	require.ErrorIs(t, err, ErrInvalid)
	require.NoError(t, r.Refused(ctx))
}

// FailLocal's in-process limiters are bounded: one was kept for every state
// key ever decided locally, so per-user keys through a long outage grew the
// process without bound. Past the bound those full again (which hold
// nothing a new one would not) are dropped; past twice the bound, all.
func TestFailLocalLimitersBounded(t *testing.T) {
	lim := deadLimiter(t, 0.1)
	lim.local.max = 100
	ctx := context.Background()
	limit := PerSecond(1000) // the local share: 100 a second, burst 100: full again 10 ms after one
	count := func() int {
		n := 0
		lim.local.m.Range(func(any, any) bool { n++; return true })
		return n
	}
	decide := func(from, to int) {
		for i := from; i < to; i++ {
			r, err := lim.Allow(ctx, Key(fmt.Sprint("k", i), limit).Take(1))
			require.NoError(t, err)
			require.True(t, r.Allowed && r.Degraded)
			require.LessOrEqual(t, count(), 200, "more local limiters than twice the bound")
		}
	}
	// A key in use: its local share (100 an hour, burst 100) refills one
	// unit every 36 s, so it is not full again during the test.
	hot := Key("hot", Every(1000, time.Hour))
	spend := func(n int) {
		for range n {
			r, err := lim.Allow(ctx, hot.Take(1))
			require.NoError(t, err)
			require.True(t, r.Allowed)
		}
	}
	decide(0, 99)
	spend(50)
	require.Equal(t, 100, count())
	// Full again after 10 ms: waiting longer only makes them fuller.
	time.Sleep(50 * time.Millisecond)
	decide(99, 100) // the 101st: a sweep
	require.Equal(t, 2, count(), "the full ones dropped, the one in use and the new one kept")
	spend(50)
	r, err := lim.Allow(ctx, hot.Take(1))
	require.NoError(t, err)
	require.False(t, r.Allowed, "the hot key's local burst forgotten by a sweep")
	decide(100, 1000) // each used once, most not full again when swept: bounded all the same
}

// A Leaser's Allow with a context already done takes nothing, as Allow's:
// it went on to its lease call (counted in Stats.Calls), and only whether
// go-redis looked at the context decided whether a lease was charged to a
// caller that had gone.
func TestLeaserDoneContextChargesNothing(t *testing.T) {
	mr, c := redistest.NewMini(t)
	lim := New(c, Options{Timeout: -1})
	ls, err := lim.NewLeaser(Key("k", PerSecond(1000)).Take(1), LeaseOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ls.Close() })
	done, cancel := context.WithCancel(context.Background())
	cancel()
	// The client has a connection at hand, as a running process does.
	require.NoError(t, c.Ping(context.Background()).Err())
	_, err = ls.Allow(done, 1)
	require.ErrorIs(t, err, context.Canceled)
	require.Empty(t, mr.Keys(), "a done context charged")
	require.Zero(t, ls.Stats().Calls)
}

// scriptCalls counts the script calls match picks that a client sends on
// their own, and the pipelines that carry any.
type scriptCalls struct {
	match                 func(args []any) bool
	alone, pipes, inPipes atomic.Int64
}

func (h *scriptCalls) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *scriptCalls) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.match(cmd.Args()) {
			h.alone.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *scriptCalls) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := int64(0)
		for _, c := range cmds {
			if h.match(c.Args()) {
				n++
			}
		}
		if n > 0 {
			h.pipes.Add(1)
			h.inPipes.Add(n)
		}
		return next(ctx, cmds)
	}
}

// isHoldScript picks hold.lua's calls: one key, the duration.
func isHoldScript(a []any) bool {
	if len(a) != 5 || fmt.Sprint(a[2]) != "1" {
		return false
	}
	name := fmt.Sprint(a[0])
	return (name == "evalsha" || name == "eval") && strings.HasSuffix(fmt.Sprint(a[3]), ":hold")
}

// Many kept holds (per-account holds: a hold on each of 2 000 instances)
// are placed again after a restart in a few pipelined round trips, not one
// round trip each while every watched decision of the process waits for
// the check's lock: at 2 000 round trips the resync took seconds, and past
// its 2 s bound it was never done at all (owed, and started over from
// scratch at the next decision).
func TestManyKeptHoldsPlacedAgainPipelined(t *testing.T) {
	q := Quota{Name: "account", Limits: []NamedLimit{{"orders", PerMinute(6000)}}}
	const holds = 2000
	srv := redistest.Private(t)
	c := srv.Client()
	t.Cleanup(func() { _ = c.Close() })
	lim := New(c, Options{Timeout: 5 * time.Second})
	ctx := context.Background()
	require.True(t, settle(t, lim, q.For("0")).Allowed)
	placed := time.Now()
	for i := range holds {
		_, err := lim.Hold(ctx, q.For(fmt.Sprint(i)), holdFor, "418")
		require.NoError(t, err)
	}
	h := &scriptCalls{match: isHoldScript}
	c.AddHook(h)

	srv.Stop()
	require.NoError(t, srv.Start())
	requireHeld(t, settle(t, lim, q.For("7")), q, placed)
	t.Logf("placed again: %d alone, %d in %d pipelines", h.alone.Load(), h.inPipes.Load(), h.pipes.Load())
	require.LessOrEqual(t, h.alone.Load()+h.pipes.Load(), int64(20), "a round trip per hold")
	check := srv.Client()
	t.Cleanup(func() { _ = check.Close() })
	for i := range holds {
		in := lim.holdKey(q.For(fmt.Sprint(i)))
		require.Positive(t, check.PTTL(ctx, in).Val(), "hold %d not placed again", i)
		require.Equal(t, "418", check.Get(ctx, holdReasonKey(in)).Val())
	}
}

// With RestartSpent a Limiter watches for restarts from its first decision,
// so Hold did not read the run_id first; a hold placed before the first
// decision then had no run_id to compare with, and a restart before that
// decision lost it: the decision took the new run_id as the first one seen.
func TestHoldBeforeFirstDecisionWithRestartSpent(t *testing.T) {
	q := Quota{Name: "exchange", Limits: []NamedLimit{{"weight", PerMinute(6000)}}}
	srv := redistest.Private(t)
	c := srv.Client()
	t.Cleanup(func() { _ = c.Close() })
	lim := New(c, Options{Timeout: 5 * time.Second, RestartSpent: 0.5})
	placed := time.Now()
	_, err := lim.Hold(context.Background(), q, holdFor, "418")
	require.NoError(t, err)

	srv.Stop()
	require.NoError(t, srv.Start())
	requireHeld(t, settle(t, lim, q), q, placed)
}

// isSyncScript picks sync.lua's calls: one key, five arguments.
func isSyncScript(a []any) bool {
	if len(a) != 9 || fmt.Sprint(a[2]) != "1" {
		return false
	}
	name := fmt.Sprint(a[0])
	return name == "evalsha" || name == "eval"
}

// loseLoads answers SCRIPT LOAD without sending it, as a node the load did
// not reach would leave the script uncached.
type loseLoads struct{}

func (loseLoads) DialHook(next redis.DialHook) redis.DialHook { return next }
func (loseLoads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); cmd.Name() == "script" && len(a) > 1 && strings.EqualFold(fmt.Sprint(a[1]), "load") {
			return nil
		}
		return next(ctx, cmd)
	}
}
func (loseLoads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// RestartSpent's charges after a restart go out in a few pipelines too, not
// a round trip per limit seen (up to 10 000) while every decision of the
// process waits for the check. A call a node answers NOSCRIPT (the load
// did not reach it) goes again as EVAL.
func TestRestartSpentChargesPipelined(t *testing.T) {
	for _, lost := range []bool{false, true} {
		t.Run(fmt.Sprint("load lost ", lost), func(t *testing.T) { restartSpentPipelined(t, lost) })
	}
}

func restartSpentPipelined(t *testing.T, loadLost bool) {
	const keys = 1000
	srv := redistest.Private(t)
	c := srv.Client()
	t.Cleanup(func() { _ = c.Close() })
	lim := New(c, Options{Timeout: 5 * time.Second, RestartSpent: 0.5})
	ctx := context.Background()
	limit := PerHour(100)
	for i := range keys {
		r, err := lim.Allow(ctx, Key(fmt.Sprint(i), limit).Take(1))
		require.NoError(t, err)
		require.True(t, r.Allowed)
	}
	h := &scriptCalls{match: isSyncScript}
	c.AddHook(h)
	if loadLost {
		c.AddHook(loseLoads{})
	}

	srv.Stop()
	require.NoError(t, srv.Start())
	require.True(t, settle(t, lim, Key("other", limit)).Allowed)
	require.EqualValues(t, 1, lim.Stats().Restarts)
	t.Logf("charged again: %d alone, %d in %d pipelines", h.alone.Load(), h.inPipes.Load(), h.pipes.Load())
	require.LessOrEqual(t, h.alone.Load()+h.pipes.Load(), int64(10), "a round trip per limit")
	for i := range keys {
		r, err := lim.Allow(ctx, Key(fmt.Sprint(i), limit).Take(1))
		require.NoError(t, err)
		require.Equal(t, 49, r.Remaining, "key %d: not charged half its limit after the restart", i)
	}
}

// An ACL that refuses SCRIPT LOAD (decisions go on as EVAL) still gets its
// kept holds placed again after a restart: the pipelined re-placement gave
// up on the refused load, so no hold came back and a 418's ban was ignored
// (review-s11).
func TestKeptHoldsPlacedAgainWithoutScriptLoad(t *testing.T) {
	q := Quota{Name: "account", Limits: []NamedLimit{{"orders", PerMinute(6000)}}}
	srv := redistest.Private(t)
	admin := srv.Client()
	t.Cleanup(func() { _ = admin.Close() })
	ctx := context.Background()
	const pw = "n0-script-load"
	user := func() {
		t.Helper()
		require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "app", "on", ">"+pw, "~*", "+@all", "-script|load").Err())
	}
	user()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "app", Password: pw})
	t.Cleanup(func() { _ = c.Close() })
	require.Error(t, c.ScriptLoad(ctx, "return 1").Err(), "the ACL must refuse SCRIPT LOAD")
	lim := New(c, Options{Timeout: 5 * time.Second})
	require.True(t, settle(t, lim, q.For("0")).Allowed)
	placed := time.Now()
	for i := range 3 {
		_, err := lim.Hold(ctx, q.For(fmt.Sprint(i)), holdFor, "418")
		require.NoError(t, err)
	}

	srv.Stop()
	require.NoError(t, srv.Start())
	user() // a restart without an ACL file forgets the user
	requireHeld(t, settle(t, lim, q.For("1")), q, placed)
	for i := range 3 {
		in := lim.holdKey(q.For(fmt.Sprint(i)))
		require.Positive(t, admin.PTTL(ctx, in).Val(), "hold %d not placed again", i)
	}
}
