package middleware_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redquota/redquota/internal/bestof"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/middleware"
)

// Two processes (each its own go-redis client, Limiter and Transport) on one
// real Redis, 32 goroutines each, mixed weights, against an exchange that
// enforces 1200 weight per clock-aligned 1 s window: no 429 and at least 90%
// of the weight used.
//
// Why the limiter's windows and the exchange's agree. The limiter counts in
// windows of Redis's TIME, the exchange in windows of this machine's clock:
// the same clock here, both aligned to the Unix epoch. A request is sent after
// the limiter granted it, so it reaches the exchange in the window it was
// granted in or a later one, never an earlier one. Landing later is not
// harmless by itself: a request granted in the last moments of window N that
// lands in N+1 adds to N+1, which the limiter lets others fill completely, so
// the exchange would count more than the limit in N+1. Two things prevent it.
// In a saturated fleet each window fills within its first moments (the
// waiters queued into it go at its start, and their successors are granted at
// once until it is full); after that every newcomer is booked into the next
// window, so grants do not fall near a window's end. And Options.WindowGuard:
// a request whose turn comes within the guard of its window's end is charged
// again in the window it will land in before it is sent (TestWindowGuard
// shows both sides). The 250 ms guard is far above loopback latency, even
// under -race on a loaded machine (a 100 ms guard once saw a grant land in
// the next window with 64 senders under -race at a load average of 13 on 2
// cores); it costs nothing in steady state, where no grant falls in a
// window's last quarter.
//
// The usage headers are on: our own traffic is all the exchange counts, so
// they must not slow us (a count read back across a window boundary is not
// applied to the new window; see UsageParser).
func TestFleetStaysUnderLimit(t *testing.T) {
	const limit = 1200
	bestof.Run(t, func(t *testing.T, use *bestof.Usage) {
		ex := newExchange(t, time.Second, limit)
		q := weightQuota(limit)
		prefix := redistest.NewPrefix(t)
		opts := middleware.Options{WindowGuard: 250 * time.Millisecond}
		procs := []*proc{
			newProc(t, "A", prefix, ex, q, opts, true),
			newProc(t, "B", prefix, ex, q, opts, true),
		}
		paths := []string{"/api/v3/ping", "/api/v3/ticker/price", "/api/v3/depth?limit=100",
			"/api/v3/depth?limit=500", "/api/v3/depth?limit=1000"}

		// Start just after a window boundary. The first requests open their Redis
		// and HTTP connections, which under -race can take over 100 ms: more than a
		// guard sized for a warm connection, so a cold start near a window's end
		// could land in the next window (see Options.WindowGuard). From the second
		// window on, connections are warm.
		now := time.Now()
		time.Sleep(now.Truncate(time.Second).Add(time.Second + 5*time.Millisecond).Sub(now))
		start := time.Now()
		// At least two whole windows between start and stop.
		stop := start.Add(3200 * time.Millisecond)
		ctx, cancel := context.WithDeadline(context.Background(), stop)
		defer cancel()
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for _, p := range procs {
			for g := range 32 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), uint64(len(p.name))))
					for ctx.Err() == nil {
						_, err := p.get(ctx, ex.URL()+paths[rng.IntN(len(paths))])
						if err != nil {
							if !expectedStop(err) {
								errs <- err
							}
							return // no turn before the stop: this sender is done
						}
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("unexpected error: %v", err)
		}

		hits := ex.log()
		if n, m := count(hits, http.StatusTooManyRequests), count(hits, http.StatusTeapot); n+m > 0 {
			for _, h := range hits {
				if h.status != http.StatusOK {
					t.Logf("%s: %d at %v into window %d (start %v)", h.proc, h.status,
						h.at.Sub(time.Unix(h.window, 0)), h.window, start.Sub(time.Unix(start.Unix(), 0)))
					break
				}
			}
			t.Fatalf("exchange answered %d 429s and %d 418s; stats A %+v B %+v", n, m, procs[0].tr.Stats(), procs[1].tr.Stats())
		}
		// Windows wholly inside the run: the first and last are partial.
		first, last := start.Unix()+1, stop.Unix()-1
		used := map[int64]int{}
		byProc := map[string]int{}
		for _, h := range hits {
			if h.status == http.StatusOK && h.window >= first && h.window <= last {
				used[h.window] += h.weight
				byProc[h.proc] += h.weight
			}
		}
		total := 0
		for w := first; w <= last; w++ {
			t.Logf("window %d: weight %d of %d", w, used[w], limit)
			if used[w] > limit {
				t.Errorf("window %d: exchange counted %d > %d", w, used[w], limit)
			}
			total += used[w]
		}
		share := float64(total) / float64(int(last-first+1)*limit)
		t.Logf("used %.1f%% of the allowed weight over %d windows; by process %v; stats A %+v B %+v",
			100*share, last-first+1, byProc, procs[0].tr.Stats(), procs[1].tr.Stats())
		if share < 0.9 {
			use.Errorf("used %.1f%% of the allowed weight, want ≥ 90%%", 100*share)
		}
		for _, p := range procs {
			if byProc[p.name] == 0 {
				use.Errorf("process %s sent nothing", p.name)
			}
		}
	})
}

