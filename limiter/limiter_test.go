package limiter

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// newLim is New on b's client with b's prefix. A Timeout left 0 becomes
// 10 s: the tests that use newLim are about decisions, not about noticing a
// dead Redis, and under load a call outlasted the default 250 ms (one stall
// failed TestScriptFlushMidRun and TestAllowEveryAlgorithm at once). Tests
// of the default build with New.
func newLim(b redistest.Backend, o Options) *Limiter {
	o.Prefix = b.Prefix
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	return New(b.Client, o)
}

func TestAllowEveryAlgorithm(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := newLim(b, Options{})
		for _, a := range modelAlgorithms {
			limit := Limit{Rate: 5, Period: time.Minute, Burst: 5, Algorithm: a}
			key := "user:{42}:" + a.String() // braces and colons must stay inside the tag
			for i := 0; i < 5; i++ {
				r, err := lim.Allow(ctx, Key(key, limit).Take(1))
				if err != nil {
					t.Fatal(err)
				}
				if !r.Allowed || r.Remaining != 4-i {
					t.Fatalf("%s call %d: %+v", a, i, r)
				}
			}
			// The counter may ask for more than a period: the previous window's
			// count weighs on the estimate until enough of it has slid out.
			maxRetry := time.Minute
			if a == SlidingWindowCounter {
				maxRetry = 2 * time.Minute
			}
			r, err := lim.Allow(ctx, Key(key, limit).Take(1))
			if err != nil || r.Allowed || r.RetryAfter <= 0 || r.RetryAfter > maxRetry {
				t.Fatalf("%s 6th call: %+v %v", a, r, err)
			}
			if err := lim.Reset(ctx, Quota{Name: key}); err != nil {
				t.Fatal(err)
			}
			if r, err := lim.Allow(ctx, Key(key, limit).Take(1)); err != nil || !r.Allowed {
				t.Fatalf("%s after Reset: %+v %v", a, r, err)
			}
		}
	})
}

// Bad input is a typed error and never reaches Redis.
func TestBadInputTypedErrorsNoWrite(t *testing.T) {
	m, c := redistest.NewMini(t)
	ctx := context.Background()
	lim := New(c, Options{Prefix: "bad"})
	good := PerSecond(10)
	q := Quota{Name: "q", Limits: []NamedLimit{{"a", good}, {"b", PerMinute(3)}}}
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"rate 0", func() error { _, e := lim.Allow(ctx, Key("k", Limit{Period: time.Second}).Take(1)); return e }, errInvalidLimit},
		{"rate <0", func() error { _, e := lim.Allow(ctx, Key("k", Limit{Rate: -1, Period: time.Second}).Take(1)); return e }, errInvalidLimit},
		{"period 0", func() error { _, e := lim.Allow(ctx, Key("k", Limit{Rate: 1}).Take(1)); return e }, errInvalidLimit},
		{"period <0", func() error { _, e := lim.Allow(ctx, Key("k", Limit{Rate: 1, Period: -time.Second}).Take(1)); return e }, errInvalidLimit},
		{"period 100y", func() error { _, e := lim.Allow(ctx, Key("k", Every(1, 100*365*24*time.Hour)).Take(1)); return e }, errInvalidLimit},
		{"burst <0", func() error {
			_, e := lim.Allow(ctx, Key("k", Limit{Rate: good.Rate, Period: good.Period, Burst: -1}).Take(1))
			return e
		}, errInvalidLimit},
		{"algorithm", func() error {
			_, e := lim.Allow(ctx, Key("k", Limit{Rate: good.Rate, Period: good.Period, Algorithm: 9}).Take(1))
			return e
		}, errInvalidLimit},
		{"n 0", func() error { _, e := lim.Allow(ctx, Key("k", good).Take(0)); return e }, errInvalidCost},
		{"n <0", func() error { _, e := lim.Allow(ctx, Key("k", good).Take(-3)); return e }, errInvalidCost},
		{"n > burst", func() error { _, e := lim.Allow(ctx, Key("k", good).Take(11)); return e }, errExceedsLimit},
		{"n 2^62", func() error { _, e := lim.Allow(ctx, Key("k", good).Take(1<<62)); return e }, errExceedsLimit},
		{"wait n > burst", func() error { return lim.Wait(ctx, Key("k", good).Take(11)) }, errExceedsLimit},
		{"reserve n > burst", func() error { _, e := lim.Reserve(ctx, Key("k", good).Take(11)); return e }, errExceedsLimit},
		{"empty key", func() error { _, e := lim.Allow(ctx, Key("", good).Take(1)); return e }, errEmptyKey},
		{"long key", func() error { _, e := lim.Allow(ctx, Key(strings.Repeat("k", maxKeyLen+1), good).Take(1)); return e }, errKeyTooLong},
		{"empty quota", func() error {
			_, e := lim.Allow(ctx, Charge{Quota: Quota{Name: "e"}, Cost: Cost{"a": 1}})
			return e
		}, errEmptyQuota},
		{"unknown limit", func() error { _, e := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"zzz": 1}}); return e }, errUnknownLimit},
		{"negative cost", func() error { _, e := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"a": -1}}); return e }, errInvalidCost},
		{"cost charges nothing", func() error { _, e := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"a": 0}}); return e }, errInvalidCost},
		{"cost over limit", func() error {
			_, e := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"a": 1, "b": 4}})
			return e
		}, errExceedsLimit},
		{"duplicate limit", func() error {
			_, e := lim.Allow(ctx, Charge{Quota: Quota{Name: "d", Limits: []NamedLimit{{"a", good}, {"a", good}}}, Cost: Cost{"a": 1}})
			return e
		}, errDuplicateLimit},
		{"hold > a week", func() error { _, e := lim.Hold(ctx, Quota{Name: "q"}, maxHold+time.Second, ""); return e }, errInvalidDuration},
		{"sync unknown", func() error { _, e := lim.Sync(ctx, q, "zzz", 3); return e }, errUnknownLimit},
		{"sync negative", func() error { _, e := lim.Sync(ctx, q, "a", -3); return e }, errInvalidCost},
	}
	for _, tc := range cases {
		err := tc.call()
		if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want %v (and ErrInvalid)", tc.name, err, tc.want)
		}
	}
	if keys := m.Keys(); len(keys) != 0 {
		t.Fatalf("bad input wrote to Redis: %v", keys)
	}
}

