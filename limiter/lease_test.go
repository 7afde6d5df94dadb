package limiter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// spend is one grant as the exchange would see it: units spent at µs time at.
type spend struct {
	at int64
	n  int
}

// spendLog records a Leaser's spends through its test hook. Local spends are
// recorded at the Leaser's clock reading under its lock; direct decisions at
// the grant time Redis replied (leaseDirectMaxUS = 1 makes it reply one).
type spendLog struct {
	mu sync.Mutex
	s  []spend
}

// spy makes l hear of every Leaser's spends (leaseSpent) and direct
// decisions reply their grant time (leaseDirectMaxUS), until the test ends.
// Set it before the test's Leasers spend, and Close them before it ends.
func (l *spendLog) spy(t testing.TB) {
	leaseSpent, leaseDirectMaxUS = l.hook, 1
	t.Cleanup(func() { leaseSpent, leaseDirectMaxUS = nil, 0 })
}

func (l *spendLog) hook(t time.Time, n int, redisUS int64) {
	at := t.UnixMicro()
	if redisUS != 0 {
		at = redisUS
	}
	l.mu.Lock()
	l.s = append(l.s, spend{at, n})
	l.mu.Unlock()
}

func (l *spendLog) units() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.s {
		n += s.n
	}
	return n
}

// checkExchange replays every spend, in time order, against an independent
// model of each limit as the exchange counts it, and reports the first spend
// the exchange would refuse: the global bound, checked from outside the script.
func checkExchange(spends []spend, limits []NamedLimit) error {
	s := slices.Clone(spends)
	slices.SortStableFunc(s, func(a, b spend) int { return int(a.at - b.at) })
	for _, nl := range limits {
		lim := nl.Limit
		p, m := lim.periodUS(), int64(lim.most())
		switch lim.Algorithm {
		case GCRA:
			e, tat := lim.intervalUS(), int64(0)
			for i, x := range s {
				tat = max(tat, x.at) + int64(x.n)*e
				if tat-x.at > m*e {
					return fmt.Errorf("%s: spend %d (%d units at %d) over the bucket by %d µs", nl.Name, i, x.n, x.at, tat-x.at-m*e)
				}
			}
		case FixedWindow:
			count := map[int64]int64{}
			for i, x := range s {
				w := x.at / p
				count[w] += int64(x.n)
				if count[w] > m {
					return fmt.Errorf("%s: spend %d puts window %d at %d > %d", nl.Name, i, w, count[w], m)
				}
			}
		case SlidingWindowCounter:
			count := map[int64]int64{}
			for i, x := range s {
				w := x.at / p
				count[w] += int64(x.n)
				weighted := float64(count[w-1])*(1-float64(x.at-w*p)/float64(p)) + float64(count[w])
				if weighted > float64(m)+1e-6 {
					return fmt.Errorf("%s: spend %d puts the weighted count at %.3f > %d", nl.Name, i, weighted, m)
				}
			}
		default:
			return fmt.Errorf("%s: no exchange model for %s", nl.Name, lim.Algorithm)
		}
	}
	return nil
}

