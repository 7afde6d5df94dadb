package limiter

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// gate is a go-redis hook that holds every decision sent on its own
// connection until open is closed, and counts the decisions sent each way:
// alone, or through the autopipeliner (in a pipeline, or as its batch of one,
// which it sends with a context of its own: not the caller's, which carries
// the gate's marker).
type gate struct {
	open          chan struct{}
	once          sync.Once
	direct, piped atomic.Int64
	seen          sync.Map // each decision's command, counted once (a cluster's batch meets the hook at each level)
	keys          sync.Map // the first key of each piped decision
}

func newGate(t *testing.T) *gate {
	g := &gate{open: make(chan struct{})}
	t.Cleanup(g.release) // never leave a caller held when a check fails
	return g
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// warm makes one decision through the open gate (the scripts' library
// loaded on every node by load, or found missing and the calls sent as
// EVALSHA from then on, as on miniredis), so that each decision after it is
// one command; then it closes the gate again and forgets what it counted.
func (g *gate) warm(t *testing.T, lim *Limiter, load redis.UniversalClient) {
	t.Helper()
	ctx := gated()
	_ = script.Load(ctx, load)
	g.release()
	_, err := lim.Allow(ctx, Key("warm", PerMinute(30)).Take(1))
	require.NoError(t, err)
	// Alone: one command, or two on miniredis (its FCALL refused, then EVALSHA).
	require.Positive(t, g.direct.Load(), "the warm-up decision went alone")
	require.Zero(t, g.piped.Load(), "the warm-up decision went alone")
	g.open, g.once = make(chan struct{}), sync.Once{}
	g.direct.Store(0)
	g.piped.Store(0)
	g.seen.Clear()
	g.keys.Clear()
}

func decisionCmd(c redis.Cmder) bool {
	switch c.Name() {
	case "fcall", "evalsha", "eval":
		return true
	}
	return false
}

func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }
func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		_, dup := g.seen.LoadOrStore(cmd, true)
		switch {
		case !decisionCmd(cmd) || dup:
		case ctx.Value(gateKey{}) == nil:
			g.pipe(cmd)
		default:
			g.direct.Add(1)
			<-g.open
		}
		return next(ctx, cmd)
	}
}
func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if _, dup := g.seen.LoadOrStore(c, true); decisionCmd(c) && !dup {
				g.pipe(c)
			}
		}
		return next(ctx, cmds)
	}
}

func (g *gate) pipe(c redis.Cmder) {
	g.piped.Add(1)
	g.keys.Store(fmt.Sprint(c.Args()[3]), true)
}

// gateKey marks a caller's context: a decision sent with it went alone.
type gateKey struct{}

func gated() context.Context { return context.WithValue(context.Background(), gateKey{}, true) }

// waitHeld waits until the decisions held alone and those done make n.
func (g *gate) waitHeld(t *testing.T, done *atomic.Int64, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return g.direct.Load()+done.Load() >= n },
		10*time.Second, time.Millisecond, "decisions: %d held alone, %d done, want %d", g.direct.Load(), done.Load(), n)
}

// proxied is a limiter whose client reaches a private redis-server through a
// fault proxy and a gate, warmed up; admin reaches the server directly.
type proxied struct {
	lim   *Limiter
	g     *gate
	proxy *redistest.FaultProxy
	admin *redis.Client
}

// newProxied builds it with client options o (their Addr is set to the
// proxy's) and limiter options opts.
func newProxied(t *testing.T, o *redis.Options, opts Options) proxied {
	t.Helper()
	srv := redistest.Private(t)
	admin := srv.Client()
	t.Cleanup(func() { _ = admin.Close() })
	proxy := redistest.NewFaultProxy(t, srv.Addr())
	o.Addr = proxy.Addr()
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	g := newGate(t) // released before the client closes
	c.AddHook(g)
	lim := New(c, opts)
	g.warm(t, lim, admin)
	return proxied{lim, g, proxy, admin}
}

// Concurrent decisions share round trips through the client's autopipeliner
// once apDirect of them are in flight on their own connections, and each is
// decided as it would be alone; a sequential caller never goes through it.
func TestAutoPipeShares(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := gated()
		g := newGate(t)
		b.Client.AddHook(g)
		// No Timeout: the gate holds the calls sent alone for as long as it takes.
		lim := New(b.Client, Options{Prefix: b.Prefix, Timeout: -1})
		g.warm(t, lim, b.Client)
		// 16 decisions on 4 keys of 3 per hour: 3 granted per key whichever
		// way each goes. The first apDirect go alone and are held by the
		// gate, so every later one finds them in flight.
		const n, keys = 16, 4
		var granted, done atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer done.Add(1)
				r, err := lim.Allow(ctx, Key(fmt.Sprintf("k%d", i%keys), PerHour(3)).Take(1))
				if err != nil {
					errs <- err
					return
				}
				if r.Allowed {
					granted.Add(1)
				}
			}()
		}
		g.waitHeld(t, &done, n)
		g.release()
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.EqualValues(t, apDirect, g.direct.Load(), "decisions sent alone")
		require.EqualValues(t, n-apDirect, g.piped.Load(), "decisions sent through the autopipeliner")
		require.EqualValues(t, 3*keys, granted.Load(), "3 granted per key, whichever way each went")
		for i := range keys {
			r, err := lim.Allow(ctx, Key(fmt.Sprintf("k%d", i), PerHour(3)).Take(1))
			require.NoError(t, err)
			require.False(t, r.Allowed, "key %d: every unit was charged", i)
		}

		// One caller at a time: always alone.
		piped := g.piped.Load()
		for i := range 20 {
			_, err := lim.Allow(ctx, Key(fmt.Sprintf("s%d", i), PerHour(3)).Take(1))
			require.NoError(t, err)
		}
		require.Equal(t, piped, g.piped.Load(), "a sequential caller's decisions went through the autopipeliner")
	})
}

