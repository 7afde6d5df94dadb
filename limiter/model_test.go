package limiter

// A pure-Go reference model of each algorithm, written from the definitions in
// limit.go, not from the Lua: the model tests feed the same random sequences of
// (time advance, cost, max wait) to the model and to the script, with Redis's
// clock set by miniredis, and require the same decisions.

import (
	"math"
	"sort"
)

type modelLimit interface {
	earliest(now, t0, cost int64) int64 // earliest µs ≥ t0 at which cost fits
	charge(now, t, cost int64) int64    // take cost at t; returns the charge's mark
	remaining(now int64) int64
	clone() modelLimit // a copy: what Cancel of the next charge restores
	// giveBack gives back a booking b of this limit (Reservation.Cancel's
	// rules, per algorithm) and returns the units given back.
	giveBack(now int64, b *modelBooking) int64
	// last reports whether the state is still the one booking b wrote.
	isLast(b *modelBooking) bool
}

// modelBooking is what a granted booking left on one limit: its time, cost,
// mark (as the script's), the state before it and the state it wrote.
type modelBooking struct {
	t, cost, mark int64
	prior, wrote  modelLimit
}

func newModel(l Limit) modelLimit { return newGuardedModel(l, 0) }

// newGuardedModel is newModel with a quota's guard (µs; fixed windows only).
func newGuardedModel(l Limit, guard int64) modelLimit {
	p, m := l.periodUS(), int64(l.most())
	switch l.Algorithm {
	case GCRA:
		return &gcraModel{e: l.intervalUS(), m: m}
	case SlidingWindow:
		return &logModel{p: p, m: m}
	case SlidingWindowCounter:
		return &winModel{p: p, m: m, counter: true, w: -1}
	default:
		return &winModel{p: p, m: m, w: -1, guard: guard}
	}
}

// GCRA: a bucket of m units draining one unit per e µs, tracked as the
// theoretical arrival time tat.
type gcraModel struct{ tat, e, m int64 }

func (g *gcraModel) earliest(now, t0, c int64) int64 { return max(t0, g.tat+c*g.e-g.m*g.e) }
func (g *gcraModel) charge(now, t, c int64) int64 {
	g.tat = max(g.tat, t) + c*g.e
	return g.tat
}
func (g *gcraModel) isLast(b *modelBooking) bool { return g.tat == b.mark }

// giveBack: as x/time/rate's CancelAt, the cost less the units booked after
// the booking (tat - mark, in intervals); all of it, restoring the state
// before it, while nothing was booked after it (tat is its mark). Nothing
// when what was booked after it is not whole intervals (pushed by a hold or
// another limit).
func (g *gcraModel) giveBack(now int64, b *modelBooking) int64 {
	switch {
	case g.isLast(b):
		g.tat = b.prior.(*gcraModel).tat
		return b.cost
	case g.tat < b.mark || g.tat <= now || (g.tat-b.mark)%g.e != 0:
		return 0
	}
	back := b.cost - (g.tat-b.mark)/g.e
	if back <= 0 {
		return 0
	}
	g.tat -= back * g.e
	return back
}
func (g *gcraModel) remaining(now int64) int64 {
	return max(0, (g.m*g.e-max(g.tat-now, 0))/g.e)
}

func (g *gcraModel) clone() modelLimit { c := *g; return &c }

// Sliding log: every charge is an entry (time, weight); a window (t-p, t]
// may hold at most m. Charges are first come first served, so an entry's time
// is never before the last one's, and ties move one µs later.
type logModel struct {
	p, m    int64
	entries [][2]int64 // time, weight
}

func (s *logModel) prune(now int64) {
	i := sort.Search(len(s.entries), func(i int) bool { return s.entries[i][0] > now-s.p })
	s.entries = s.entries[i:]
}

func (s *logModel) sum() (sum int64) {
	for _, e := range s.entries {
		sum += e[1]
	}
	return sum
}

func (s *logModel) last() int64 {
	if len(s.entries) == 0 {
		return 0
	}
	return s.entries[len(s.entries)-1][0]
}

