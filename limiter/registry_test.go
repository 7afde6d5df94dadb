package limiter

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// defGate is a go-redis hook that holds the first pipeline of definitions
// until open is closed, and records every definition write: the size of each
// pipeline that carried them (a write sent alone is a pipeline of 1).
type defGate struct {
	roundTrips
	hit, open chan struct{}
	once      sync.Once
	opened    sync.Once
	mu        sync.Mutex
	sizes     []int
	keys      map[string]bool
	// stallAt, when above 0, is the pipeline of definitions (counted from
	// 1) the hook holds until its context ends: a Redis too slow for
	// registryTimeout.
	stallAt int
}

// newDefGate returns a closed gate's hook; release opens it (at the test's
// end at the latest, so that a failed test leaves no writer held).
func newDefGate(t *testing.T) *defGate {
	g := &defGate{hit: make(chan struct{}), open: make(chan struct{}), keys: map[string]bool{}}
	t.Cleanup(g.release)
	return g
}

func (g *defGate) release() { g.opened.Do(func() { close(g.open) }) }

func (g *defGate) record(cmds []redis.Cmder) {
	var n int
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range cmds {
		if isDef(c) {
			n++
			g.keys[fmt.Sprint(c.Args()[1])] = true
		}
	}
	if n > 0 {
		g.sizes = append(g.sizes, n)
	}
}

// wait holds the first definitions until open is closed. The hold stands
// for a writer held up (by the test), not for a slow Redis: it does not
// count against the pipeline's registryTimeout, which a loaded machine
// could pass while the test makes its decisions (the write then fails,
// as it should after a real wait that long).
func (g *defGate) wait(ctx context.Context, cmds []redis.Cmder) context.Context {
	for _, c := range cmds {
		if isDef(c) {
			held := false
			g.once.Do(func() {
				close(g.hit)
				<-g.open
				held = true
			})
			if held {
				return context.WithoutCancel(ctx)
			}
			return ctx
		}
	}
	return ctx
}

func (g *defGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	next = g.roundTrips.ProcessHook(next)
	return func(ctx context.Context, cmd redis.Cmder) error {
		cmds := []redis.Cmder{cmd}
		ctx = g.wait(ctx, cmds)
		g.record(cmds)
		return next(ctx, cmd)
	}
}

func (g *defGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	next = g.roundTrips.ProcessPipelineHook(next)
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ctx = g.wait(ctx, cmds)
		g.record(cmds)
		g.mu.Lock()
		stall := g.stallAt > 0 && isDef(cmds[0]) && len(g.sizes) == g.stallAt
		g.mu.Unlock()
		if stall {
			<-ctx.Done()
			return ctx.Err()
		}
		return next(ctx, cmds)
	}
}

func (g *defGate) written() ([]int, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.sizes...), len(g.keys)
}

// waitWriterEnds waits until lim's writer has ended and no writer goroutine
// is left. Bounded: 5 s (it ends one registryLinger after its last batch).
func waitWriterEnds(t *testing.T, lim *Limiter) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		lim.reg.mu.Lock()
		writing, queued := lim.reg.writing, len(lim.reg.queue)
		lim.reg.mu.Unlock()
		if !writing && registryGoroutines() == 0 {
			require.Zero(t, queued)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry writer still running (writing %v, %d goroutines, %d queued)", writing, registryGoroutines(), queued)
		}
		time.Sleep(time.Millisecond)
	}
}

