package limiter

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
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
		n := 1 + rng.IntN(limit.Max())
		reps := 2 + rng.IntN(20)
		used := rng.IntN(limit.Max() + 1)
		hold := rng.IntN(4) == 0
		m.SetTime(time.UnixMicro(now))
		keys := [2]string{"seq" + string(rune('a'+round%26)), "bat" + string(rune('a'+round%26))}
		for _, k := range keys {
			if err := lim.Reset(ctx, k); err != nil {
				t.Fatal(err)
			}
			if used > 0 {
				if _, err := lim.AllowN(ctx, k, limit, used); err != nil {
					t.Fatal(err)
				}
			}
			if hold {
				if _, err := lim.Hold(ctx, k, time.Millisecond); err != nil {
					t.Fatal(err)
				}
			}
		}
		var seq []Result
		for range reps {
			r, err := lim.AllowN(ctx, keys[0], limit, n)
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
			got := p.out[i].single(limit)
			if got != seq[i] {
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
				r, err := lim.Allow(ctx, "hot", limit)
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
	if r, err := lim.Allow(ctx, "k", PerSecond(10)); err != nil || !r.Allowed || r.Degraded {
		t.Fatalf("before the stop: %+v %v", r, err)
	}
	srv.Stop()
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := lim.Allow(ctx, "k", PerSecond(10))
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
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h countEval) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