// When one limit of a quota denies, no other limit was charged.
func TestQuotaAllOrNothing(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := newLim(b, Options{})
		q := Quota{Name: "binance", Limits: []NamedLimit{
			{"weight", Limit{Rate: 1200, Period: time.Minute, Burst: 1200, Algorithm: FixedWindow}},
			{"orders", Limit{Rate: 10, Period: 10 * time.Second, Burst: 10, Algorithm: SlidingWindow}},
			{"daily", Limit{Rate: 200_000, Period: 24 * time.Hour, Burst: 200_000, Algorithm: SlidingWindowCounter}},
		}}
		for i := 0; i < 10; i++ {
			r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1, "orders": 1, "daily": 1}})
			if err != nil || !r.Allowed {
				t.Fatalf("order %d: %+v %v", i, r, err)
			}
		}
		r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 7, "orders": 1, "daily": 1}})
		if err != nil || r.Allowed || r.DeniedBy != "orders" || r.RetryAfter <= 0 {
			t.Fatalf("11th order: %+v %v", r, err)
		}
		// Weight and daily were not charged by the denied call: weight shows
		// 1200-10 left, not 1200-17; daily 200000-10.
		r, err = lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
		if err != nil || !r.Allowed || r.Limits[0].Remaining != 1200-11 {
			t.Fatalf("weight after denial: %+v %v", r, err)
		}
		r, err = lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"daily": 1}})
		if err != nil || !r.Allowed || r.Limits[0].Remaining != 200_000-11 {
			t.Fatalf("daily after denial: %+v %v", r, err)
		}
		if r.Remaining != 200_000-11 {
			t.Fatalf("Result.Remaining = %d", r.Remaining)
		}
	})
}