// TestLeaseGlobalBoundModel runs four leasers (four processes: each its own
// Limiter) and direct decisions from a fifth against one quota of every
// leasable algorithm, on miniredis with a controlled clock, at random demand
// from idle to far above the limit. Every spend is then replayed against an
// independent model of each limit: none may be refused. Mutating the lease
// arithmetic in decide.lua (charging GCRA from t rather than the lease's end, or
// not clipping the lease at a window's end) makes this test fail.
func TestLeaseGlobalBoundModel(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			m, c := redistest.NewMini(t)
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(seed, 99))
			now := int64(1_700_000_000_000_000) + rng.Int64N(1_000_000_000)
			var clockMu sync.Mutex
			clock := func() time.Time {
				clockMu.Lock()
				defer clockMu.Unlock()
				return time.UnixMicro(now)
			}
			// Small limits, so that leases are large against them and direct
			// bursts can take a whole window or bucket right after a lease.
			q := Quota{Name: "lease", Limits: []NamedLimit{
				{"gcra", Limit{Rate: 200, Period: time.Second, Burst: 20}},
				{"fixed", Limit{Rate: 30, Period: 50 * time.Millisecond, Algorithm: FixedWindow}},
				{"counter", Limit{Rate: 50, Period: 100 * time.Millisecond, Algorithm: SlidingWindowCounter}},
			}}
			unit := Cost{"gcra": 1, "fixed": 1, "counter": 1}
			// Both clocks move together; Redis's first, so this one never
			// runs ahead of it.
			advance := func(dt int64) {
				clockMu.Lock()
				defer clockMu.Unlock()
				m.SetTime(time.UnixMicro(now + dt))
				now += dt
			}
			// Every reply takes 700µs to come back: a deadline measured from
			// the reply rather than from the send would outlive its lease.
			c.AddHook(afterScript(func() { advance(700) }))
			var log spendLog
			var leasers []*Leaser
			for range 4 {
				ls, err := New(c, Options{Prefix: "m", Timeout: 10 * time.Second}).NewLeaser(Charge{Quota: q, Cost: unit}, LeaseOptions{MaxShare: 0.5, clock: clock})
				if err != nil {
					t.Fatal(err)
				}
				log.spy(t)
				leasers = append(leasers, ls)
			}
			direct := New(c, Options{Prefix: "m", Timeout: 10 * time.Second})
			var directLog []spend
			for step := 0; step < 3000; step++ {
				// Mostly busy, sometimes a lease's length (units spent late
				// in their lease), sometimes idle (buckets and windows refill).
				var dt int64
				switch r := rng.IntN(10); {
				case r < 6:
					dt = rng.Int64N(500)
				case r < 9:
					dt = rng.Int64N(12_000)
				default:
					dt = 20_000 + rng.Int64N(200_000)
				}
				// Redis's clock first: this clock never runs ahead of it.
				advance(dt)
				if rng.IntN(6) == 0 {
					// Another process's burst, up to half of every limit.
					n := 1 + rng.IntN(10)
					r, err := direct.reserveQuotaAt(ctx, q, Cost{"gcra": n, "fixed": n, "counter": n})
					if err != nil {
						t.Fatal(err)
					}
					if r.granted {
						directLog = append(directLog, spend{r.grantUS, n})
					}
					continue
				}
				ls := leasers[rng.IntN(len(leasers))]
				if _, err := ls.Allow(ctx, 1+rng.IntN(3)); err != nil {
					t.Fatal(err)
				}
			}
			var st LeaseStats
			for _, ls := range leasers {
				if err := ls.Close(); err != nil {
					t.Fatal(err)
				}
				s := ls.Stats()
				st.Local += s.Local
				st.Calls += s.Calls
				st.Leased += s.Leased
				st.Decisions += s.Decisions
				st.Expired += s.Expired
			}
			all := append(slices.Clone(log.s), directLog...)
			if err := checkExchange(all, q.Limits); err != nil {
				t.Fatalf("global bound broken: %v (stats %+v)", err, st)
			}
			// The test means something only if all three paths ran.
			if st.Local == 0 || st.Leased == 0 || st.Calls == 0 || len(directLog) == 0 || st.Decisions == st.Local {
				t.Fatalf("a path never ran: stats %+v, %d direct grants", st, len(directLog))
			}
			t.Logf("stats %+v; %d units spent, %d direct grants", st, log.units(), len(directLog))
		})
	}
}

// reserveQuotaAt decides one unit of q now with a 1µs max wait, so that Redis
// replies the grant time: the spend time of a direct grant.
func (l *Limiter) reserveQuotaAt(ctx context.Context, q Quota, cost Cost) (reply, error) {
	var p plan
	var r reply
	if err := l.quota(&p, Charge{Quota: q, Cost: cost}); err != nil {
		return r, err
	}
	err := l.decide(ctx, &p, 1, &r)
	return r, err
}

