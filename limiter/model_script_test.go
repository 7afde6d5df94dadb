package limiter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redquota/redquota/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

var modelAlgorithms = []Algorithm{GCRA, SlidingWindow, SlidingWindowCounter, FixedWindow}

func randomLimit(rng *rand.Rand, a Algorithm) Limit {
	periods := []time.Duration{time.Second, 2500 * time.Millisecond, time.Minute, 10 * time.Second, 7 * time.Millisecond}
	l := Limit{Rate: 1 + rng.IntN(12), Period: periods[rng.IntN(len(periods))], Algorithm: a}
	if a == GCRA {
		l.Burst = 1 + rng.IntN(8)
	}
	return l
}

// runModel drives the script (through Limiter.decide) and the reference model
// with the same steps and fails at the first differing decision.
func runModel(t *testing.T, seed uint64, limits []Limit, steps int) {
	t.Helper()
	m, c := redistest.NewMini(t)
	// Timeout: a busy machine must not turn a slow miniredis call into a failure
	// of a test about arithmetic.
	lim := New(c, Options{Prefix: "m", Timeout: 10 * time.Second})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, seed*7+1))

	now := int64(1_700_000_000_123_456) + rng.Int64N(1_000_000_000)
	m.SetTime(time.UnixMicro(now))
	q := Quota{Name: fmt.Sprintf("q%d", seed)}
	model := &quotaModel{}
	maxP := int64(0)
	for i, l := range limits {
		q.Limits = append(q.Limits, NamedLimit{Name: fmt.Sprintf("l%d", i), Limit: l})
		model.limits = append(model.limits, newModel(l))
		maxP = max(maxP, l.periodUS())
	}
	for step := 0; step < steps; step++ {
		// Advance the clock: often not at all or by a few µs (same-instant
		// calls), sometimes past whole windows.
		var dt int64
		switch r := rng.IntN(10); {
		case r < 3:
		case r < 6:
			dt = rng.Int64N(1000)
		default:
			dt = rng.Int64N(2 * maxP)
		}
		now += dt
		m.SetTime(time.UnixMicro(now))
		m.FastForward(time.Duration(dt) * time.Microsecond)

		if rng.IntN(25) == 0 {
			d := time.Duration(1+rng.Int64N(maxP)) * time.Microsecond
			if _, err := lim.Hold(ctx, Quota{Name: q.Name}, d); err != nil {
				t.Fatal(err)
			}
			model.hold = max(model.hold, now+d.Microseconds())
			continue
		}
		cost := Cost{}
		costs := make([]int64, len(limits))
		for i, l := range limits {
			n := 1 + rng.IntN(l.Max())
			if rng.IntN(2) == 0 {
				n = 1
			}
			cost[q.Limits[i].Name], costs[i] = n, int64(n)
		}
		var maxWait int64
		if rng.IntN(3) == 0 {
			maxWait = rng.Int64N(3 * maxP)
		}
		p, got := new(plan), new(reply)
		if err := lim.quota(p, q, cost); err != nil {
			t.Fatal(err)
		}
		if err := lim.decide(ctx, p, maxWait, got); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		before := model.snapshot()
		want := model.decide(now, maxWait, costs)
		ok := got.granted == want.granted && got.waitUS == want.wait && got.by == want.by
		for i := range want.rem {
			ok = ok && got.per[i].rem == want.rem[i]
		}
		if !ok {
			gr := make([]int64, len(got.per))
			for i, pl := range got.per {
				gr[i] = pl.rem
			}
			t.Fatalf("seed %d step %d (now %d, costs %v, maxWait %d, limits %v):\n script: granted=%v wait=%d by=%d rem=%v\n model:  granted=%v wait=%d by=%d rem=%v",
				seed, step, now, costs, maxWait, limits, got.granted, got.waitUS, got.by, gr, want.granted, want.wait, want.by, want.rem)
		}
		// Sometimes cancel a booking that has not come due, at once (so it is
		// still the last charge): every limit is back to its state before it.
		// Its local action time is set far ahead: Redis's clock is the test's
		// (miniredis), and a wait of a few µs must not lapse on the local one.
		if got.granted && got.waitUS > 0 && rng.IntN(3) == 0 {
			rv := newReservation(lim, p, got, time.Now().Add(time.Hour))
			if _, err := rv.Cancel(ctx); err != nil {
				t.Fatalf("step %d: cancel: %v", step, err)
			}
			model.limits = before
		}
	}
}

// Each algorithm's script decides exactly as its reference model over random
// sequences of time advances, costs and waits.
func TestScriptMatchesModel(t *testing.T) {
	for _, a := range modelAlgorithms {
		t.Run(a.String(), func(t *testing.T) {
			t.Parallel()
			for seed := uint64(1); seed <= 25; seed++ {
				rng := rand.New(rand.NewPCG(seed, uint64(a)))
				runModel(t, seed*10+uint64(a), []Limit{randomLimit(rng, a)}, 120)
			}
		})
	}
}

// Quotas of mixed algorithms decide as the model: the grant time is the latest
// of each limit's earliest time, and all limits are charged or none.
func TestQuotaScriptMatchesModel(t *testing.T) {
	t.Parallel()
	for seed := uint64(1); seed <= 40; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		var ls []Limit
		for range 1 + rng.IntN(3) {
			ls = append(ls, randomLimit(rng, modelAlgorithms[rng.IntN(len(modelAlgorithms))]))
		}
		runModel(t, 1000+seed, ls, 150)
	}
}