// A batch whose replies are lost (Redis ran it, the connection dropped) is
// not sent again, even by a client that retries: each decision in it is
// charged at most once, as a decision sent alone is
// (TestSlowServerDeadlineAndRetries).
func TestAutoPipeNeverResends(t *testing.T) {
	ctx := gated()
	o := redistest.ClientOptions("")
	o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff = 2, time.Millisecond, time.Millisecond
	// Warmed (the library loaded, the pool dialled) through the proxy before the fault.
	px := newProxied(t, o, Options{Prefix: "piperetry", Timeout: -1, Failure: FailOpen})
	lim, g, proxy, c := px.lim, px.g, px.proxy, px.admin
	// Every decision's reply (one integer: allow.lua's grant) is dropped and
	// its connection cut.
	var dropped atomic.Int64
	proxy.SetDropReplies(func(b []byte) bool {
		if bytes.HasPrefix(b, []byte(":")) {
			dropped.Add(1)
			return true
		}
		return false
	})
	const n = 12
	var done atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer done.Add(1)
			_, _ = lim.Allow(ctx, Key(fmt.Sprintf("k%d", i), PerHour(30)).Take(3))
		}()
	}
	// The first apDirect are held alone; the others go through the
	// autopipeliner, whose batches fail (Redis ran them, their replies are
	// lost): they answer under FailOpen.
	g.waitHeld(t, &done, n)
	require.Positive(t, g.piped.Load(), "no decision went through the autopipeliner")
	g.release()
	wg.Wait()
	proxy.SetDropReplies(nil)
	time.Sleep(20 * time.Millisecond) // the last call has run before its reply was dropped
	require.Positive(t, dropped.Load())
	check := New(c, Options{Prefix: "piperetry"})
	var charged int
	for i := range n {
		key := fmt.Sprintf("k%d", i)
		r, err := check.Allow(ctx, Key(key, PerHour(30)).Take(1))
		require.NoError(t, err)
		got := 30 - 1 - r.Remaining
		require.Contains(t, []int{0, 3}, got, "%s: charged %d units by one Take(3) (piped: %v)", key, got, pipedKey(g, key))
		charged += got
	}
	// The piped decisions were written before their replies were dropped:
	// Redis ran them.
	require.Positive(t, charged)
}

func pipedKey(g *gate, key string) bool {
	found := false
	g.keys.Range(func(k, _ any) bool {
		if strings.Contains(k.(string), "{"+key+"}") {
			found = true
		}
		return !found
	})
	return found
}

// A caller sharing a round trip keeps its own deadline: when Redis is slow,
// it returns at its deadline, not when the batch it went out in comes back.
func TestAutoPipeDeadline(t *testing.T) {
	px := newProxied(t, redistest.ClientOptions(""), Options{Prefix: "pipedl"}) // ContextTimeoutEnabled
	lim, g, proxy := px.lim, px.g, px.proxy
	ctx := gated()

	// apDirect callers held alone, so that the next ones share.
	var held sync.WaitGroup
	for i := range apDirect {
		held.Add(1)
		go func() {
			defer held.Done()
			_, _ = lim.Allow(ctx, Key(fmt.Sprintf("h%d", i), PerMinute(30)).Take(1))
		}()
	}
	require.Eventually(t, func() bool { return g.direct.Load() == apDirect }, 10*time.Second, time.Millisecond)
	proxy.SetDelay(time.Second) // every reply from now on

	const n = 8
	var wg sync.WaitGroup
	took := make([]time.Duration, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, errs[i] = lim.Allow(dctx, Key(fmt.Sprintf("k%d", i), PerMinute(30)).Take(1))
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	// None went alone (some are still queued behind the slow batch).
	require.EqualValues(t, apDirect, g.direct.Load(), "decisions sent alone")
	for i := range n {
		require.ErrorIs(t, errs[i], context.DeadlineExceeded, "caller %d", i)
		// 100 ms deadline; 400 ms of slack for a loaded machine, still well
		// short of the 1 s the batch waits on Redis.
		require.Less(t, took[i], 500*time.Millisecond, "caller %d returned after its batch, not at its deadline", i)
	}
	g.release()
	held.Wait()
}

// On go-redis's default client (no ContextTimeoutEnabled, retries: the
// limiter's default Timeout bounds the waits for a connection, not a read), a
// shared call waits for its reply as a call sent alone does: a Redis slower
// than Timeout but within the client's ReadTimeout still decides every call,
// none answers under the failure policy, and the breaker stays closed.
func TestAutoPipeWaitsLikeAlone(t *testing.T) {
	px := newProxied(t, &redis.Options{}, Options{Prefix: "pipewait", Failure: FailOpen}) // go-redis's defaults
	lim, g, proxy, admin := px.lim, px.g, px.proxy, px.admin
	g.release()
	proxy.SetDelay(600 * time.Millisecond) // above the 250 ms Timeout, below the 3 s ReadTimeout
	ctx := gated()
	const n = 32
	var wg sync.WaitGroup
	errs := make([]error, n)
	granted := make([]bool, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := lim.Allow(ctx, Key(fmt.Sprintf("k%d", i), PerHour(30)).Take(1))
			errs[i], granted[i] = err, r.Allowed
		}()
	}
	wg.Wait()
	proxy.SetDelay(0)
	require.Positive(t, g.piped.Load(), "no decision went through the autopipeliner")
	for i := range n {
		require.NoError(t, errs[i], "caller %d", i)
		require.True(t, granted[i], "caller %d", i)
	}
	st := lim.Stats()
	require.Zero(t, st.Unavailable, "decisions answered by the failure policy")
	require.EqualValues(t, n+1, st.Allowed, "the warm-up and the n")
	check := New(admin, Options{Prefix: "pipewait"})
	for i := range n {
		r, err := check.Allow(context.Background(), Key(fmt.Sprintf("k%d", i), PerHour(30)).Take(1))
		require.NoError(t, err)
		require.Equal(t, 28, r.Remaining, "k%d: charged once by the shared call (one unit back every 2 minutes)", i)
	}
}