// A hold (what a 429 triggers) stops every grant until it passes, for every
// limiter instance sharing the Redis.
func TestHoldStopsEveryInstance(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		a, c := newLim(b, Options{}), newLim(b, Options{})
		q := Quota{Name: "ex", Limits: []NamedLimit{{"w", PerSecond(100)}}}
		if r, _ := a.Allow(ctx, Charge{Quota: q, Cost: Cost{"w": 1}}); !r.Allowed {
			t.Fatal("first call denied")
		}
		got, err := a.Hold(ctx, Quota{Name: "ex"}, 2*time.Second, "")
		if err != nil || got != 2*time.Second {
			t.Fatalf("Hold: %v %v", got, err)
		}
		// A shorter hold does not shorten it.
		if got, _ := c.Hold(ctx, Quota{Name: "ex"}, time.Second, ""); got <= time.Second {
			t.Fatalf("shorter hold replaced the longer one: %v", got)
		}
		r, err := c.Allow(ctx, Charge{Quota: q, Cost: Cost{"w": 1}})
		if err != nil || r.Allowed || r.DeniedBy != HoldName || r.RetryAfter <= time.Second || r.RetryAfter > 2*time.Second {
			t.Fatalf("during hold: %+v %v", r, err)
		}
		if h, err := c.held(ctx, Quota{Name: "ex"}); err != nil || h <= time.Second || h > 2*time.Second {
			t.Fatalf("Held: %v %v", h, err)
		}
		if h, err := c.held(ctx, Quota{Name: "no-hold-here"}); err != nil || h != 0 {
			t.Fatalf("Held without a hold: %v %v", h, err)
		}
		// Reserve books its turn after the hold.
		rv, err := c.Reserve(ctx, Charge{Quota: q, Cost: Cost{"w": 1}})
		if err != nil || !rv.OK() || rv.Delay() <= time.Second {
			t.Fatalf("reserve during hold: ok=%v delay=%v err=%v", rv != nil && rv.OK(), rv.Delay(), err)
		}
		// Its time on Redis's clock is at or after the hold's end.
		if b.Kind != redistest.Mini {
			if d := time.Until(rv.at()); d < time.Second || d > 2200*time.Millisecond {
				t.Fatalf("reservation At is %v from now, want the hold's end (~2s)", d)
			}
		}
	})
}

// Sync raises our count to the server's and never lowers it.
func TestSyncRaisesNeverLowers(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := newLim(b, Options{})
		for _, a := range modelAlgorithms {
			q := Quota{Name: "sync-" + a.String(), Limits: []NamedLimit{{"w", Limit{Rate: 100, Period: time.Minute, Burst: 100, Algorithm: a}}}}
			r, _ := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"w": 10}})
			if !r.Allowed || r.Limits[0].Remaining != 90 {
				t.Fatalf("%s: %+v", a, r)
			}
			raised, err := lim.Sync(ctx, q, "w", 60)
			if err != nil || !raised {
				t.Fatalf("%s: sync 60: %v %v", a, raised, err)
			}
			r, _ = lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"w": 1}})
			if !r.Allowed || r.Limits[0].Remaining < 38 || r.Limits[0].Remaining > 39 {
				t.Fatalf("%s: after sync to 60, remaining %d, want 39 (38 if the GCRA refilled nothing)", a, r.Limits[0].Remaining)
			}
			raised, err = lim.Sync(ctx, q, "w", 5)
			if err != nil || raised {
				t.Fatalf("%s: sync 5 lowered the count: %v %v", a, raised, err)
			}
			// Absurd usage is taken as the limit: nothing left.
			if _, err := lim.Sync(ctx, q, "w", 1<<60); err != nil {
				t.Fatal(err)
			}
			if r, _ := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"w": 1}}); r.Allowed {
				t.Fatalf("%s: allowed after server reported the limit used up", a)
			}
		}
	})
}

// Cancel gives units back, and says how many.
func TestReserveCancel(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := newLim(b, Options{})
		for _, a := range modelAlgorithms {
			limit := Limit{Rate: 2, Period: time.Minute, Burst: 2, Algorithm: a}
			key := "rc-" + a.String()
			for i := 0; i < 2; i++ {
				if r, _ := lim.Allow(ctx, Key(key, limit).Take(1)); !r.Allowed {
					t.Fatalf("%s: warm-up denied", a)
				}
			}
			rv, err := lim.Reserve(ctx, Key(key, limit).Take(1))
			if err != nil || !rv.OK() || rv.Delay() <= 0 {
				t.Fatalf("%s: reserve: %v", a, err)
			}
			first := rv.Delay()
			if _, err := rv.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
			// The same turn is free again: a new reservation gets (about) the same delay, not a later one.
			rv2, err := lim.Reserve(ctx, Key(key, limit).Take(1))
			if err != nil || !rv2.OK() {
				t.Fatalf("%s: second reserve: %v", a, err)
			}
			if rv2.Delay() > first+50*time.Millisecond { // 50 ms: two round trips of slack on a busy machine
				t.Fatalf("%s: cancelled turn not given back: first %v, then %v", a, first, rv2.Delay())
			}
			// A cancel behind a later booking gives back what the later one
			// has not claimed (x/time/rate's CancelAt): nothing for GCRA, whose
			// later booking queued on it; the unit for the others, whose later
			// booking sits in the same window (fixed), the next one (counter:
			// its units still weigh there) or the same log.
			if _, err := lim.Reserve(ctx, Key(key, limit).Take(1)); err != nil {
				t.Fatal(err)
			}
			n, err := rv2.Cancel(ctx)
			want := 1
			if a == GCRA {
				want = 0
			}
			if err != nil || n != want {
				t.Fatalf("%s: cancel behind a later booking gave back %d (%v), want %d", a, n, err, want)
			}
		}
	})
}