func (s *logModel) earliest(now, t0, c int64) int64 {
	s.prune(now)
	t := max(t0, s.last())
	// The earliest t whose window (t-p, t] leaves room: drop the oldest entries
	// until what remains plus c fits; t is then just past the last dropped one.
	sum := s.sum()
	for _, e := range s.entries {
		if sum+c <= s.m {
			break
		}
		sum -= e[1]
		t = max(t, e[0]+s.p)
	}
	return t
}

func (s *logModel) charge(now, t, c int64) int64 {
	s.prune(now)
	if l := s.last(); len(s.entries) > 0 && t <= l {
		t = l + 1
	}
	s.entries = append(s.entries, [2]int64{t, c})
	return t
}

// last: the booking's entry is the latest.
func (s *logModel) isLast(b *modelBooking) bool { return s.last() == b.mark }

// giveBack removes the booking's entry (its mark is its time), wherever it
// is in the log.
func (s *logModel) giveBack(now int64, b *modelBooking) int64 {
	for i, e := range s.entries {
		if e[0] == b.mark && e[1] == b.cost {
			s.entries = append(s.entries[:i:i], s.entries[i+1:]...)
			return b.cost
		}
	}
	return 0
}

func (s *logModel) remaining(now int64) int64 {
	s.prune(now)
	return max(0, s.m-s.sum())
}

func (s *logModel) clone() modelLimit {
	c := *s
	c.entries = append([][2]int64(nil), s.entries...)
	return &c
}

// Fixed window and sliding-window counter: counts per window index w = t / p.
// The counter estimates a sliding window as prev × (share of the previous
// window still covered) + cur.
type winModel struct {
	p, m    int64
	guard   int64 // fixed window: no grant within guard of a window's end
	guarded int   // how many times the guard moved a grant (test coverage)
	l       int64 // the time of the latest charge
	counter bool
	w       int64 // window holding the latest charge
	prev    int64 // count of window w-1
	cur     int64 // count of window w
}

func (f *winModel) counts(w int64) (prev, cur int64) {
	switch {
	case w == f.w:
		prev, cur = f.prev, f.cur
	case w == f.w+1:
		prev = f.cur
	}
	if !f.counter {
		prev = 0
	}
	return prev, cur
}

func (f *winModel) earliest(now, t0, c int64) int64 {
	x := max(t0, f.w*f.p)
	for {
		w := x / f.p
		prev, cur := f.counts(w)
		if cur+c <= f.m {
			if prev > 0 {
				// prev*(1 - (t-w*p)/p) + cur + c <= m, solved for t.
				need := w*f.p + int64(math.Ceil(float64(f.p)*float64(prev-(f.m-cur-c))/float64(prev)))
				x = max(x, need)
			}
			if x < (w+1)*f.p-f.guard {
				return x
			}
			if x < (w+1)*f.p {
				f.guarded++
			}
		}
		x = (w + 1) * f.p
	}
}

func (f *winModel) charge(now, t, c int64) int64 {
	w := t / f.p
	prev, cur := f.counts(w)
	if w == f.w+1 {
		prev = f.cur // the stored previous count, kept for the counter
	}
	if w != f.w || t > f.l {
		f.l = t
	}
	f.w, f.prev, f.cur = w, prev, cur+c
	return f.cur
}

// last: the state is still the one the booking wrote (same latest charge,
// same counts).
func (f *winModel) isLast(b *modelBooking) bool {
	o := b.wrote.(*winModel)
	return f.w == o.w && f.l == o.l && f.prev == o.prev && f.cur == o.cur
}

// giveBack: while nothing was charged after the booking, the state before
// it; otherwise its units off its window's count while that window is the
// latest charged (and, for the counter, while it is the one before: it still
// weighs on the latest); a fixed window before the latest takes no grant
// any more, so nothing comes back.
func (f *winModel) giveBack(now int64, b *modelBooking) int64 {
	if f.isLast(b) {
		g := f.guarded
		*f = *b.prior.(*winModel)
		f.guarded = g
		return b.cost
	}
	switch w := b.t / f.p; {
	case w == f.w && f.cur >= b.mark && f.cur >= b.cost:
		f.cur -= b.cost
	case f.counter && w == f.w-1 && f.prev >= b.mark && f.prev >= b.cost:
		f.prev -= b.cost
	default:
		return 0
	}
	return b.cost
}

func (f *winModel) clone() modelLimit { c := *f; return &c }