// A 429 with Retry-After: 2, answered to one request of one process, stops
// every sender of both processes until it has passed. The senders ask for
// more than the limit allows (16 senders × weight 20 = 320 > 200 per window),
// so some always have turns booked in the windows ahead when the hold comes:
// those must not go out during it either (they are charged again after it).
func TestHoldStopsEveryProcess(t *testing.T) {
	const limit = 200
	ex := newExchange(t, time.Second, limit)
	ex.banAfter = 1 << 30 // in-flight requests must not turn into a ban
	q := weightQuota(limit)
	prefix := redistest.NewPrefix(t)
	procs := []*proc{
		newProc(t, "A", prefix, ex, q, middleware.Options{}, false),
		newProc(t, "B", prefix, ex, q, middleware.Options{}, false),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	var mu sync.Mutex
	var spans [][2]time.Time // each request's call and return
	for _, p := range procs {
		for range 8 {
			wg.Go(func() {
				for ctx.Err() == nil {
					began := time.Now()
					_, err := p.get(ctx, ex.URL()+"/api/v3/depth?limit=1000")
					if err != nil && !expectedStop(err) {
						errs <- err
						return
					}
					if err == nil {
						mu.Lock()
						spans = append(spans, [2]time.Time{began, time.Now()})
						mu.Unlock()
					}
				}
			})
		}
	}
	time.Sleep(2300 * time.Millisecond) // traffic from both processes first
	ex.injectNext(http.StatusTooManyRequests, "2")
	var t429 time.Time
	select {
	case t429 = <-ex.injectedAt:
	case <-time.After(5 * time.Second):
		t.Fatal("no request reached the exchange")
	}
	time.Sleep(3600 * time.Millisecond)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("unexpected error: %v", err)
	}

	// Bounds. The hold is written by the process that got the 429 after it
	// left the exchange at t429, on Redis's clock (this machine's), so it ends
	// no earlier than t429+2s. Requests granted before the hold was written may
	// still arrive after t429: they were already on their way (loopback, well
	// under grace even with -race on a loaded machine). Nothing else may
	// arrive before t429+2s.
	const grace = 500 * time.Millisecond
	quietFrom, quietTo := t429.Add(grace), t429.Add(2*time.Second)
	before, during, after := map[string]int{}, 0, map[string]int{}
	for _, h := range ex.log() {
		switch {
		case h.at.After(t429.Add(-2*time.Second)) && h.at.Before(t429):
			before[h.proc]++
		case !h.at.Before(quietFrom) && h.at.Before(quietTo):
			during++
			t.Errorf("request from %s reached the exchange %v after the 429, inside the hold", h.proc, h.at.Sub(t429))
		case !h.at.Before(quietTo) && h.at.Before(t429.Add(3500*time.Millisecond)):
			after[h.proc]++
		}
	}
	t.Logf("requests in the 2 s before the 429: %v; inside the hold: %d; in the 1.5 s after: %v; stats A %+v B %+v",
		before, during, after, procs[0].tr.Stats(), procs[1].tr.Stats())
	for _, p := range procs {
		// Both were sending before, and resumed after: the quiet is the hold's.
		if before[p.name] == 0 || after[p.name] == 0 {
			t.Errorf("process %s: %d requests before the 429, %d after the hold", p.name, before[p.name], after[p.name])
		}
	}
	// Requests called before the 429 and answered after the hold waited
	// through it: they had turns booked (or were booking) when it came.
	across := 0
	for _, sp := range spans {
		if sp[0].Before(t429) && sp[1].After(quietTo) {
			across++
		}
	}
	if across == 0 {
		t.Error("no request waited across the hold: the test did not exercise it")
	}
}