// Reserve and Wait charge nothing when the turn would come after the deadline.
func TestWaitDeadline(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		lim := newLim(b, Options{})
		limit := PerMinute(1)
		if err := lim.Wait(context.Background(), Key("dl", limit).Take(1)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		err := lim.Wait(ctx, Key("dl", limit).Take(1))
		if !errors.Is(err, ErrWouldExceedDeadline) {
			t.Fatalf("got %v", err)
		}
		// Returns at once, not at the deadline: a second of slack for one
		// call on a loaded machine, a second short of the deadline.
		if time.Since(start) > time.Second {
			t.Fatalf("Wait slept %v before failing", time.Since(start))
		}
		// Nothing was charged: the next turn is still one minute after the first, not two.
		rv, err := lim.Reserve(context.Background(), Key("dl", limit).Take(1))
		if err != nil || rv.Delay() > time.Minute {
			t.Fatalf("deadline failure charged: delay %v %v", rv.Delay(), err)
		}
	})
}

// A context cancelled while Wait sleeps gives the booking back.
func TestWaitCancelGivesBack(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		lim := newLim(b, Options{})
		limit := Every(1, 2*time.Second)
		if err := lim.Wait(context.Background(), Key("wc", limit).Take(1)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- lim.Wait(ctx, Key("wc", limit).Take(1)) }()
		time.Sleep(50 * time.Millisecond)
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
		rv, err := lim.Reserve(context.Background(), Key("wc", limit).Take(1))
		if err != nil || rv.Delay() > 2*time.Second {
			t.Fatalf("cancelled wait kept its turn: next delay %v (%v)", rv.Delay(), err)
		}
	})
}

// A turn Redis booked before the deadline, whose reply came back so late that
// it now lies past the deadline, is given back at once with
// ErrWouldExceedDeadline: Wait neither sleeps until the deadline nor keeps
// the charge.
func TestWaitLateReplyPastDeadline(t *testing.T) {
	srv := redistest.Shared(t)
	px := redistest.NewFaultProxy(t, srv.Addr())
	c := redis.NewClient(redistest.ClientOptions(px.Addr()))
	defer c.Close()
	lim := New(c, Options{Prefix: redistest.NewPrefix(t), Timeout: 5 * time.Second})
	limit := Every(1, time.Second)
	first := time.Now()
	if err := lim.Wait(context.Background(), Key("late", limit).Take(1)); err != nil {
		t.Fatal(err)
	}
	// The next turn is 1 s after the first grant, which came at or after
	// first. With the deadline 50 ms after first + 1 s, Redis either refuses
	// (the first grant came more than 50 ms late) or books the turn, whose
	// reply, held back 200 ms, then puts it at least 150 ms past the deadline.
	px.SetDelay(200 * time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), first.Add(time.Second+50*time.Millisecond))
	defer cancel()
	err := lim.Wait(ctx, Key("late", limit).Take(1))
	if !errors.Is(err, ErrWouldExceedDeadline) {
		t.Fatalf("got %v, want ErrWouldExceedDeadline", err)
	}
	px.SetDelay(0)
	// Not charged: the next turn is still the one 1 s after the first grant,
	// less than 1 s from now (a charged turn would put it 2 s after it).
	rv, err := lim.Reserve(context.Background(), Key("late", limit).Take(1))
	if err != nil || !rv.OK() || rv.Delay() >= time.Second {
		t.Fatalf("late turn kept: next delay %v (%v)", rv.Delay(), err)
	}
}

