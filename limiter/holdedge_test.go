package limiter

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
)

// The hold-edge scenario of issue 17: a request queued for the next fixed
// window's start T while another process holds the quota until T + 1.2 to
// 1.8 ms must not reach the server before the hold ends. The server here is
// Redis itself: the TIME of the first command sent after Wait returns is when
// a request sent then arrives, on the clock the hold was set on. Before
// holds were checked at wake-up, every try sent at T, inside the hold.
func TestWaitHoldEdge(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		// Timeout: on a loaded machine a call may take longer than the
		// default 250 ms; this test is about holds, not timeouts.
		a := newLim(b, Options{Timeout: 10 * time.Second})
		other := newLim(b, Options{Timeout: 10 * time.Second}) // the process that saw the 429
		const tries = 200
		early, moved := 0, 0
		for try := 0; try < tries; {
			q := Quota{Name: "edge", Limits: []NamedLimit{{"w", Limit{Rate: 1, Period: 20 * time.Millisecond, Burst: 1, Algorithm: FixedWindow}}}}.For(strconv.Itoa(try))
			if _, err := a.Allow(ctx, Charge{Quota: q, Cost: Cost{"w": 1}}); err != nil { // fill the current window
				t.Fatal(err)
			}
			r, err := a.Reserve(ctx, Charge{Quota: q, Cost: Cost{"w": 1}})
			if err != nil {
				t.Fatal(err)
			}
			booked := r.at()
			now, err := b.Client.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			if booked.Sub(now) < 5*time.Millisecond {
				// Too close to the window's start to place the hold before it on
				// a busy machine: not this scenario; try again.
				if _, err := r.Cancel(ctx); err != nil {
					t.Fatal(err)
				}
				continue
			}
			over := 1200*time.Microsecond + time.Duration(try%7)*100*time.Microsecond // 1.2 to 1.8 ms past T
			if _, err := other.Hold(ctx, q, booked.Add(over).Sub(now), ""); err != nil {
				t.Fatal(err)
			}
			v, err := b.Client.Get(ctx, a.holdKey(q)).Int64()
			if errors.Is(err, redis.Nil) {
				// The hold is over already (a busy machine took its few ms
				// between Hold and this read): not this scenario; try again.
				if _, err := r.Cancel(ctx); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			holdEnd := time.UnixMicro(v)
			if !holdEnd.After(booked) {
				t.Fatalf("try %d: hold ends %v, not after the booking %v", try, holdEnd, booked)
			}
			if err := r.Wait(ctx); err != nil {
				t.Fatalf("try %d: %v", try, err)
			}
			sent, err := b.Client.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			if sent.Before(holdEnd) {
				early++
				t.Errorf("try %d: sent %v before the hold's end", try, holdEnd.Sub(sent))
			}
			if !r.at().Before(holdEnd) {
				moved++
			}
			try++
		}
		// A Wait that wakes after the hold has ended (a busy machine) finds it
		// over and keeps its booking; at least a tenth (100 to 177 seen on a
		// loaded 2-core machine under -race) must have found it in place, or
		// the test did not exercise the scenario.
		if early != 0 || moved < tries/10 {
			t.Fatalf("%d of %d sent inside the hold; %d booked again after it (want ≥ %d)", early, tries, moved, tries/10)
		}
		t.Logf("%d tries: 0 sent inside the hold, %d booked again after it", tries, moved)
	})
}

