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
// decision; one of the right shape is read value for value. The generator
// builds replies in the scripts' layout (fuzzReply), so that the fuzzer
// reaches the accepting path as well as every refusal.
func FuzzParseReply(f *testing.F) {
	f.Add(1, uint8(0), 0, int64(1), int64(0), int64(0), int64(0), int64(5), int64(9))  // a grant
	f.Add(2, uint8(0), 0, int64(0), int64(7), int64(2), int64(9), int64(0), int64(3))  // a denial by limit 2
	f.Add(0, uint8(0), 0, int64(2), int64(4), int64(0), int64(8), int64(0), int64(1))  // a standing wake-up
	f.Add(3, uint8(0), 0, int64(0), int64(1), int64(-1), int64(2), int64(3), int64(4)) // a hold's denial
	f.Add(1, uint8(1), 0, int64(1), int64(0), int64(0), int64(0), int64(5), int64(9))  // a value short
	f.Add(2, uint8(2), 7, int64(1), int64(0), int64(0), int64(0), int64(5), int64(9))  // a string
	f.Add(1, uint8(3), 12, int64(1), int64(0), int64(0), int64(0), int64(5), int64(9)) // a nil
	f.Add(1, uint8(0), 0, int64(3), int64(0), int64(0), int64(0), int64(5), int64(9))  // status 3
	f.Add(1, uint8(0), 0, int64(0), int64(0), int64(1), int64(0), int64(5), int64(9))  // denied, no wait
	f.Add(1, uint8(0), 0, int64(1), int64(0), int64(0), int64(0), int64(-5), int64(9)) // negative remaining
	f.Add(1, uint8(5), 0, int64(1), int64(0), int64(0), int64(0), int64(5), int64(9))  // short: a grant, no booking values
	f.Add(3, uint8(5), 0, int64(0), int64(7), int64(2), int64(9), int64(0), int64(3))  // short: a denial by limit 2
	f.Add(2, uint8(6), 0, int64(1), int64(0), int64(0), int64(0), int64(5), int64(9))  // short, a value short
	f.Add(1, uint8(7), 6, int64(1), int64(0), int64(0), int64(0), int64(5), int64(9))  // short, a string
	f.Add(2, uint8(9), 0, int64(1), int64(0), int64(0), int64(0), int64(5), int64(9))  // short, a value long
	f.Add(1, uint8(5), 0, int64(1), int64(0), int64(0), int64(0), int64(-5), int64(9)) // short, negative remaining
	f.Fuzz(func(t *testing.T, limits int, corrupt uint8, at int, a, b, c, d, e, g int64) {
		if limits < 0 || limits > 4 {
			return
		}
		v := fuzzReply(limits, corrupt, at, a, b, c, d, e, g)
		for n := max(limits-1, 0); n <= limits+1; n++ {
			var r reply
			err := parseReply(v, n, 1, 2, &r)
			if err != nil {
				if !errors.Is(err, ErrBadReply) {
					t.Fatalf("%v: %v is not ErrBadReply", v, err)
				}
				if r.granted {
					t.Fatalf("%v: refused, yet granted", v)
				}
				continue
			}
			x := make([]int64, len(v))
			for i := range v {
				x[i] = v[i].(int64) // accepted: every value an integer
			}
			stride := perLimitLen // the long form, or the short one without booking values
			if n > 0 && len(v) == headerLen+shortLimitLen*n {
				stride = shortLimitLen
			}
			if len(v) != headerLen+stride*n || x[0] < 0 || x[0] > 2 || x[1] < 0 || x[2] < -1 || x[2] > int64(n) || x[4] < 0 {
				t.Fatalf("accepted %v for %d limits", x, n)
			}
			if r.granted != (x[0] >= 1) || r.standing != (x[0] == 2) || r.waitUS != x[1] || r.by != x[2] || r.grantUS != x[3] || r.leaseUS != x[4] {
				t.Fatalf("%v read as %+v", x, r)
			}
			if !r.granted && r.waitUS == 0 {
				t.Fatalf("%v: a denial without a wait accepted", x)
			}
			for i := range n {
				pl, b := r.per[i], x[headerLen+stride*i:]
				var booking [bookingLen]int64 // 0s in the short form
				if stride == perLimitLen {
					booking = [bookingLen]int64(b[shortLimitLen:perLimitLen])
				}
				if pl.rem != b[0] || pl.resetUS != b[1] || pl.rem < 0 || pl.resetUS < 0 || pl.booking != booking {
					t.Fatalf("%v: limit %d read as %+v", x, i+1, pl)
				}
			}
		}
	})
}