// A turn granted at once whose reply comes back after the deadline is taken,
// as x/time/rate's WaitN takes a zero delay: its turn has come, Cancel could not
// give it back, and failing would waste it.
func TestWaitImmediateGrantLateReply(t *testing.T) {
	srv := redistest.Shared(t)
	px := redistest.NewFaultProxy(t, srv.Addr())
	o := redistest.ClientOptions(px.Addr())
	o.ContextTimeoutEnabled = false // the late reply must arrive, not be cut off at the deadline
	o.ReadTimeout = 5 * time.Second
	c := redis.NewClient(o)
	defer c.Close()
	lim := New(c, Options{Prefix: redistest.NewPrefix(t), Timeout: 5 * time.Second})
	limit := Every(10, time.Hour)
	if err := lim.Wait(context.Background(), Key("warm", limit).Take(1)); err != nil { // connection and script in place
		t.Fatal(err)
	}
	px.SetDelay(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := lim.Wait(ctx, Key("now", limit).Take(1)); err != nil {
		t.Fatalf("immediate grant, late reply: %v", err)
	}
	px.SetDelay(0)
	if r, err := lim.Allow(context.Background(), Key("now", limit).Take(1)); err != nil || r.Remaining != 8 {
		t.Fatalf("remaining %d (%v), want 8: the waited unit and this one", r.Remaining, err)
	}
}

// scriptsOnly hides a client's Process and Do, as a wrapper of a user's own
// that offers only the Client interface: its calls may be retried beneath
// the limiter, which cannot send them at most once.
type scriptsOnly struct{ Client }

// A call that its client retries after Redis already ran it is not charged
// twice: on a client the limiter cannot send at most once, the token makes
// the second run answer from the first's reply.
func TestRetriedCallChargedOnce(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := New(scriptsOnly{b.Client}, Options{Prefix: b.Prefix})
		if !lim.decideDedupe {
			t.Fatal("a client that may retry, not a go-redis one: dedupe must be on")
		}
		p, first, again := new(plan), new(reply), new(reply)
		if err := lim.single(p, "retry", PerMinute(10), 3); err != nil {
			t.Fatal(err)
		}
		if err := lim.run(ctx, p, 0, first); err != nil || !first.granted {
			t.Fatal(err)
		}
		// Resend the very same command, as a retry would.
		seq := lim.tokenSeq.Load()
		lim.tokenSeq.Store(seq - 1)
		err := lim.run(ctx, p, 0, again)
		if err != nil || !again.granted || again.per[0].rem != first.per[0].rem {
			t.Fatalf("retry answered %+v, first %+v (%v)", again, first, err)
		}
		r, _ := lim.Allow(ctx, Key("retry", PerMinute(10)).Take(1))
		if r.Remaining != 6 {
			t.Fatalf("remaining %d after 3+1 units, want 6: retried call was charged twice", r.Remaining)
		}
	})
}

// Decisions need no dedupe key on a go-redis client, which sends them at
// most once whatever its MaxRetries; Cancel's token still follows the
// client's retries.
func TestDedupeOffWithoutRetries(t *testing.T) {
	_, c := redistest.NewMini(t)
	nc := redis.NewClient(&redis.Options{Addr: c.Options().Addr, MaxRetries: -1})
	defer nc.Close()
	for _, tc := range []struct {
		name             string
		lim              *Limiter
		decisions, other bool
	}{
		{"MaxRetries -1", New(nc, Options{}), false, false},
		{"retrying go-redis client", New(c, Options{}), false, true},
		{"wrapped client", New(scriptsOnly{c}, Options{}), true, true},
		{"disabled", New(scriptsOnly{c}, Options{DedupeWindow: -1}), false, false},
	} {
		require.Equal(t, tc.decisions, tc.lim.decideDedupe, "%s: decisions", tc.name)
		require.Equal(t, tc.other, tc.lim.dedupe, "%s: other calls", tc.name)
	}
}

func TestLimitString(t *testing.T) {
	for l, want := range map[Limit]string{
		PerSecond(10): "10 req/s (burst 10, gcra)",
		Limit{Rate: 1200, Period: time.Minute, Burst: 1200, Algorithm: FixedWindow}:    "1200 req/m (fixed)",
		Limit{Rate: 10, Period: 10 * time.Second, Burst: 10, Algorithm: SlidingWindow}: "10 req/10s (sliding)",
	} {
		if l.String() != want {
			t.Errorf("%#v: %q, want %q", l, l.String(), want)
		}
	}
}

