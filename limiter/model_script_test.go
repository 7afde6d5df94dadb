package limiter

import (
	"context"
	"fmt"
	"math"
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
// with the same steps and fails at the first differing decision. Besides
// decisions and holds, steps cancel a booking still outstanding, anywhere in
// the queue (comparing the units given back), and wake one up as Wait does
// (comparing whether it stands, or its new booking after a hold). With
// guarded, the quota has a random Guard shorter than its fixed windows.
//
// With queueing, time moves slowly, every decision may book up to 3 periods
// ahead and cancels are frequent: long queues, cancelled in the middle.
func runModel(t *testing.T, seed uint64, limits []Limit, steps int, guarded, queueing bool) (cov modelCoverage) {
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
	maxP, minFixed := int64(0), int64(math.MaxInt64)
	for _, l := range limits {
		maxP = max(maxP, l.periodUS())
		if l.Algorithm == FixedWindow {
			minFixed = min(minFixed, l.periodUS())
		}
	}
	if guarded && minFixed < math.MaxInt64 {
		q.Guard = time.Duration(rng.Int64N(minFixed)) * time.Microsecond
	}
	for i, l := range limits {
		q.Limits = append(q.Limits, NamedLimit{Name: fmt.Sprintf("l%d", i), Limit: l})
		model.limits = append(model.limits, newGuardedModel(l, q.Guard.Microseconds()))
	}
	type outstanding struct {
		rv    *Reservation
		bs    []*modelBooking
		costs []int64
	}
	var queue []outstanding
	for step := 0; step < steps; step++ {
		// Advance the clock: often not at all or by a few µs (same-instant
		// calls), sometimes past whole windows.
		var dt int64
		switch r := rng.IntN(10); {
		case r < 3, queueing && r < 9:
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
			if _, err := lim.Hold(ctx, q, d, ""); err != nil {
				t.Fatal(err)
			}
			model.hold = max(model.hold, now+d.Microseconds())
			continue
		}
		if len(queue) > 0 && (rng.IntN(6) == 0 || queueing && rng.IntN(3) == 0) {
			// Cancel an outstanding booking, wherever it is in the queue.
			i := rng.IntN(len(queue))
			o := queue[i]
			queue = append(queue[:i:i], queue[i+1:]...)
			got, err := o.rv.Cancel(ctx)
			if err != nil {
				t.Fatalf("step %d: cancel: %v", step, err)
			}
			if want := model.cancel(now, o.bs, false); int64(got) != want {
				t.Fatalf("seed %d step %d (now %d, limits %v, guard %v): cancel of a booking at %d (cost %v) gave back %d, model %d",
					seed, step, now, limits, q.Guard, o.bs[0].t, o.costs, got, want)
			}
			continue
		}
		if len(queue) > 0 && rng.IntN(6) == 0 {
			// Wake an outstanding booking up, as Wait does.
			i := rng.IntN(len(queue))
			o := queue[i]
			var maxWait int64 = noDeadline
			if rng.IntN(2) == 0 {
				maxWait = rng.Int64N(3 * maxP)
			}
			p := o.rv.plan
			p.wake = o.rv.rep
			got := new(reply)
			err := lim.decide(ctx, p, maxWait, got)
			p.wake = nil
			if err != nil {
				t.Fatalf("step %d: wake: %v", step, err)
			}
			want, standing := model.wake(now, maxWait, o.costs, o.bs)
			if got.standing != standing || got.granted != want.granted || got.waitUS != want.wait || !standing && got.by != want.by {
				t.Fatalf("seed %d step %d (now %d, limits %v, hold %d): wake of a booking at %d:\n script: standing=%v granted=%v wait=%d by=%d\n model:  standing=%v granted=%v wait=%d by=%d",
					seed, step, now, limits, model.hold, o.bs[0].t, got.standing, got.granted, got.waitUS, got.by, standing, want.granted, want.wait, want.by)
			}
			if !standing {
				cov.rebooked++
			}
			switch {
			case standing:
			case got.granted && got.waitUS > 0:
				o.rv.rep, o.bs = got, want.booked
				queue[i] = o
			default:
				queue = append(queue[:i:i], queue[i+1:]...)
			}
			continue
		}
		cost := Cost{}
		costs := make([]int64, len(limits))
		for i, l := range limits {
			n := 1 + rng.IntN(l.most())
			if rng.IntN(2) == 0 {
				n = 1
			}
			cost[q.Limits[i].Name], costs[i] = n, int64(n)
		}
		var maxWait int64
		if queueing || rng.IntN(3) == 0 {
			maxWait = rng.Int64N(3 * maxP)
		}
		p, got := new(plan), new(reply)
		if err := lim.quota(p, Charge{Quota: q, Cost: cost}); err != nil {
			t.Fatal(err)
		}
		if err := lim.decide(ctx, p, maxWait, got); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
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
			t.Fatalf("seed %d step %d (now %d, costs %v, maxWait %d, limits %v, guard %v):\n script: granted=%v wait=%d by=%d rem=%v\n model:  granted=%v wait=%d by=%d rem=%v",
				seed, step, now, costs, maxWait, limits, q.Guard, got.granted, got.waitUS, got.by, gr, want.granted, want.wait, want.by, want.rem)
		}
		// A booking still to come joins the queue. Its local action time is
		// set far ahead: Redis's clock is the test's (miniredis), and a wait of
		// a few µs must not lapse on the local one.
		if got.granted && got.waitUS > 0 {
			rv := newReservation(lim, p, got, time.Now().Add(time.Hour))
			queue = append(queue, outstanding{rv, want.booked, costs})
		}
	}
	cov.midBacks, cov.repassed = model.midBacks, model.repassed
	for _, l := range model.limits {
		if w, ok := l.(*winModel); ok {
			cov.guarded += w.guarded
		}
	}
	return cov
}

