package limiter

import (
	"errors"
	"testing"
	"time"
)

// Limit validation never panics, and a limit it accepts stays inside the
// scripts' exact-integer arithmetic (doubles: exact below 2^53).
func FuzzLimitValidate(f *testing.F) {
	f.Add(10, int64(time.Second), 10, uint8(0))
	f.Add(0, int64(0), 0, uint8(9))
	f.Add(-1, int64(-time.Hour), -5, uint8(3))
	f.Add(1_000_000_000, int64(maxPeriod), 1_000_000_000, uint8(1))
	f.Add(1<<62, int64(100*365*24*time.Hour), 1<<62, uint8(2))
	f.Add(3, int64(time.Millisecond), 0, uint8(3))
	f.Fuzz(func(t *testing.T, rate int, period int64, burst int, algo uint8) {
		l := Limit{Rate: rate, Period: time.Duration(period), Burst: burst, Algorithm: Algorithm(algo)}
		err := l.validate()
		if err != nil {
			if !errors.Is(err, errInvalidLimit) {
				t.Fatalf("%#v: %v is not errInvalidLimit", l, err)
			}
			return
		}
		const exact = int64(1) << 53
		p, iv, m := l.periodUS(), l.intervalUS(), int64(l.most())
		if p < 1000 || iv < 1 || m < 1 || m > maxRate {
			t.Fatalf("%#v accepted with period %dµs interval %dµs max %d", l, p, iv, m)
		}
		// The largest integer the scripts form: a Unix µs time (through
		// 2100) plus a full bucket of intervals (GCRA) plus a period. (The
		// counter's period × count is a float computation, the same in Go's
		// model, and exactness is not needed there.)
		const year2100 = int64(4_102_444_800_000_000)
		if l.Algorithm == GCRA && (m > maxRate || m*iv > int64(maxPeriod/time.Microsecond)) || year2100+m*iv+p >= exact {
			t.Fatalf("%#v accepted but leaves exact doubles: m*iv=%d", l, m*iv)
		}
		if !(int64(l.Rate)*iv >= p) {
			t.Fatalf("%#v: rounding lets more than Rate per Period through", l)
		}
	})
}

// A script reply of the wrong shape is an ErrBadReply, never a panic or a
// decision.
func FuzzParseReply(f *testing.F) {
	f.Add(7, int64(1), int64(0), int64(0), int64(5), int64(9), int64(0), uint8(0))
	f.Add(4, int64(2), int64(-3), int64(99), int64(-1), int64(0), int64(0), uint8(1))
	f.Add(0, int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), uint8(2))
	f.Add(10, int64(1), int64(1), int64(1), int64(1), int64(1), int64(1), uint8(3))
	f.Fuzz(func(t *testing.T, n int, a, b, c, d, e, g int64, kind uint8) {
		if n < 0 || n > 64 {
			return
		}
		v := fuzzReply(n, kind, a, b, c, d, e, g)
		for limits := 0; limits <= 3; limits++ {
			var r reply
			err := parseReply(v, limits, 1, &r)
			if err != nil {
				if !errors.Is(err, ErrBadReply) {
					t.Fatalf("%v: %v is not ErrBadReply", v, err)
				}
				continue
			}
			if len(v) != 4+3*limits || (r.by < -1 || r.by > int64(limits)) || r.waitUS < 0 {
				t.Fatalf("accepted %v for %d limits as %+v", v, limits, r)
			}
		}
	})
}

// FuzzParseBatch: any reply to a coalesced call is either read into one reply
// per decision, with no more granted than asked and no negative count or
// wait, or refused as ErrBadReply; never a panic.
func FuzzParseBatch(f *testing.F) {
	f.Add(9, 3, int64(2), int64(0), int64(0), int64(7), int64(100), int64(0), uint8(0))
	f.Add(9, 2, int64(5), int64(-1), int64(1), int64(-4), int64(0), int64(9), uint8(1))
	f.Add(7, 4, int64(1), int64(1), int64(1), int64(1), int64(1), int64(1), uint8(3))
	f.Fuzz(func(t *testing.T, n, reps int, a, b, c, d, e, g int64, kind uint8) {
		if n < 0 || n > 64 || reps < 2 || reps > maxCoalesce {
			return
		}
		v := fuzzReply(n, kind, a, b, c, d, e, g)
		var p plan
		p.n, p.limits[0], p.costs[0] = 1, PerSecond(10), 1
		out := make([]reply, reps)
		if err := parseBatch(v, &p, out); err != nil {
			if !errors.Is(err, ErrBadReply) {
				t.Fatalf("%v: %v is not ErrBadReply", v, err)
			}
			return
		}
		granted := 0
		for i, r := range out {
			if r.granted {
				granted++
				if i > 0 && !out[i-1].granted {
					t.Fatalf("%v: decision %d granted after a denial", v, i)
				}
			}
			if r.waitUS < 0 || r.per[0].rem < 0 {
				t.Fatalf("%v: negative wait or remaining in %+v", v, r)
			}
		}
		if granted != int(v[0].(int64)) {
			t.Fatalf("%v: %d granted, reply said %v", v, granted, v[0])
		}
	})
}

// fuzzReply is a script reply of n values cycling through vals, with kind
// deciding which of them are integers, strings or nils.
func fuzzReply(n int, kind uint8, vals ...int64) []any {
	v := make([]any, n)
	for i := range v {
		switch (int(kind) + i) % 5 {
		case 0, 1, 2:
			v[i] = vals[i%len(vals)]
		case 3:
			v[i] = "not a number"
		case 4:
			v[i] = nil
		}
	}
	return v
}
