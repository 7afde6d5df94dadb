package limiter

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// TestCoalescedMatchesSequential: R identical decisions sent as one coalesced
// call get exactly the replies R sequential calls get, at the same Redis time,
// from random bucket states, with and without a hold.
func TestCoalescedMatchesSequential(t *testing.T) {
	m, c := redistest.NewMini(t)
	ctx := context.Background()
	lim := New(c, Options{Prefix: "c", Timeout: 10 * time.Second})
	rng := rand.New(rand.NewPCG(7, 8))
	now := int64(1_700_000_000_000_000)
	for round := range 300 {
		limit := Limit{Rate: 1 + rng.IntN(50), Period: time.Duration(1+rng.IntN(5000)) * time.Millisecond}
		limit.Burst = 1 + rng.IntN(limit.Rate*2)
		n := 1 + rng.IntN(limit.most())
		reps := 2 + rng.IntN(20)
		used := rng.IntN(limit.most() + 1)
		hold := rng.IntN(4) == 0
		m.SetTime(time.UnixMicro(now))
		keys := [2]string{"seq" + string(rune('a'+round%26)), "bat" + string(rune('a'+round%26))}
		for _, k := range keys {
			if err := lim.Reset(ctx, Quota{Name: k}); err != nil {
				t.Fatal(err)
			}
			if used > 0 {
				if _, err := lim.Allow(ctx, Key(k, limit).Take(used)); err != nil {
					t.Fatal(err)
				}
			}
			if hold {
				if _, err := lim.Hold(ctx, Quota{Name: k}, time.Millisecond, ""); err != nil {
					t.Fatal(err)
				}
			}
		}
		var seq []Result
		for range reps {
			r, err := lim.Allow(ctx, Key(keys[0], limit).Take(n))
			if err != nil {
				t.Fatal(err)
			}
			seq = append(seq, r)
		}
		var p plan
		if err := lim.single(&p, keys[1], limit, n); err != nil {
			t.Fatal(err)
		}
		p.reps = reps
		p.out = make([]reply, reps)
		var head reply
		if err := lim.decide(ctx, &p, 0, &head); err != nil {
			t.Fatal(err)
		}
		for i := range reps {
			got := brief(p.out[i].result(&p))
			if got != brief(seq[i]) {
				t.Fatalf("round %d (%s, n %d, used %d, hold %v) decision %d of %d: coalesced %+v, sequential %+v",
					round, limit, n, used, hold, i, reps, got, seq[i])
			}
		}
		now += rng.Int64N(3_000_000)
	}
}

// TestCoalesce: 200 goroutines call Allow at once on a limit of 50 per hour,
// on every backend: exactly 50 are granted, and fewer script calls than
// decisions reach Redis.
func TestCoalesce(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		var calls atomic.Int64
		b.Client.AddHook(countEval{&calls})
		lim := New(b.Client, Options{Prefix: b.Prefix, Coalesce: true, Timeout: 10 * time.Second})
		limit := Every(50, time.Hour)
		var granted, denied atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				r, err := lim.Allow(ctx, Key("hot", limit).Take(1))
				if err != nil {
					t.Error(err)
					return
				}
				if r.Allowed {
					granted.Add(1)
					if r.Remaining < 0 || r.Remaining > 49 {
						t.Errorf("granted with remaining %d", r.Remaining)
					}
				} else {
					denied.Add(1)
					if r.RetryAfter <= 0 || r.RetryAfter > 72*time.Second {
						t.Errorf("denied with retry-after %s, want (0, 72s]", r.RetryAfter)
					}
				}
			}()
		}
		close(start)
		wg.Wait()
		if granted.Load() != 50 || denied.Load() != 150 {
			t.Fatalf("granted %d denied %d, want 50 and 150", granted.Load(), denied.Load())
		}
		st := lim.Stats()
		if st.Allowed != 50 || st.Denied != 150 {
			t.Errorf("stats %+v", st)
		}
		t.Logf("%d script calls for 200 decisions", calls.Load())
		if calls.Load() >= 200 {
			t.Errorf("%d script calls for 200 decisions: nothing coalesced", calls.Load())
		}
	})
}