// modelCoverage counts what a model run exercised, so that the model tests
// fail if their random steps stop reaching a case.
type modelCoverage struct {
	midBacks int // bookings that gave units back from the middle of a queue
	rebooked int // wake-ups that booked again after a hold
	guarded  int // grants a guard moved to the next window
	repassed int // grant times a guard moved after another limit had set them
}

func (c *modelCoverage) add(o modelCoverage) {
	c.midBacks += o.midBacks
	c.rebooked += o.rebooked
	c.guarded += o.guarded
	c.repassed += o.repassed
}

// Each algorithm's script decides exactly as its reference model over random
// sequences of time advances, costs, waits, holds, guards (fixed windows),
// cancels anywhere in the queue and wake-ups after holds.
func TestScriptMatchesModel(t *testing.T) {
	for _, a := range modelAlgorithms {
		t.Run(a.String(), func(t *testing.T) {
			t.Parallel()
			var cov modelCoverage
			for seed := uint64(1); seed <= 25; seed++ {
				rng := rand.New(rand.NewPCG(seed, uint64(a)))
				cov.add(runModel(t, seed*10+uint64(a), []Limit{randomLimit(rng, a)}, 120, seed%2 == 0, seed%3 == 0))
			}
			t.Logf("%s: %d units given back from the middle of a queue, %d wake-ups booked again after a hold, %d grants moved by a guard",
				a, cov.midBacks, cov.rebooked, cov.guarded)
			// Every algorithm gives back from the middle of a queue (GCRA:
			// what bookings after it, smaller than its cost, left).
			if cov.midBacks == 0 || cov.rebooked == 0 || a == FixedWindow && cov.guarded == 0 {
				t.Fatalf("%s: the random steps missed a case: %+v", a, cov)
			}
		})
	}
}

// Quotas of mixed algorithms decide as the model: the grant time is the latest
// of each limit's earliest time, moved on while it lies in a fixed window's
// guard, and all limits are charged or none.
func TestQuotaScriptMatchesModel(t *testing.T) {
	t.Parallel()
	var cov modelCoverage
	for seed := uint64(1); seed <= 40; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		var ls []Limit
		for range 1 + rng.IntN(3) {
			ls = append(ls, randomLimit(rng, modelAlgorithms[rng.IntN(len(modelAlgorithms))]))
		}
		cov.add(runModel(t, 1000+seed, ls, 150, seed%2 == 0, seed%3 == 0))
	}
	t.Logf("%+v", cov)
	if cov.midBacks == 0 || cov.rebooked == 0 || cov.repassed == 0 {
		t.Fatalf("the random steps missed a case: %+v", cov)
	}
}