// FuzzParseBatch: any reply to a coalesced call is either read into one reply
// per decision, with no more granted than asked and no negative count or
// wait, or refused as ErrBadReply; never a panic. Replies are built in the
// scripts' layout (two limit parts), so the accepting path is reached.
func FuzzParseBatch(f *testing.F) {
	f.Add(3, uint8(0), 0, int64(2), int64(0), int64(0), int64(7), int64(100), int64(0)) // 2 of 3 granted
	f.Add(2, uint8(0), 0, int64(0), int64(5), int64(-1), int64(4), int64(0), int64(9))  // a hold: none
	f.Add(4, uint8(0), 0, int64(4), int64(0), int64(0), int64(1), int64(1), int64(1))   // all granted
	f.Add(4, uint8(0), 0, int64(0), int64(3), int64(1), int64(1), int64(1), int64(1))   // none
	f.Add(2, uint8(0), 0, int64(3), int64(0), int64(0), int64(1), int64(1), int64(1))   // more than asked
	f.Add(2, uint8(0), 0, int64(0), int64(3), int64(2), int64(1), int64(1), int64(1))   // denied by limit 2
	f.Add(2, uint8(2), 5, int64(1), int64(0), int64(0), int64(1), int64(1), int64(1))   // a string
	f.Add(2, uint8(1), 0, int64(1), int64(0), int64(0), int64(1), int64(1), int64(1))   // a value short
	f.Fuzz(func(t *testing.T, reps int, corrupt uint8, at int, a, b, c, d, e, g int64) {
		if reps < 2 || reps > maxCoalesce {
			return
		}
		v := fuzzReply(2, corrupt, at, a, b, c, d, e, g)
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
			} else if r.by < -1 || r.by > 1 || r.waitUS <= 0 {
				t.Fatalf("%v: denial %+v", v, r)
			}
			if r.waitUS < 0 || r.per[0].rem < 0 || r.per[0].resetUS < 0 {
				t.Fatalf("%v: negative wait, remaining or reset in %+v", v, r)
			}
		}
		if granted != int(v[0].(int64)) {
			t.Fatalf("%v: %d granted, reply said %v", v, granted, v[0])
		}
	})
}

// fuzzReply is a reply in the scripts' layout for n limits (headerLen +
// perLimitLen·n values, or, when corrupt / 5 is odd, the short form without
// booking values: headerLen + shortLimitLen·n) cycling through vals, then, by
// corrupt % 5, left whole (0), a value short (1), a value long (4), or with
// the value at index at a string (2) or nil (3).
func fuzzReply(n int, corrupt uint8, at int, vals ...int64) []any {
	per := perLimitLen
	if corrupt/5%2 == 1 {
		per = shortLimitLen
	}
	v := make([]any, headerLen+per*n)
	for i := range v {
		v[i] = vals[i%len(vals)]
	}
	if at < 0 {
		at = -(at + 1)
	}
	switch corrupt % 5 {
	case 1:
		v = v[:len(v)-1]
	case 2:
		v[at%len(v)] = "not a number"
	case 3:
		v[at%len(v)] = nil
	case 4:
		v = append(v, vals[0])
	}
	return v
}