// Definitions go out in pipelines, never with a decision, and a decision
// never waits for them: while the writer is stuck on its first pipeline (a
// slow Redis), 600 decisions on new keys each make their one round trip and
// queue their definitions, which the writer then sends as two pipelines
// (registryBatch 512 + 88), each SET to its key's node on a cluster. Then
// the writer ends: no goroutine is left behind.
func TestRegistryBatchesOffTheDecisionPath(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		g := newDefGate(t)
		b.Client.AddHook(g)
		// No Timeout: a loaded machine (-race) can stretch a decision past
		// the default 250 ms, which is not what this test is about.
		lim := newLim(b, Options{Timeout: -1})
		limit := PerMinute(10)
		first := Key("first", limit)
		_, err := lim.Allow(ctx, first.Take(1))
		require.NoError(t, err)
		select {
		case <-g.hit: // the writer holds first's definition, blocked
		case <-time.After(5 * time.Second):
			t.Fatal("the writer never sent the first definition")
		}
		const n = 600
		n0 := g.n.Load()
		slots := map[int]bool{}
		for i := range n {
			k := "user:" + strconv.Itoa(i)
			slots[redistest.Slot(lim.holdKey(Quota{Name: k}))] = true
			r, err := lim.Allow(ctx, Key(k, limit).Take(1))
			require.NoError(t, err)
			require.True(t, r.Allowed)
		}
		if b.Kind != redistest.Cluster { // a cluster client may also refresh its slots
			require.Equal(t, int64(n), g.n.Load()-n0, "round trips of %d decisions", n)
		}
		require.Greater(t, len(slots), n/2, "keys in many slots")
		lim.reg.mu.Lock()
		require.Len(t, lim.reg.queue, n, "queued while the writer is stuck")
		lim.reg.mu.Unlock()
		g.release()

		waitWriterEnds(t, lim)
		sizes, keys := g.written()
		require.Equal(t, []int{1, registryBatch, n - registryBatch}, sizes)
		require.Equal(t, n+1, keys)
		require.Zero(t, g.mixed.Load(), "definitions sent with other commands")
		for _, k := range []string{"first", "user:0", "user:599"} {
			head := lim.holdKey(Quota{Name: k})
			v, err := b.Client.Get(ctx, defKey(head)).Bytes()
			require.NoError(t, err, k)
			back, err := parseDefinition(v)
			require.NoError(t, err)
			require.Equal(t, k, back.Name)
			ttl, err := b.Client.PTTL(ctx, defKey(head)).Result()
			require.NoError(t, err)
			require.InDelta(t, float64(2*time.Minute+registryEvery), float64(ttl), float64(5*time.Second), k)
		}
		if b.Kind == redistest.Cluster {
			// Every definition landed, on whichever master holds its slot.
			for i := range n {
				require.Equal(t, int64(1), b.Client.Exists(ctx, defKey(lim.holdKey(Quota{Name: "user:" + strconv.Itoa(i)}))).Val())
			}
		}
	})
}

// The queue is bounded: with the writer stuck, due definitions past the
// bound are dropped, not waited for, and written at their next interval.
func TestRegistryQueueBound(t *testing.T) {
	m, c := redistest.NewMini(t)
	ctx := context.Background()
	base := time.Now()
	var now atomic.Int64
	now.Store(base.UnixNano())
	registryNow = func() time.Time { return time.Unix(0, now.Load()) }
	t.Cleanup(func() { registryNow = time.Now })
	g := newDefGate(t)
	c.AddHook(g)
	lim := New(c, Options{Prefix: "qb", Timeout: -1})
	lim.reg.queueMax = 8
	limit := PerSecond(10)
	_, err := lim.Allow(ctx, Key("k0", limit).Take(1))
	require.NoError(t, err)
	<-g.hit
	for i := 1; i <= 20; i++ {
		_, err := lim.Allow(ctx, Key("k"+strconv.Itoa(i), limit).Take(1))
		require.NoError(t, err)
	}
	g.release()
	waitWriterEnds(t, lim)
	written := func() (n int) {
		for i := 0; i <= 20; i++ {
			if m.Exists(defKey(lim.holdKey(Quota{Name: "k" + strconv.Itoa(i)}))) {
				n++
			}
		}
		return n
	}
	require.Equal(t, 1+8, written(), "k0, then the 8 the queue held")
	require.False(t, m.Exists(defKey(lim.holdKey(Quota{Name: "k20"}))), "dropped")

	// Within the interval nothing is retried; after it, every one is written.
	for i := 0; i <= 20; i++ {
		_, err := lim.Allow(ctx, Key("k"+strconv.Itoa(i), limit).Take(1))
		require.NoError(t, err)
	}
	waitWriterEnds(t, lim)
	require.Equal(t, 9, written())
	now.Store(base.Add(registryEvery).UnixNano())
	lim.reg.queueMax = 0 // registryQueueMax
	for i := 0; i <= 20; i++ {
		_, err := lim.Allow(ctx, Key("k"+strconv.Itoa(i), limit).Take(1))
		require.NoError(t, err)
	}
	waitWriterEnds(t, lim)
	require.Equal(t, 21, written())
}

// A pipeline Redis does not answer within registryTimeout: the writer drops
// the rest of what it took (written at their next interval) instead of
// waiting registryTimeout again for each pipeline of it.
func TestRegistryGivesUpOnASlowRedis(t *testing.T) {
	m, c := redistest.NewMini(t)
	ctx := context.Background()
	g := newDefGate(t)
	g.stallAt = 2
	c.AddHook(g)
	lim := New(c, Options{Prefix: "slow", Timeout: -1})
	limit := PerSecond(10)
	_, err := lim.Allow(ctx, Key("k0", limit).Take(1))
	require.NoError(t, err)
	<-g.hit
	const n = 600
	for i := 1; i <= n; i++ {
		_, err := lim.Allow(ctx, Key("k"+strconv.Itoa(i), limit).Take(1))
		require.NoError(t, err)
	}
	g.release()
	waitWriterEnds(t, lim) // one registryTimeout (2 s) for the stalled pipeline
	sizes, _ := g.written()
	require.Equal(t, []int{1, registryBatch}, sizes, "the pipeline after the stalled one is not sent")
	require.True(t, m.Exists(defKey(lim.holdKey(Quota{Name: "k0"}))))
	require.False(t, m.Exists(defKey(lim.holdKey(Quota{Name: "k1"}))), "stalled: not written")
	require.False(t, m.Exists(defKey(lim.holdKey(Quota{Name: "k" + strconv.Itoa(n)}))), "dropped")
}