// Limits built on the fly do not grow the argument cache without bound.
func TestArgCacheBounded(t *testing.T) {
	for i := range 3 * argCacheMax {
		l := Every(1+i, time.Hour)
		if a := argsFor(l, 0); a[2] != 1+i {
			t.Fatalf("args of %s: %v", l, *a)
		}
	}
	n := 0
	argCache.Range(func(_, _ any) bool { n++; return true })
	if n > argCacheMax {
		t.Fatalf("argument cache holds %d limits, bound %d", n, argCacheMax)
	}
	if a := argsFor(benchLimit, 0); a[2] != benchLimit.most() {
		t.Fatalf("args after the cache started over: %v", *a)
	}
}

// allow.lua and decide.lua decide a plain Allow alike: the same grants,
// remaining units, resets, retry-afters and denier, through a limit used up
// and a hold, on miniredis's clock. (One source of the GCRA, gcra.lua; this
// checks the two scripts around it.)
func TestPlainAllowMatchesQuota(t *testing.T) {
	m, c := redistest.NewMini(t)
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m.SetTime(now)
	plain := New(c, Options{Prefix: "plain"})
	general := New(scriptsOnly{c}, Options{Prefix: "general"})
	limit := Limit{Rate: 5, Period: time.Second, Burst: 3}
	p := new(plan)
	require.NoError(t, plain.single(p, "k", limit, 1))
	require.True(t, plain.plain(p, 0), "a go-redis client's Allow goes to allow.lua")
	require.False(t, general.plain(p, 0), "a client that may retry needs decide.lua's token")
	steps := []struct {
		n       int
		advance time.Duration
		hold    time.Duration
	}{
		{1, 0, 0}, {1, 0, 0}, {2, 0, 0}, {1, 0, 0}, {3, 100 * time.Millisecond, 0},
		{1, 150 * time.Millisecond, 0}, {1, 0, 0}, {1, time.Second, 0}, {1, 0, 300 * time.Millisecond},
		{1, 200 * time.Millisecond, 0}, {1, 100 * time.Millisecond, 0}, {3, 0, 0}, {1, 2 * time.Second, 0},
	}
	var granted, booked, denied, held int
	for i, s := range steps {
		now = now.Add(s.advance)
		m.SetTime(now)
		if s.hold > 0 {
			for _, l := range []*Limiter{plain, general} {
				_, err := l.Hold(ctx, Quota{Name: "k", Limits: []NamedLimit{{"a", limit}}}, s.hold, "")
				require.NoError(t, err)
			}
		}
		// Each step decides now (Allow), then books up to 250 ms ahead (Reserve, Wait).
		for _, maxWaitUS := range []int64{0, 250_000} {
			var got [2]reply
			for j, l := range []*Limiter{plain, general} {
				p := new(plan)
				require.NoError(t, l.single(p, "k", limit, s.n))
				require.NoError(t, l.run(ctx, p, maxWaitUS, &got[j]), "step %d", i)
			}
			// A denial's grant time (when it would fit) is decide.lua's alone
			// when nothing could be booked: no single-limit GCRA Allow reads it,
			// so allow.lua does not send it.
			if !got[1].granted && maxWaitUS == 0 {
				require.Greater(t, got[1].grantUS, int64(0))
				got[1].grantUS = 0
			}
			require.Equal(t, got[1], got[0], "step %d, max wait %d µs: allow.lua (first) and decide.lua differ", i, maxWaitUS)
			switch {
			case got[0].granted && got[0].waitUS > 0:
				booked++
				require.NotZero(t, got[0].per[0].booking[0], "step %d: a booking has an id", i)
			case got[0].granted:
				granted++
			case got[0].by == -1:
				held++
			default:
				denied++
			}
		}
	}
	require.True(t, granted > 0 && booked > 0 && denied > 0 && held > 0, "granted %d, booked %d, denied %d, held %d: every branch", granted, booked, denied, held)
}

