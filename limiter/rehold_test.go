package limiter

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// holdFor is the hold the restart tests place: far longer than a restart
// takes on a loaded machine, so that it is still in force when checked.
const holdFor = 30 * time.Second

// settle makes decisions of lim on q until one is Redis's answer (the first
// after a restart may fail on a dead connection and answer under the
// policy), within 10 s, and returns it.
func settle(t *testing.T, lim *Limiter, q Quota) Result {
	t.Helper()
	var last error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		r, err := lim.Allow(context.Background(), q.Take(1))
		if err == nil && !r.Degraded {
			return r
		}
		last = err
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no answer from Redis within 10 s: %v", last)
	return Result{}
}

// requireHeld checks that r was denied by q's hold with what the hold,
// placed at placed for holdFor, has left: at most holdFor, and at least what
// remained when the decision was answered (less 1 ms: Redis keeps a hold's
// TTL to the millisecond).
func requireHeld(t *testing.T, r Result, q Quota, placed time.Time) {
	t.Helper()
	require.False(t, r.Allowed, "granted inside the hold")
	require.Equal(t, HoldName, r.DeniedBy)
	require.Equal(t, q.Name, r.DeniedQuota)
	require.LessOrEqual(t, r.RetryAfter, holdFor)
	require.GreaterOrEqual(t, r.RetryAfter, holdFor-time.Since(placed)-time.Millisecond)
}

// A 418's hold must outlive Redis losing its state (a restart without
// persistence here; a failover to a replica the hold's write had not reached
// is the same to the limiter). The Limiter that placed it places it again,
// for what it has left, once it finds the restart, and so does a Limiter
// that was denied by it: either way another process of the fleet is denied
// by the hold after the restart, without RestartSpent. Before this, the
// restart forgot the hold and the whole fleet resumed inside the ban.
func TestHoldSurvivesRestart(t *testing.T) {
	q := Quota{Name: "exchange", Limits: []NamedLimit{{"weight", PerMinute(6000)}}}
	for _, who := range []string{"placer", "denied"} {
		t.Run(who, func(t *testing.T) {
			srv := redistest.Private(t)
			fleet := func() *Limiter {
				c := srv.Client()
				t.Cleanup(func() { _ = c.Close() })
				return New(c, Options{Timeout: 5 * time.Second})
			}
			a, b := fleet(), fleet()
			ctx := context.Background()
			// b decides before the hold: its client has dialed, as in a
			// fleet that was running.
			require.True(t, settle(t, b, q).Allowed)
			placed := time.Now()
			left, err := a.Hold(ctx, q, holdFor, "418 from the exchange")
			require.NoError(t, err)
			require.Equal(t, holdFor, left)
			if who == "denied" {
				requireHeld(t, settle(t, b, q), q, placed)
				// b asks the hold's reason, off its decision's path.
				require.Eventually(t, func() bool {
					return b.restart.holds.left()[a.holdKey(q)].reason != ""
				}, 5*time.Second, time.Millisecond, "b never learnt the hold's reason")
			}

			srv.Stop()
			require.NoError(t, srv.Start())
			after := b
			if who == "placer" {
				// a finds the restart at its first decision (any quota),
				// places its hold again first, then answers it.
				requireHeld(t, settle(t, a, q), q, placed)
				require.EqualValues(t, 1, a.Stats().Restarts)
				// c never saw the hold: a third process of the fleet.
				after = fleet()
			}
			// b (or c) is denied by the hold it did not place, with what it
			// has left.
			requireHeld(t, settle(t, after, q), q, placed)
			// Placed again by the Limiter that placed it or by one it denied,
			// the hold has its reason (before, b placed it with none).
			in, err := after.Inspect(ctx, q.Name)
			require.NoError(t, err)
			require.Len(t, in, 1)
			require.Equal(t, "418 from the exchange", in[0].HoldReason, "the reason placed again with the hold")
		})
	}
}