// TestLeaseSteadyState: a process spending 5000 units/s from a 10000/s limit,
// on a controlled clock, answers nearly every decision locally: at least 50×
// fewer script calls than decisions, and nothing refused.
func TestLeaseSteadyState(t *testing.T) {
	m, c := redistest.NewMini(t)
	ctx := context.Background()
	now := int64(1_700_000_000_000_000)
	var clockMu sync.Mutex
	clock := func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return time.UnixMicro(now)
	}
	ls, err := New(c, Options{Prefix: "s", Timeout: 10 * time.Second}).NewLeaser(Key("steady", PerSecond(10000)).Take(1), LeaseOptions{clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	for ms := 0; ms < 5000; ms++ {
		m.SetTime(time.UnixMicro(now + 1000))
		clockMu.Lock()
		now += 1000
		clockMu.Unlock()
		for range 5 {
			ok, err := ls.Allow(ctx, 1)
			if err != nil || !ok {
				t.Fatalf("ms %d: Allow = %v, %v (stats %+v)", ms, ok, err, ls.Stats())
			}
		}
	}
	st := ls.Stats()
	t.Logf("stats %+v: %.0f decisions per script call", st, float64(st.Decisions)/float64(st.Calls))
	if st.Decisions != 25000 || st.Calls*50 > st.Decisions {
		t.Fatalf("stats %+v: want 25000 decisions and ≥ 50× fewer calls", st)
	}
}

func TestLeaserBadInput(t *testing.T) {
	m, c := redistest.NewMini(t)
	lim := New(c, Options{Prefix: "b"})
	ctx := context.Background()
	if _, err := lim.NewLeaser(Key("k", Limit{Rate: 10, Period: time.Second, Burst: 10, Algorithm: SlidingWindow}).Take(1), LeaseOptions{}); !errors.Is(err, errLeaseAlgorithm) {
		t.Errorf("sliding log: %v, want errLeaseAlgorithm", err)
	}
	if _, err := lim.NewLeaser(Key("k", PerSecond(10)).Take(1), LeaseOptions{MaxShare: 1.5}); !errors.Is(err, errInvalidLimit) {
		t.Errorf("MaxShare 1.5: %v, want errInvalidLimit", err)
	}
	if _, err := lim.NewLeaser(Key("k", PerSecond(10)).Take(1), LeaseOptions{TTL: -time.Second}); !errors.Is(err, errInvalidDuration) {
		t.Errorf("negative TTL: %v, want errInvalidDuration", err)
	}
	if _, err := lim.NewLeaser(Key("", PerSecond(10)).Take(1), LeaseOptions{}); !errors.Is(err, errEmptyKey) {
		t.Errorf("empty key: %v, want errEmptyKey", err)
	}
	if _, err := lim.NewLeaser(Key("k", Limit{}).Take(1), LeaseOptions{}); !errors.Is(err, errInvalidLimit) {
		t.Errorf("zero limit: %v, want errInvalidLimit", err)
	}
	if _, err := lim.NewLeaser(Charge{Quota: Quota{Name: "q", Limits: []NamedLimit{{"a", PerSecond(5)}}}, Cost: Cost{"b": 1}}, LeaseOptions{}); !errors.Is(err, errUnknownLimit) {
		t.Errorf("unknown limit: %v, want errUnknownLimit", err)
	}
	ls, err := lim.NewLeaser(Key("k", PerSecond(10)).Take(1), LeaseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Allow(ctx, 0); !errors.Is(err, errInvalidCost) {
		t.Errorf("n = 0: %v, want errInvalidCost", err)
	}
	if _, err := ls.Allow(ctx, 11); !errors.Is(err, errExceedsLimit) {
		t.Errorf("n = 11 of 10: %v, want errExceedsLimit", err)
	}
	if keys := m.Keys(); len(keys) != 0 {
		t.Errorf("bad input wrote %v", keys)
	}
	if err := ls.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Allow(ctx, 1); !errors.Is(err, ErrLeaserClosed) {
		t.Errorf("after Close: %v, want ErrLeaserClosed", err)
	}
}

// TestLeaserDefaults: the documented defaults, and the TTL clipped to a tenth
// of the shortest period.
func TestLeaserDefaults(t *testing.T) {
	_, c := redistest.NewMini(t)
	lim := New(c, Options{})
	ls, err := lim.NewLeaser(Key("k", PerSecond(1000)).Take(1), LeaseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if ls.ttl != 100*time.Millisecond || ls.cap != 100 {
		t.Errorf("defaults: TTL %s cap %d, want 100ms and 100", ls.ttl, ls.cap)
	}
	q := Quota{Name: "q", Limits: []NamedLimit{
		{"w", Limit{Rate: 50, Period: 200 * time.Millisecond, Algorithm: FixedWindow}},
		{"g", PerMinute(6000)},
	}}
	qs, err := lim.NewLeaser(Charge{Quota: q, Cost: Cost{"w": 2, "g": 1}}, LeaseOptions{MaxShare: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	defer qs.Close()
	// 200ms window: TTL 20ms; w allows 25 units of cost 2, half of that is 12.
	if qs.ttl != 20*time.Millisecond || qs.cap != 12 {
		t.Errorf("quota: TTL %s cap %d, want 20ms and 12", qs.ttl, qs.cap)
	}
}

// TestLeaseSpentLate is the pattern the lease arithmetic exists for, once per
// algorithm: a lease taken while its limit has room, its units spent as late as
// the lease allows, then another process taking everything Redis will grant.
// The exchange must accept all of it. Charging GCRA from the grant time, or
// letting a window's lease run past the window's end, fails here.
func TestLeaseSpentLate(t *testing.T) {
	cases := []struct {
		name  string
		limit Limit
		// offset of the lease from the start of a period, and how long after
		// the lease its units are spent
		at, late time.Duration
		// how long the lease's reply takes to come back
		lag time.Duration
	}{
		{"gcra", Limit{Rate: 10, Period: time.Second, Burst: 10}, 0, 99 * time.Millisecond, 0},
		// The same GCRA limit beside a window that never binds: decide.lua's general path.
		{"gcra+window", Limit{Rate: 10, Period: time.Second, Burst: 10}, 0, 99 * time.Millisecond, 0},
		{"fixed", Limit{Rate: 10, Period: time.Second, Algorithm: FixedWindow}, 990 * time.Millisecond, 60 * time.Millisecond, 0},
		{"counter", Limit{Rate: 10, Period: time.Second, Algorithm: SlidingWindowCounter}, 990 * time.Millisecond, 60 * time.Millisecond, 0},
		// The lease's reply arrives 5ms after Redis granted it, 5ms before the
		// window ends; its units must not be spent in the next window (a
		// deadline counted from the reply would allow that until 1005ms).
		{"fixed, slow reply", Limit{Rate: 10, Period: time.Second, Algorithm: FixedWindow}, 990 * time.Millisecond, 12 * time.Millisecond, 5 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, c := redistest.NewMini(t)
			ctx := context.Background()
			now := int64(1_700_000_000_000_000) + tc.at.Microseconds()
			var clockMu sync.Mutex
			clock := func() time.Time {
				clockMu.Lock()
				defer clockMu.Unlock()
				return time.UnixMicro(now)
			}
			advance := func(d time.Duration) {
				m.SetTime(time.UnixMicro(now + d.Microseconds()))
				clockMu.Lock()
				now += d.Microseconds()
				clockMu.Unlock()
			}
			advance(0)
			q := Quota{Name: "late", Limits: []NamedLimit{{"l", tc.limit}}}
			unit := Cost{"l": 1}
			if tc.name == "gcra+window" {
				q.Limits = append(q.Limits, NamedLimit{"w", Limit{Rate: 1000, Period: time.Hour, Algorithm: FixedWindow}})
				unit["w"] = 1
			}
			// A generous Timeout: a loaded CI machine must not turn a slow
			// miniredis call into a failure.
			opts := Options{Prefix: "p", Timeout: 10 * time.Second}
			ls, err := New(c, opts).NewLeaser(Charge{Quota: q, Cost: unit}, LeaseOptions{MaxShare: 0.5, clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			defer ls.Close()
			var log spendLog
			log.spy(t)
			// A lease of 5, taken directly so that no refill follows it; its
			// reply comes back tc.lag later (scripts loaded first: no NOSCRIPT
			// round trip).
			if err := script.Load(ctx, c); err != nil {
				t.Fatal(err)
			}
			c.AddHook(afterScript(func() {
				if tc.lag > 0 && ls.Stats().Calls == 0 {
					advance(tc.lag)
				}
			}))
			if ok, err := ls.fetch(ctx, 5, make(chan struct{}), 0); !ok || err != nil {
				t.Fatalf("lease: %v %v", ok, err)
			}
			advance(tc.late - tc.lag)
			if ok, err := ls.Allow(ctx, 5); !ok || err != nil {
				t.Fatalf("spending the lease: %v %v (stats %+v)", ok, err, ls.Stats())
			}
			other := New(c, opts)
			var spends []spend
			for range 3000 {
				for {
					r, err := other.reserveQuotaAt(ctx, q, unit)
					if err != nil {
						t.Fatal(err)
					}
					if !r.granted {
						break
					}
					spends = append(spends, spend{r.grantUS, 1})
				}
				advance(time.Millisecond)
			}
			others := len(spends)
			spends = append(spends, log.s...)
			if err := checkExchange(spends, q.Limits); err != nil {
				t.Fatalf("exchange refuses: %v", err)
			}
			// Three periods hold about 30 units and the leaser took 10 of them;
			// window edges and rounding lose a few, starvation would lose most.
			if others < 15 {
				t.Fatalf("the other process got only %d units: starved", others)
			}
		})
	}
}

// TestLeaseInstall: with three leases held, no unit outlives the lease it
// came from. A lease granted by the failure policy may end after a later one
// Redis clipped to its window's end, so leases do not arrive in end order.
func TestLeaseInstall(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	cases := []struct {
		name string
		in   []lease
		// at each probe time, the most units that may still be held
		probes map[int]int
	}{
		{"in order", []lease{{5, ms(50)}, {5, ms(80)}, {5, ms(100)}}, map[int]int{49: 15, 50: 5, 79: 5, 80: 5, 99: 5, 100: 0}},
		{"degraded first, ends last", []lease{{5, ms(100)}, {5, ms(50)}, {5, ms(80)}}, map[int]int{49: 15, 50: 5, 79: 5, 100: 0}},
		{"newest ends first", []lease{{5, ms(100)}, {5, ms(80)}, {5, ms(50)}}, map[int]int{49: 15, 50: 5, 99: 5, 100: 0}},
		{"one already over", []lease{{5, ms(10)}, {5, ms(80)}, {5, ms(100)}}, map[int]int{20: 10, 80: 5, 100: 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ls Leaser
			for _, l := range tc.in {
				ls.install(l, ms(20))
			}
			for _, at := range slices.Sorted(maps.Keys(tc.probes)) {
				ls.expire(ms(at))
				if held := ls.leases[0].units + ls.leases[1].units; held > tc.probes[at] {
					t.Errorf("at %d ms %d units held, at most %d may be (leases %+v)", at, held, tc.probes[at], ls.leases)
				}
			}
		})
	}
}

// TestLeaseDropAndDenials: Drop discards a lease asked for before it, and
// forgets a denial cached from Redis; a cached denial never lasts past TTL
// even when Redis said far longer (a Reset would be missed that long).
func TestLeaseDropAndDenials(t *testing.T) {
	m, c := redistest.NewMini(t)
	ctx := context.Background()
	now := int64(1_700_000_000_000_000)
	clock := func() time.Time { return time.UnixMicro(now) }
	advance := func(d time.Duration) { now += d.Microseconds(); m.SetTime(time.UnixMicro(now)) }
	advance(0)
	lim := New(c, Options{Prefix: "d", Timeout: 10 * time.Second})
	ls, err := lim.NewLeaser(Key("k", PerSecond(100)).Take(1), LeaseOptions{clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()

	// A lease asked for before Drop lands after it: dropped.
	gen := ls.gen
	ls.drop()
	if ok, err := ls.fetch(ctx, 5, make(chan struct{}), gen); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if h := ls.held(); h != 0 {
		t.Fatalf("a lease asked for before Drop is held: %d units", h)
	}

	// A hold of a week: leases refused, the direct decision refused, and the
	// denial cached, but only for TTL.
	if _, err := lim.Hold(ctx, Quota{Name: "k"}, 7*24*time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	ls.drop()
	if ok, err := ls.Allow(ctx, 1); ok || err != nil {
		t.Fatalf("held: %v %v", ok, err)
	}
	calls := ls.Stats().Calls
	if ok, _ := ls.Allow(ctx, 1); ok || ls.Stats().Calls != calls {
		t.Fatalf("the denial was not answered locally (calls %d → %d)", calls, ls.Stats().Calls)
	}
	if err := lim.Reset(ctx, Quota{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	advance(ls.ttl)
	if ok, err := ls.Allow(ctx, 1); !ok || err != nil {
		t.Fatalf("TTL after a Reset: %v %v, want allowed", ok, err)
	}

	// Drop forgets a cached denial at once.
	if _, err := lim.Hold(ctx, Quota{Name: "k"}, time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	ls.drop()
	if ok, _ := ls.Allow(ctx, 1); ok {
		t.Fatal("allowed under a hold")
	}
	if err := lim.Reset(ctx, Quota{Name: "k"}); err != nil {
		t.Fatal(err)
	}
	ls.drop()
	if ok, err := ls.Allow(ctx, 1); !ok || err != nil {
		t.Fatalf("after Reset and Drop: %v %v, want allowed", ok, err)
	}
}

// afterScript runs f after each script call returns, as if its reply took
// that long to arrive.
type afterScript func()

func (afterScript) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f afterScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if name := cmd.Name(); name == "evalsha" || name == "eval" || name == "fcall" {
			f()
		}
		return err
	}
}
func (afterScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