// allow.lua's reply is checked: a malformed one is ErrBadReply, never a
// grant.
func TestParsePlainChecksReply(t *testing.T) {
	// A limit of 10 units, one every 100 µs (span 1000 µs), cost 1 (inc 100).
	const span, e, inc = 1000, 100, 100
	z := func(head ...any) []any {
		return append(head, int64(0), int64(0), int64(0), int64(0), int64(0), int64(0))
	}
	for _, v := range [][]any{
		nil,
		{int64(1), int64(0), int64(3)},
		append(z(int64(1), int64(0), int64(0), int64(0), int64(0), int64(0), int64(500)), int64(0)), // one value too many
		z(int64(1), int64(0), int64(0), int64(0), int64(0), "3", int64(500)),
		z(int64(2), int64(0), int64(0), int64(0), int64(0), int64(0), int64(500)),  // standing: not allow.lua's
		z(int64(1), int64(7), int64(0), int64(0), int64(0), int64(0), int64(500)),  // granted with a wait
		z(int64(0), int64(0), int64(1), int64(0), int64(0), int64(0), int64(500)),  // denied without one
		z(int64(0), int64(5), int64(-2), int64(0), int64(0), int64(0), int64(500)), // a second quota's hold
		z(int64(0), int64(5), int64(-1), int64(0), int64(0), int64(0), int64(-3)),
	} {
		var r reply
		require.ErrorIs(t, parsePlain(v, 0, span, e, inc, &r), ErrBadReply, "%v", v)
		require.False(t, r.granted)
	}
	// Remaining follows from reset (the tat less now) as gcra_left finds it:
	// 1000 µs less 930 leave 70 µs, no whole unit; less 500, 5.
	var r reply
	require.NoError(t, parsePlain(z(int64(0), int64(5), int64(-1), int64(0), int64(0), int64(0), int64(930)), 0, span, e, inc, &r))
	require.Equal(t, reply{waitUS: 5, by: -1, per: [maxQuotaLimits]perLimit{{rem: 0, resetUS: 930}}}, r)
	// A booking (max wait > 0) may wait up to the max wait, not beyond it.
	booking := z(int64(1), int64(7), int64(0), int64(1007), int64(0), int64(0), int64(500))
	require.NoError(t, parsePlain(booking, 7, span, e, inc, &r))
	require.Equal(t, reply{granted: true, waitUS: 7, grantUS: 1007, per: [maxQuotaLimits]perLimit{{rem: 5, resetUS: 500}}}, r)
	require.ErrorIs(t, parsePlain(booking, 6, span, e, inc, &r), ErrBadReply)
	require.False(t, r.granted)
	// The short form (no booking values) of a denial is read with its
	// booking values 0; a booking must send them.
	require.NoError(t, parsePlain([]any{int64(0), int64(5), int64(1), int64(9), int64(0), int64(0), int64(905)}, 7, span, e, inc, &r))
	require.Equal(t, reply{waitUS: 5, by: 1, grantUS: 9, per: [maxQuotaLimits]perLimit{{rem: 0, resetUS: 905}}}, r)
	require.ErrorIs(t, parsePlain(booking[:7], 7, span, e, inc, &r), ErrBadReply, "a booking without its booking values")
	require.False(t, r.granted)
	for _, v := range [][]any{booking[:6], append(booking[:7:7], int64(0)), booking[:12]} {
		require.ErrorIs(t, parsePlain(v, 0, span, e, inc, &r), ErrBadReply, "%d values", len(v))
	}
	// An Allow's grant or denial by the limit: one integer, tat less now.
	require.NoError(t, parsePlain(int64(300), 0, span, e, inc, &r))
	require.Equal(t, reply{granted: true, per: [maxQuotaLimits]perLimit{{rem: 7, resetUS: 300}}}, r)
	// Denied, 50 µs until one unit fits: the tat is 50 + 1000 - 100 ahead.
	require.NoError(t, parsePlain(int64(-50), 0, span, e, inc, &r))
	require.Equal(t, reply{waitUS: 50, by: 1, per: [maxQuotaLimits]perLimit{{rem: 0, resetUS: 950}}}, r)
	// Cost 3: 50 µs until three fit, the tat 750 ahead, two left.
	require.NoError(t, parsePlain(int64(-50), 0, span, e, 3*e, &r))
	require.Equal(t, reply{waitUS: 50, by: 1, per: [maxQuotaLimits]perLimit{{rem: 2, resetUS: 750}}}, r)
	for _, c := range []struct{ v, maxWait int64 }{{1001, 0}, {5, 7}, {-5, 7}} {
		require.ErrorIs(t, parsePlain(c.v, c.maxWait, span, e, inc, &r), ErrBadReply, "%d, max wait %d", c.v, c.maxWait)
	}
}