// A hold released (Hold with d ≤ 0) or ended is not placed again, and a
// Limiter that keeps no hold in force does not check Redis's run_id at all
// (RestartSpent 0): its decisions cost what they did.
func TestReleasedHoldNotPlacedAgain(t *testing.T) {
	q := Quota{Name: "exchange", Limits: []NamedLimit{{"weight", PerMinute(6000)}}}
	srv := redistest.Private(t)
	c := srv.Client()
	t.Cleanup(func() { _ = c.Close() })
	lim := New(c, Options{Timeout: 5 * time.Second})
	ctx := context.Background()
	require.True(t, settle(t, lim, q).Allowed)
	require.Empty(t, lim.restart.runID, "a run_id check without a hold")
	_, err := lim.Hold(ctx, q, holdFor, "")
	require.NoError(t, err)
	require.True(t, lim.restart.on())
	_, err = lim.Hold(ctx, q, 0, "")
	require.NoError(t, err)

	srv.Stop()
	require.NoError(t, srv.Start())
	require.True(t, settle(t, lim, q).Allowed, "a released hold placed again")
	require.False(t, lim.restart.on(), "decisions watch for a restart with no hold in force")
	require.Zero(t, lim.Stats().Restarts)
}

// keptHolds: bounded, each hold's end on the local clock, a hold past its
// end dropped. Time passing is moving base back.
func TestKeptHolds(t *testing.T) {
	var k keptHolds
	require.False(t, k.inForce())
	require.True(t, k.keep("a", 10*time.Second, "418"), "the first hold in force")
	require.False(t, k.keep("b", 20*time.Second, ""))
	require.False(t, k.keep("a", time.Second, ""), "a shorter hold")
	require.True(t, k.inForce())
	left := k.left()
	require.Len(t, left, 2)
	require.InDelta(t, 10*time.Second, left["a"].end, float64(time.Second), "the longer end stands")
	require.Equal(t, "418", left["a"].reason, "a hold seen keeps the reason placed")

	k.base = k.base.Add(-15 * time.Second) // 15 s pass
	left = k.left()
	require.Len(t, left, 1, "a ended")
	require.Contains(t, left, "b")
	require.True(t, k.inForce())
	k.base = k.base.Add(-10 * time.Second)
	require.False(t, k.inForce())
	require.Empty(t, k.left())
	require.True(t, k.keep("c", time.Second, ""), "in force again after all ended")

	k.forget("c")
	require.Empty(t, k.left())

	// Full: the hold ending soonest gives way to a longer one, not to a
	// shorter one.
	for i := range maxKeptHolds {
		k.keep(fmt.Sprint(i), time.Duration(i+10)*time.Second, "")
	}
	k.keep("short", time.Second, "")
	k.keep("long", time.Hour, "")
	left = k.left()
	require.Len(t, left, maxKeptHolds)
	require.NotContains(t, left, "short")
	require.NotContains(t, left, "0")
	require.Contains(t, left, "long")
}

// The same on a cluster whose master of the hold's slot restarts: the hold
// is placed again on it, and another Limiter is denied by it.
func TestHoldSurvivesClusterMasterRestart(t *testing.T) {
	nodes := redistest.PrivateCluster(t)
	fleet := func() *Limiter {
		o := redistest.ClusterOptions(nodes)
		o.MaxRetries = -1
		c := redis.NewClusterClient(o)
		t.Cleanup(func() { _ = c.Close() })
		return New(c, Options{Prefix: "cr", Timeout: 5 * time.Second})
	}
	a, b := fleet(), fleet()
	q := Quota{Name: "exchange", Limits: []NamedLimit{{"weight", PerMinute(6000)}}}
	victim := nodes[redistest.Slot(a.holdKey(q))*3/16384]
	ctx := context.Background()
	require.True(t, settle(t, a, q).Allowed)
	placed := time.Now()
	_, err := a.Hold(ctx, q, holdFor, "")
	require.NoError(t, err)

	victim.Stop()
	require.NoError(t, victim.Start())
	requireHeld(t, settle(t, a, q), q, placed)
	requireHeld(t, settle(t, b, q), q, placed)
}

// infoCount counts the INFO commands a client sends, and its dials.
type infoCount struct{ info, dials atomic.Int64 }