// A usage header saying the exchange counted more than we did slows us down:
// other users of the IP take 80 of the 100 weight of every window, which only
// the X-MBX-USED-WEIGHT header tells us. Requests go one at a time, so that
// each is decided after the previous answer was learnt from (concurrent
// requests sent before any answer cannot know better).
func TestUsageHeaderSlowsSending(t *testing.T) {
	const limit, others = 100, 80
	run := func(t *testing.T, usage bool, n int) (*exchange, *proc) {
		ex := newExchange(t, time.Second, limit)
		ex.external = others
		ex.banAfter = 1 << 30
		p := newProc(t, "A", redistest.NewPrefix(t), ex, weightQuota(limit), middleware.Options{}, usage)
		for range n {
			st, err := p.get(context.Background(), ex.URL()+"/api/v3/ping")
			if err != nil {
				t.Fatal(err)
			}
			if st == http.StatusTooManyRequests {
				break
			}
		}
		return ex, p
	}
	t.Run("synced", func(t *testing.T) {
		ex, p := run(t, true, 30)
		hits := ex.log()
		if n := count(hits, http.StatusTooManyRequests); n > 0 {
			t.Fatalf("%d 429s", n)
		}
		ours := map[int64]int{}
		for _, h := range hits {
			ours[h.window] += h.weight
		}
		for w, n := range ours {
			if n > limit-others {
				t.Errorf("window %d: we sent %d weight, only %d was left", w, n, limit-others)
			}
		}
		// 30 requests at ≤ 20 per window span at least two windows.
		if len(ours) < 2 {
			t.Errorf("30 requests fitted in %d window(s)", len(ours))
		}
		if p.tr.Stats().Syncs == 0 {
			t.Error("no usage header raised our count")
		}
	})
	// Without the header, the limiter allows 100 per window and the exchange
	// refuses: this is what the header prevents. 100 requests in well under a
	// second span at most two windows, one of which then gets ≥ 50 > 20.
	t.Run("control without usage headers", func(t *testing.T) {
		ex, _ := run(t, false, 100)
		if n := count(ex.log(), http.StatusTooManyRequests); n == 0 {
			t.Fatal("no 429 without usage headers: the test does not exercise them")
		}
	})
}

// latency delays every request by d before it reaches the exchange: the
// one-way network latency. sent, when set, is told when each request left the
// limiter (was granted).
type latency struct {
	next http.RoundTripper
	d    time.Duration
	sent func(time.Time)
}

func (l latency) RoundTrip(req *http.Request) (*http.Response, error) {
	if l.sent != nil {
		l.sent(time.Now())
	}
	if err := sleepCtx(req.Context(), l.d); err != nil {
		return nil, err
	}
	return l.next.RoundTrip(req)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// With 300 ms of latency, requests granted in the last 150 ms of a window land
// in the next one. Without a guard, the exchange then counts them together
// with the next window's own full share and refuses; with a 400 ms guard they
// are charged again in the window they land in, and nothing is refused.
func TestWindowGuard(t *testing.T) {
	const limit = 10
	// run returns the exchange's log and how many requests were granted
	// before the window boundary the run starts 150 ms ahead of.
	run := func(t *testing.T, guard time.Duration) ([]hit, int) {
		ex := newExchange(t, time.Second, limit)
		ex.banAfter = 1 << 30
		p := newProc(t, "A", redistest.NewPrefix(t), ex, weightQuota(limit), middleware.Options{WindowGuard: guard}, false)
		rule := middleware.Rule{Hosts: []string{"127.0.0.1"}, Quota: weightQuota(limit), Charges: charges(weightQuota(limit), weightCost)}
		now := time.Now()
		boundary := now.Truncate(time.Second).Add(time.Second)
		var early atomic.Int64
		p.client.Transport = newTransport(t, latency{http.DefaultTransport, 300 * time.Millisecond, func(at time.Time) {
			if at.Before(boundary) {
				early.Add(1)
			}
		}}, p.lim, middleware.Options{WindowGuard: guard}, rule)
		// Start 150 ms before a window ends: the first 10 requests are granted
		// at once (a few ms) and land after the boundary; the next 10 are
		// booked for the next window's start.
		time.Sleep(time.Until(boundary.Add(-150 * time.Millisecond)))
		var wg sync.WaitGroup
		for range 2 * limit {
			wg.Go(func() {
				if _, err := p.get(context.Background(), ex.URL()+"/api/v3/ping"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		return ex.log(), int(early.Load())
	}
	t.Run("no guard", func(t *testing.T) {
		// The scenario needs a grant before the boundary. A machine so loaded
		// that no grant came within those 150 ms did not set it up: try again
		// (each try is a fresh window), and fail only after 5 such tries.
		for try := 1; ; try++ {
			hits, early := run(t, 0)
			if early > 0 {
				if n := count(hits, http.StatusTooManyRequests); n == 0 {
					t.Fatalf("no 429: %d requests granted at a window's end did not land in the next", early)
				}
				return
			}
			if try == 5 {
				t.Fatal("no request was granted within 150 ms of the run's start in 5 tries")
			}
			t.Logf("try %d: no grant before the window's end (a loaded machine); again", try)
		}
	})
	t.Run("guard", func(t *testing.T) {
		hits, _ := run(t, 400*time.Millisecond)
		if n := count(hits, http.StatusTooManyRequests); n > 0 {
			t.Fatalf("%d 429s with the guard", n)
		}
		if n := count(hits, http.StatusOK); n != 2*limit {
			t.Fatalf("%d requests served, want %d", n, 2*limit)
		}
	})
}