// A client with Do but no Pipeline (a wrapper) still gets its definitions
// written, one by one, by the writer.
func TestRegistryWithoutPipeline(t *testing.T) {
	m, c := redistest.NewMini(t)
	ctx := context.Background()
	_, pipelines := any(doOnly{}).(pipeliner)
	require.False(t, pipelines)
	lim := New(doOnly{c}, Options{Prefix: "do", Timeout: -1})
	for i := range 3 {
		_, err := lim.Allow(ctx, Key("d"+strconv.Itoa(i), PerSecond(10)).Take(1))
		require.NoError(t, err)
	}
	waitWriterEnds(t, lim)
	for i := range 3 {
		require.True(t, m.Exists(defKey(lim.holdKey(Quota{Name: "d" + strconv.Itoa(i)}))))
	}
}

// doOnly is a client wrapper with Do but no Pipeline.
type doOnly struct{ c *redis.Client }

func (d doOnly) Eval(ctx context.Context, s string, k []string, a ...any) *redis.Cmd {
	return d.c.Eval(ctx, s, k, a...)
}
func (d doOnly) EvalSha(ctx context.Context, s string, k []string, a ...any) *redis.Cmd {
	return d.c.EvalSha(ctx, s, k, a...)
}
func (d doOnly) EvalRO(ctx context.Context, s string, k []string, a ...any) *redis.Cmd {
	return d.c.EvalRO(ctx, s, k, a...)
}
func (d doOnly) EvalShaRO(ctx context.Context, s string, k []string, a ...any) *redis.Cmd {
	return d.c.EvalShaRO(ctx, s, k, a...)
}
func (d doOnly) ScriptExists(ctx context.Context, h ...string) *redis.BoolSliceCmd {
	return d.c.ScriptExists(ctx, h...)
}
func (d doOnly) ScriptLoad(ctx context.Context, s string) *redis.StringCmd {
	return d.c.ScriptLoad(ctx, s)
}
func (d doOnly) Del(ctx context.Context, k ...string) *redis.IntCmd { return d.c.Del(ctx, k...) }
func (d doOnly) Do(ctx context.Context, a ...any) *redis.Cmd        { return d.c.Do(ctx, a...) }

// A Redis restarted without its data (no persistence, a failover) loses
// every definition: the next decision after the client reconnects writes its
// quota's definition again, so that an operator's status shows the fleet at
// once, not up to registryEvery later.
func TestRegistryRewrittenAfterRestart(t *testing.T) {
	srv := redistest.Private(t)
	client := srv.Client()
	defer client.Close()
	ctx := context.Background()
	lim := New(client, Options{})
	q := Quota{Name: "weight", Limits: []NamedLimit{{Name: "w", Limit: PerMinute(100)}}}
	described := func() bool {
		states, err := lim.Inspect(ctx)
		return err == nil && len(states) == 1 && len(states[0].Limits) == 1 && states[0].Quota.Name == "weight"
	}
	// waitDescribed waits for the writer, which sends a definition about
	// registryLinger (10 ms) after the decision that queued it; 3 s is that
	// on a loaded machine, far below registryEvery.
	waitDescribed := func(when string) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); !described(); {
			if time.Now().After(deadline) {
				t.Fatalf("%s: quota not described (Inspect finds no definition)", when)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	_, err := lim.Allow(ctx, Charge{Quota: q})
	require.NoError(t, err)
	waitDescribed("before the restart")

	srv.Stop()
	require.NoError(t, srv.Start())
	require.False(t, described(), "the restarted Redis still has the definition")
	// A restart takes longer than registryRedialAge; this one need not.
	// (Waited, not shifted with registryNow: a global other tests' leftover
	// goroutines may read.)
	time.Sleep(registryRedialAge)
	// The first decision may meet a connection that died with the old
	// process (fail closed); decide until one is answered.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err = lim.Allow(ctx, Charge{Quota: q}); err == nil {
			break
		}
		require.False(t, time.Now().After(deadline), "no decision answered after the restart: %v", err)
		time.Sleep(10 * time.Millisecond)
	}
	waitDescribed("after the restart")
}