func (h *infoCount) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.dials.Add(1)
		return next(ctx, network, addr)
	}
}

func (h *infoCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "info" {
			h.info.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (*infoCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A server that refuses the run_id read (miniredis has no INFO server) is
// asked when a hold comes into force and after the client dials a new
// connection, never at every decision the hold denies: the check costs
// decisions no round trip there either.
func TestKeptHoldNoRunIDNotPerDecision(t *testing.T) {
	_, c := redistest.NewMini(t)
	var h infoCount
	c.AddHook(&h)
	lim := New(c, Options{Timeout: -1})
	ctx := context.Background()
	q := Quota{Name: "exchange", Limits: []NamedLimit{{"weight", PerMinute(6000)}}}
	_, err := lim.Hold(ctx, q, holdFor, "")
	require.NoError(t, err)
	require.EqualValues(t, 1, h.info.Load(), "the run_id read before the hold")
	const decisions = 50
	for range decisions {
		r, err := lim.Allow(ctx, q.Take(1))
		require.NoError(t, err)
		require.Equal(t, HoldName, r.DeniedBy)
	}
	// One read when the hold came into force, then at most one per
	// connection dialed (the first of them by that read itself).
	t.Logf("%d decisions: %d dials, %d INFO", decisions, h.dials.Load(), h.info.Load())
	require.LessOrEqual(t, h.info.Load(), 1+h.dials.Load())
	require.Less(t, h.dials.Load(), int64(decisions/2), "a dial per decision: the bound above says nothing")
}

// A hold another process released (redquota release) is not placed again
// after a restart by the Limiter that placed it: its first decision granted
// at once after the release shows the hold gone, and it forgets it. Without
// that, the restart brought back a hold nobody wanted for what it had left.
func TestHoldReleasedElsewhereNotPlacedAgain(t *testing.T) {
	q := Quota{Name: "exchange", Limits: []NamedLimit{{"weight", PerMinute(6000)}}}
	srv := redistest.Private(t)
	fleet := func() *Limiter {
		c := srv.Client()
		t.Cleanup(func() { _ = c.Close() })
		return New(c, Options{Timeout: 5 * time.Second})
	}
	a, operator := fleet(), fleet()
	ctx := context.Background()
	require.True(t, settle(t, a, q).Allowed)
	_, err := a.Hold(ctx, q, holdFor, "418 from the exchange")
	require.NoError(t, err)
	_, err = operator.Hold(ctx, q, 0, "") // released by another process
	require.NoError(t, err)
	require.True(t, settle(t, a, q).Allowed, "granted once the hold is released")
	require.False(t, a.restart.holds.inForce(), "a still keeps the released hold")

	srv.Stop()
	require.NoError(t, srv.Start())
	require.True(t, settle(t, a, q).Allowed, "the released hold placed again after the restart")
	require.True(t, settle(t, fleet(), q).Allowed)
}

// A burst of Holds before any hold is in force (a 429 reaching many
// requests at once) reads Redis's run_id once, not once per Hold in turn:
// on a warm pool no connection is dialed between them, so after the first
// read there is nothing new to ask. (Before, 64 such Holds sent 21 INFO, one
// after another, each Hold waiting for those ahead of it.)
func TestHoldBurstReadsRunIDOnce(t *testing.T) {
	srv := redistest.Shared(t)
	o := redistest.ClientOptions(srv.Addr())
	o.PoolSize, o.MinIdleConns = 64, 64
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	warmPool(t, c, 64)
	var h infoCount
	c.AddHook(&h)
	lim := New(c, Options{Prefix: redistest.NewPrefix(t), Timeout: 5 * time.Second})
	q := Quota{Name: "exchange", Limits: []NamedLimit{{"weight", PerMinute(6000)}}}
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			_, err := lim.Hold(context.Background(), q, holdFor, "429")
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	t.Logf("64 Holds: %d dials, %d INFO", h.dials.Load(), h.info.Load())
	require.LessOrEqual(t, h.info.Load(), 1+h.dials.Load())
}
