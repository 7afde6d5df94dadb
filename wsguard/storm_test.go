package wsguard_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/wsguard"
)

// connSim is an exchange's connection limit as the exchange sees it: at most
// limit attempts per fixed window of period, aligned to the Unix clock of
// this machine (Redis's clock too: every backend runs here), and a ban,
// during which any attempt is a violation.
type connSim struct {
	period time.Duration
	limit  int

	mu         sync.Mutex
	perWindow  map[int64]int
	attempts   int
	banFrom    time.Time
	banUntil   time.Time
	afterDrop  int
	violations []string
	open       []*fakeSocket
}

func (s *connSim) dial(context.Context) (wsguard.Socket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now() // under the lock: attempts are seen in order
	s.attempts++
	w := now.UnixNano() / int64(s.period)
	s.perWindow[w]++
	if n := s.perWindow[w]; n > s.limit {
		s.violations = append(s.violations, fmt.Sprintf("attempt %d in window %d: over %d (%v into it)", n, w, s.limit, time.Duration(now.UnixNano()%int64(s.period))))
	}
	if !s.banFrom.IsZero() {
		s.afterDrop++
		if now.Before(s.banUntil) {
			s.violations = append(s.violations, fmt.Sprintf("attempt %v into a ban of %v", now.Sub(s.banFrom), s.banUntil.Sub(s.banFrom)))
		}
	}
	sock := newFakeSocket()
	s.open = append(s.open, sock)
	return sock, nil
}

// dropAll closes every open connection with 1008 and bans attempts for ban.
func (s *connSim) dropAll(ban time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.banFrom = time.Now()
	s.banUntil = s.banFrom.Add(ban)
	for _, sock := range s.open {
		sock.closed <- &wsguard.CloseError{Code: 1008, Reason: "policy violation"}
	}
	s.open = nil
}

// A reconnect storm: 8 processes (each its own Redis client, Limiter and
// Guard) hold 25 connections each; the exchange closes all 200 with 1008 and
// bans connecting for 300 ms; every connection reconnects at once (Redial,
// with up to 100 ms of jitter). The connection quota is 80 attempts per
// 1 s fixed window (Binance's 300 per 5 minutes, scaled; longer on
// miniredis, see below); the simulator
// counts the attempts it sees per window and any attempt inside the ban.
//
// No attempt may come inside the ban: each connection's Read places the hold
// (the guard's FallbackHold, 300 ms from when it read the close, so ending
// after the simulator's ban) before its Redial runs, and every Redial waits
// out the holds on its quota (limiter.Reservation.Wait). No window may see
// more than 80: attempts are charged to the fixed-window quota before they are
// made, and its Guard of 250 ms (the Binance preset's) books an attempt that
// would be granted within 250 ms of its window's end into the next window, so
// that the time between a grant and the simulator reading its clock cannot
// carry it into the next window. That time is a timer wake-up and, for a turn
// booked ahead, Reservation.Wait's wake-up call: the turns queued into a window
// all wake at its start, and their calls queue at Redis. Under -race on two
// shared cores miniredis takes milliseconds a call, so 40 calls took a 250 ms
// window: the window is a second here, as long as the preset's smallest.
func TestReconnectStorm(t *testing.T) {
	const procs, perProc, ban = 8, 25, 300 * time.Millisecond
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		limit, period, guard := 80, time.Second, 250*time.Millisecond
		if b.Kind == redistest.Mini {
			// miniredis runs one script at a time and compiles its Lua on
			// each call: under -race on a loaded machine a call takes tens of
			// milliseconds, and 200 callers queue a turn's reply for seconds
			// (turns booked at a window's start were seen to return 1.3 s
			// later with nothing else running). A window here holds a whole
			// phase's 200 attempts, with a 4 s guard.
			limit, period, guard = 200, 10*time.Second, 4*time.Second
		}
		sim := &connSim{period: period, limit: limit, perWindow: map[int64]int{}}
		q := limiter.Quota{Name: "connections", Guard: guard, Limits: []limiter.NamedLimit{
			{Name: "attempts", Limit: limiter.Limit{Rate: limit, Period: period, Algorithm: limiter.FixedWindow}},
		}}
		opts := wsguard.Options{
			Connect:      []limiter.Charge{{Quota: q, Cost: limiter.Cost{"attempts": 1}}},
			Jitter:       100 * time.Millisecond,
			FallbackHold: ban,
			Refusals: func(s wsguard.Signal) []wsguard.Refusal {
				if s.Close != nil && s.Close.Code == 1008 {
					return []wsguard.Refusal{{}}
				}
				return nil
			},
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		var dialed, done sync.WaitGroup
		drop := make(chan struct{})
		errs := make(chan error, procs*perProc)
		for range procs {
			g, err := wsguard.New(newLimiter(t, b), opts)
			if err != nil {
				t.Fatal(err)
			}
			for range perProc {
				dialed.Add(1)
				done.Go(func() {
					c, err := g.Dial(ctx, sim.dial)
					dialed.Done()
					if err != nil {
						errs <- err
						return
					}
					<-drop
					if _, err := c.Read(ctx); !errors.As(err, new(*wsguard.CloseError)) {
						errs <- fmt.Errorf("read: %v, want the close", err)
						return
					}
					if err := c.Redial(ctx); err != nil {
						errs <- err
					}
				})
			}
		}
		dialed.Wait()
		sim.dropAll(ban)
		close(drop)
		done.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		sim.mu.Lock()
		defer sim.mu.Unlock()
		for _, v := range sim.violations {
			t.Error(v)
		}
		if sim.attempts != 2*procs*perProc || sim.afterDrop != procs*perProc {
			t.Errorf("attempts %d (%d after the drop), want %d (%d)", sim.attempts, sim.afterDrop, 2*procs*perProc, procs*perProc)
		}
		busiest := 0
		for _, n := range sim.perWindow {
			busiest = max(busiest, n)
		}
		t.Logf("%d attempts over %d windows, busiest window %d of %d", sim.attempts, len(sim.perWindow), busiest, limit)
	})
}