// TestCoalesceFailurePolicy: with Redis gone, every coalesced caller gets
// the failure policy's answer (FailOpen: allowed, degraded), none an error.
func TestCoalesceFailurePolicy(t *testing.T) {
	srv := redistest.Private(t)
	o := redistest.ClientOptions(srv.Addr())
	o.MaxRetries = -1
	c := redis.NewClient(o)
	defer c.Close()
	lim := New(c, Options{Prefix: "f", Coalesce: true, Failure: FailOpen})
	ctx := context.Background()
	if r, err := lim.Allow(ctx, Key("k", PerSecond(10)).Take(1)); err != nil || !r.Allowed || r.Degraded {
		t.Fatalf("before the stop: %+v %v", r, err)
	}
	srv.Stop()
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := lim.Allow(ctx, Key("k", PerSecond(10)).Take(1))
			if err != nil || !r.Allowed || !r.Degraded {
				t.Errorf("Redis stopped: %+v %v, want allowed and degraded", r, err)
			}
		}()
	}
	wg.Wait()
}

// countEval counts script calls.
type countEval struct{ n *atomic.Int64 }

func (countEval) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countEval) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" || name == "fcall" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h countEval) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestCoalesceKeepsDeadlines: behind a slow Redis (1.5 s a reply), a lone
// caller and callers queued behind it all return at their own 50 ms deadline
// with context.DeadlineExceeded; the queued ones, never sent, are not charged.
func TestCoalesceKeepsDeadlines(t *testing.T) {
	srv := redistest.Shared(t)
	ctx := context.Background()
	if err := script.Load(ctx, redistest.NewReal(t)); err != nil { // no NOSCRIPT round trip through the proxy
		t.Fatal(err)
	}
	proxy := redistest.NewFaultProxy(t, srv.Addr())
	o := redistest.ClientOptions(proxy.Addr())
	o.MaxRetries = -1
	c := redis.NewClient(o)
	defer c.Close()
	prefix := redistest.NewPrefix(t)
	lim := New(c, Options{Prefix: prefix, Coalesce: true})
	limit := Every(10, time.Hour)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	proxy.SetDelay(1500 * time.Millisecond)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 10 * time.Millisecond) // the first leads, two queue
			cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := lim.Allow(cctx, Key("slow", limit).Take(1))
			// Bound: the 50 ms deadline plus scheduling slack on a loaded
			// machine, well under the 1.5 s the reply takes.
			if el := time.Since(start); el > 750*time.Millisecond {
				t.Errorf("caller %d returned after %v", i, el)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("caller %d: %v, want context.DeadlineExceeded", i, err)
			}
		}()
	}
	wg.Wait()
	proxy.SetDelay(0)
	time.Sleep(400 * time.Millisecond) // the leader's call lands in Redis
	r, err := New(redistest.NewReal(t), Options{Prefix: prefix}).Allow(ctx, Key("slow", limit).Take(1))
	if err != nil {
		t.Fatal(err)
	}
	// The leader's call ran (1 unit), the abandoned ones never went out; this
	// Allow is the second unit.
	if !r.Allowed || r.Remaining != 8 {
		t.Fatalf("after: %+v, want allowed with 8 remaining (only the sent call charged)", r)
	}
}

// panicOnce panics in the first script call it sees.
type panicOnce struct{ done atomic.Bool }

func (*panicOnce) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *panicOnce) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); (name == "evalsha" || name == "fcall") && h.done.CompareAndSwap(false, true) {
			panic("hook panic")
		}
		return next(ctx, cmd)
	}
}
func (*panicOnce) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestCoalescePanicReleasesKey: a panic under a coalesced call reaches its
// caller as without coalescing, and the key is not left jammed.
func TestCoalescePanicReleasesKey(t *testing.T) {
	_, c := redistest.NewMini(t)
	c.AddHook(&panicOnce{})
	lim := New(c, Options{Prefix: "p", Coalesce: true, Timeout: 10 * time.Second})
	ctx := context.Background()
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the hook's panic did not reach the caller")
			}
		}()
		_, _ = lim.Allow(ctx, Key("k", PerSecond(10)).Take(1))
	}()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if r, err := lim.Allow(cctx, Key("k", PerSecond(10)).Take(1)); err != nil || !r.Allowed {
		t.Fatalf("after the panic: %+v %v, want allowed", r, err)
	}
}

// decision is what a Result decides, without the names of its key.
type decision struct {
	allowed, degraded      bool
	remaining              int
	retryAfter, resetAfter time.Duration
	deniedBy               string
}

func brief(r Result) decision {
	return decision{r.Allowed, r.Degraded, r.Remaining, r.RetryAfter, r.ResetAfter, r.DeniedBy}
}