// A fixed-window booking whose Wait wakes within its quota's Guard of the end
// of its window (a late timer, a descheduled process) is booked again in the
// next window, by the script on Redis's clock: sent then, it would be counted
// in the next window on top of that window's full share. Both a booking for
// a later time and one due at once are covered.
func TestWaitWakesIntoGuard(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := newLim(b, Options{Timeout: 10 * time.Second}) // about holds and guards, not timeouts
		const period, guard = 400 * time.Millisecond, 100 * time.Millisecond
		for _, dueAtOnce := range []bool{false, true} {
			q := Quota{Name: "guard", Guard: guard, Limits: []NamedLimit{{"w", Limit{Rate: 2, Period: period, Burst: 2, Algorithm: FixedWindow}}}}.For(strconv.FormatBool(dueAtOnce))
			if !dueAtOnce {
				if _, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"w": 2}}); err != nil { // fill the current window
					t.Fatal(err)
				}
			}
			r, err := lim.Reserve(ctx, Charge{Quota: q, Cost: Cost{"w": 1}})
			if err != nil {
				t.Fatal(err)
			}
			booked := r.at()
			end := booked.Truncate(period).Add(period)
			if end.Sub(booked) <= guard {
				t.Fatalf("booked %v, within the guard of its window's end %v", booked, end)
			}
			// Wake within the guard: sleep (local clock) until Redis's clock is
			// 50 ms past the guard's start.
			now, err := b.Client.Time(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(end.Add(-guard / 2).Sub(now))
			if err := r.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if got := r.at(); got.Before(end) {
				t.Fatalf("due at once %v: woken in the guard of %v, still booked at %v", dueAtOnce, end, got)
			}
		}
	})
}

// A reservation across two groups is booked at one time (the later group's),
// and a hold placed on one group while it waits moves both past the hold,
// each charged once.
func TestWaitAcrossGroups(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := newLim(b, Options{Timeout: 10 * time.Second}) // about holds and guards, not timeouts
		const period = 300 * time.Millisecond
		qa := Quota{Name: "a", Group: "ga", Limits: []NamedLimit{{"l", PerSecond(1000)}}}
		qb := Quota{Name: "b", Group: "gb", Limits: []NamedLimit{{"w", Limit{Rate: 1, Period: period, Burst: 1, Algorithm: FixedWindow}}}}
		// Start early in one of qb's windows (Redis's clock): the Allow
		// below fills it and the Reserve must meet it full, so both must
		// fall in it; near its end the Reserve once landed in the next,
		// empty window and booked at once.
		now, err := b.Client.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if left := period - time.Duration(now.UnixMicro()%period.Microseconds())*time.Microsecond; left < 200*time.Millisecond {
			time.Sleep(left + time.Millisecond)
		}
		if _, err := lim.Allow(ctx, Charge{Quota: qb, Cost: Cost{"w": 1}}); err != nil { // qb's window is full
			t.Fatal(err)
		}
		r, err := lim.Reserve(ctx, Charge{Quota: qa, Cost: Cost{"l": 1}}, Charge{Quota: qb, Cost: Cost{"w": 1}})
		if err != nil {
			t.Fatal(err)
		}
		T := r.at()
		if T.UnixMicro()%period.Microseconds() != 0 || len(r.parts) != 2 || !r.parts[0].at().Equal(r.parts[1].at()) {
			t.Fatalf("booked at %v and %v, want both at qb's next window start", r.parts[0].at(), r.parts[1].at())
		}
		now, err = b.Client.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		// The hold lasts past T by ten windows (3 s): Wait's wake-up, due
		// about T, must come while it is in force to be moved past it, and a
		// wake-up after the hold's end rightly finds none. Past T by 20 ms, a
		// wake-up 80 ms late under CI's load kept T; by 450 ms, one 835 ms
		// late (load average 23 on 2 cores) was booked again at once, past
		// qb's window.
		if _, err := lim.Hold(ctx, qa, T.Add(10*period).Sub(now), ""); err != nil {
			t.Fatal(err)
		}
		holdEnd, err := b.Client.Get(ctx, lim.holdKey(qa)).Int64()
		if err != nil {
			t.Skip("the hold ended before Wait could start (a very busy machine)")
		}
		if err := r.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		sent, err := b.Client.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if sent.Before(time.UnixMicro(holdEnd)) || r.parts[0].at().Before(time.UnixMicro(holdEnd)) || !r.parts[0].at().Equal(r.parts[1].at()) {
			t.Fatalf("sent %v, booked %v and %v; the hold ends %v", sent, r.parts[0].at(), r.parts[1].at(), time.UnixMicro(holdEnd))
		}
		// qb was charged once in its window: nothing more fits there.
		if res, err := lim.Allow(ctx, Charge{Quota: qb, Cost: Cost{"w": 1}}); err != nil || res.Allowed && res.Limits[0].WindowEnd.Equal(r.Result().Limits[1].WindowEnd) {
			t.Fatalf("qb's window took a second unit: %+v %v", res, err)
		}
	})
}