func (f *winModel) remaining(now int64) int64 {
	w := now / f.p
	switch {
	case f.w > w:
		return 0
	case f.w < w-1 || (!f.counter && f.w < w):
		return f.m
	}
	prev, cur := f.prev, f.cur
	if f.w == w-1 {
		prev, cur = f.cur, 0
	}
	if !f.counter {
		return max(0, f.m-cur)
	}
	return max(0, int64(math.Floor(float64(f.m)-float64(prev)*(1-float64(now-w*f.p)/float64(f.p))-float64(cur))))
}

// snapshot copies every limit's state, for cancel.
func (q *quotaModel) snapshot() []modelLimit {
	out := make([]modelLimit, len(q.limits))
	for i, l := range q.limits {
		out[i] = l.clone()
	}
	return out
}

// quotaModel decides a quota: the grant time is the latest of each limit's
// earliest time; all limits are charged at it, or none.
//
// Cancel of a booking that has not come due and is still the last charge of
// every limit restores each limit's state from before the booking.
type quotaModel struct {
	hold   int64
	limits []modelLimit
	// midBacks counts units given back by bookings that were not their limit's
	// last charge (test coverage).
	midBacks int
	// repassed counts decisions whose grant time a guard moved after every
	// limit had given its earliest time (test coverage).
	repassed int
}

type modelDecision struct {
	granted bool
	wait    int64
	by      int64
	rem     []int64
	booked  []*modelBooking // per limit, when granted
}

// cancel gives back booking bs (one per limit) made at t: nothing once t has
// come, unless forced. It returns the units given back.
func (q *quotaModel) cancel(now int64, bs []*modelBooking, force bool) int64 {
	if len(bs) == 0 || !force && bs[0].t <= now {
		return 0
	}
	var n int64
	for i, l := range q.limits {
		last := l.isLast(bs[i])
		back := l.giveBack(now, bs[i])
		if back > 0 && !last {
			q.midBacks++
		}
		n += back
	}
	return n
}

// wake is a Wait's wake-up of booking bs: it stands (standing true) unless a
// hold ends after its time and is not over yet, or now is within the guard of
// (or past) the end of its fixed window; then it is given back and decided
// anew.
func (q *quotaModel) wake(now, maxWait int64, costs []int64, bs []*modelBooking) (d modelDecision, standing bool) {
	late := q.hold > max(bs[0].t, now)
	for _, l := range q.limits {
		if f, ok := l.(*winModel); ok && !f.counter && now+f.guard >= (bs[0].t/f.p+1)*f.p {
			late = true // woken too late for its fixed window
		}
	}
	if !late {
		return modelDecision{granted: true, wait: max(bs[0].t-now, 0)}, true
	}
	q.cancel(now, bs, true)
	return q.decide(now, maxWait, costs), false
}

func (q *quotaModel) decide(now, maxWait int64, costs []int64) modelDecision {
	t0 := max(now, q.hold)
	t, by := t0, int64(0)
	if q.hold > now {
		by = -1
	}
	for i, l := range q.limits {
		if e := l.earliest(now, t0, costs[i]); e > t {
			t, by = e, int64(i+1)
		}
	}
	// Every limit must be able to grant at t itself: a fixed window whose
	// earliest time was before t may find t inside its guard and move it to
	// its next window's start, which may land in another's guard. The script
	// bounds these passes at 2 per limit (see decide.lua); so does the model.
	for range 2 * len(q.limits) {
		moved := false
		for i, l := range q.limits {
			if e := l.earliest(now, t, costs[i]); e > t {
				t, by, moved = e, int64(i+1), true
			}
		}
		if !moved {
			break
		}
		q.repassed++
	}
	d := modelDecision{wait: t - now, by: by, rem: make([]int64, len(q.limits))}
	if t-now <= maxWait {
		d.granted, d.by = true, 0
		d.booked = make([]*modelBooking, len(q.limits))
		for i, l := range q.limits {
			b := &modelBooking{t: t, cost: costs[i], prior: l.clone()}
			b.mark = l.charge(now, t, costs[i])
			b.wrote = l.clone()
			d.booked[i] = b
		}
	}
	for i, l := range q.limits {
		d.rem[i] = l.remaining(now)
	}
	return d
}