// The autopipeliner is the client's: when something else closes it, the next
// shared calls go through a new one, and none fails for it.
func TestAutoPipeClosedUnderneath(t *testing.T) {
	srv := redistest.Private(t)
	c := srv.Client()
	defer c.Close()
	g := newGate(t)
	c.AddHook(g)
	lim := New(c, Options{Prefix: "pipeclosed", Timeout: -1})
	g.warm(t, lim, c)
	ctx := gated()
	round := func(r int) {
		t.Helper()
		var wg sync.WaitGroup
		var done atomic.Int64
		errs := make([]error, 12)
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer done.Add(1)
				_, errs[i] = lim.Allow(ctx, Key(fmt.Sprintf("r%dk%d", r, i), PerHour(3)).Take(1))
			}()
		}
		g.waitHeld(t, &done, 12)
		g.release()
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "round %d caller %d", r, i)
		}
		g.open, g.once = make(chan struct{}), sync.Once{}
	}
	round(0)
	piped := g.piped.Load()
	require.Positive(t, piped)
	p, err := c.AsyncAutoPipeline()
	require.NoError(t, err)
	require.NoError(t, p.Close())
	g.direct.Store(0)
	round(1)
	require.Greater(t, g.piped.Load(), piped, "no call shared after the autopipeliner was closed")
	require.Zero(t, lim.Stats().Unavailable)
}

// A shared Reserve whose caller cancels (no deadline) while Redis is slow
// still gets its reservation, as one sent alone does (go-redis reads on
// through a cancel): the units Redis booked can be given back, not lost.
func TestAutoPipeCancelKeepsBooking(t *testing.T) {
	px := newProxied(t, redistest.ClientOptions(""), Options{Prefix: "pipecancel", Timeout: -1}) // ContextTimeoutEnabled
	lim, g, proxy := px.lim, px.g, px.proxy
	ctx := gated()
	full := Key("full", PerMinute(3)) // one unit back every 20 s
	g.release()
	for range 3 {
		r, err := lim.Allow(ctx, full.Take(1))
		require.NoError(t, err)
		require.True(t, r.Allowed)
	}
	g.open, g.once = make(chan struct{}), sync.Once{}
	g.direct.Store(0)

	var held sync.WaitGroup // apDirect calls alone, so that the Reserve shares
	for i := range apDirect {
		held.Add(1)
		go func() {
			defer held.Done()
			_, _ = lim.Allow(ctx, Key(fmt.Sprintf("h%d", i), PerHour(30)).Take(1))
		}()
	}
	require.Eventually(t, func() bool { return g.direct.Load() == apDirect }, 10*time.Second, time.Millisecond)
	proxy.SetDelay(300 * time.Millisecond)
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	r, err := lim.Reserve(cctx, full.Take(1))
	require.Equal(t, apDirect, int(g.direct.Load()), "the Reserve did not share: it went alone")
	require.NoError(t, err, "the reservation Redis booked was lost to its caller")
	require.Greater(t, r.Delay(), 10*time.Second, "booked at the next unit, about 20 s out")
	proxy.SetDelay(0)
	g.release()
	held.Wait()
	n, err := r.Cancel(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, n, "units given back")
	// Given back: the next booking is again one unit out, not two.
	r2, err := lim.Reserve(context.Background(), full.Take(1))
	require.NoError(t, err)
	require.Less(t, r2.Delay(), 30*time.Second, "a unit stayed booked")
}
