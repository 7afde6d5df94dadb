package reach

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// ErrOpen marks a call the circuit breaker kept from Redis: Redis was just
// found down, and the breaker's cool-down has not passed. Down counts it.
var ErrOpen = errors.New("redis circuit breaker is open")

// PathOptions configure a Path. The zero value bounds calls by nothing and
// has no breaker.
type PathOptions struct {
	// Name names the breaker (gobreaker's Settings.Name).
	Name string
	// Timeout bounds each call (Watch.Call); 0 or negative: none.
	Timeout time.Duration
	// Inline runs every call inline (Watch.CallInline): the timeout then ends
	// the waits for a connection, not a read under way.
	Inline bool
	// Trip is how many calls in a row must find Redis down (Down) before the
	// breaker opens; 0 or negative: no breaker.
	Trip int
	// CoolDown is how long the open breaker answers ErrOpen before one call
	// probes Redis again. Default 1s.
	CoolDown time.Duration
}

// A Path is the one way a limiter or a cache calls Redis: each call is
// bounded (Options.Timeout, and a refused dial through the client's Watch),
// its failure is classified by Down, and a gobreaker circuit breaker counts
// the failures in a row and, once open, answers ErrOpen at once without
// calling Redis until its cool-down passes. A caller whose own context ended
// tells nothing about Redis: such a call counts neither way.
//
// Scripts go through Eval or Run, which fall back from EVALSHA to EVAL on
// NOSCRIPT. A Path is safe for concurrent use.
type Path struct {
	watch   *Watch
	timeout time.Duration
	inline  bool
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}] // nil: none
	closed  atomic.Bool                                // mirrors the breaker's state == closed, read without its mutex
	failing atomic.Bool                                // the last call in the closed state failed
	last    atomic.Pointer[error]                      // the last error that found Redis down
}

// errExcluded is what the breaker is told of a call its caller gave up on.
var errExcluded = errors.New("caller gave up")

// NewPath returns the Path of calls to client (its Watch: For(client)).
func NewPath(client any, o PathOptions) *Path {
	p := &Path{watch: For(client), timeout: max(o.Timeout, 0), inline: o.Inline}
	p.closed.Store(true)
	if o.Trip > 0 {
		if o.CoolDown <= 0 {
			o.CoolDown = time.Second
		}
		trip := uint32(o.Trip)
		p.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        o.Name,
			MaxRequests: 1,
			Timeout:     o.CoolDown,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= trip },
			IsExcluded:  func(err error) bool { return err == errExcluded },
			OnStateChange: func(_ string, _, to gobreaker.State) {
				p.closed.Store(to == gobreaker.StateClosed)
			},
		})
	}
	return p
}

// Watch is the Path's client's Watch (nil for a client For does not know).
func (p *Path) Watch() *Watch { return p.watch }

// Do makes one call, fn, to Redis under ctx through the breaker and the
// bound (see Watch.Call for what fn must do with its context). With the
// breaker open it returns an error wrapping ErrOpen (and the failure that
// opened it) without calling fn. Down(err) reports whether the returned
// error found Redis down or the breaker open; a caller's own end is not.
func (p *Path) Do(ctx context.Context, fn func(context.Context) error) error {
	return p.do(ctx, p.timeout, fn)
}

// DoWithin is Do with the call bounded by timeout instead of the Path's.
func (p *Path) DoWithin(ctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	return p.do(ctx, timeout, fn)
}

func (p *Path) do(ctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	if p.breaker == nil {
		return p.call(ctx, timeout, fn)
	}
	if p.closed.Load() {
		// Fast path: the breaker (its mutex, its allocation) is touched only
		// when a call fails, or succeeds after failures; a hot key's callers
		// contend on nothing but the connection pool.
		err := p.call(ctx, timeout, fn)
		switch {
		case err != nil && Unreachable(ctx, err):
			p.keep(err)
			if isShared(err) {
				break
			}
			p.failing.Store(true)
			if done, berr := p.breaker.Allow(); berr == nil {
				done(err)
			}
		case err != nil && CallerDone(ctx) != nil:
		case p.failing.Load() && p.failing.CompareAndSwap(true, false):
			if done, berr := p.breaker.Allow(); berr == nil {
				done(nil)
			}
		}
		return err
	}
	done, berr := p.breaker.Allow()
	if berr != nil {
		return p.openErr()
	}
	err := p.call(ctx, timeout, fn)
	switch {
	case err != nil && Unreachable(ctx, err):
		p.keep(err)
		if isShared(err) {
			done(errExcluded)
		} else {
			done(err)
		}
	case err != nil && CallerDone(ctx) != nil:
		done(errExcluded)
	default:
		done(nil)
	}
	return err
}

func (p *Path) call(ctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	switch {
	case p.inline && timeout == p.timeout:
		return p.watch.CallInline(ctx, timeout, fn)
	case timeout > 0 || p.watch.Waits():
		return p.watch.Call(ctx, timeout, fn)
	}
	return fn(ctx)
}

func (p *Path) keep(err error) { p.last.Store(&err) }

// Shared marks err as the failure of a call that shared its round trip with
// others (an autopipelined batch): its caller answers under the failure
// policy as for any failure, but the breaker does not count it, since a
// broken connection fails a whole batch at once and says no more about Redis
// than one failed call. The calls sent alone keep the count.
func Shared(err error) error { return sharedErr{err} }

type sharedErr struct{ error }

func (e sharedErr) Unwrap() error { return e.error }

func isShared(err error) bool {
	var s sharedErr
	return errors.As(err, &s)
}

// openErr is the error of a call the open breaker kept from Redis.
func (p *Path) openErr() error {
	if last := p.Last(); last != nil {
		return fmt.Errorf("%w after: %w", ErrOpen, last)
	}
	return ErrOpen
}

// Last is the last error that found Redis down; nil before the first.
func (p *Path) Last() error {
	if e := p.last.Load(); e != nil {
		return *e
	}
	return nil
}

// Breaker states, as State reports them (and the telemetry gauges show them).
const (
	Closed   = 0
	HalfOpen = 1
	Open     = 2
)

// State is the breaker's state: Closed, HalfOpen or Open (Closed without a
// breaker). It is the telemetry hook of the breaker gauges, which export no
// gobreaker type.
func (p *Path) State() int64 {
	if p.breaker == nil {
		return Closed
	}
	switch p.breaker.State() {
	case gobreaker.StateHalfOpen:
		return HalfOpen
	case gobreaker.StateOpen:
		return Open
	}
	return Closed
}
