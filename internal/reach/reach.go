// Package reach is the one place that tells whether Redis can be reached, for
// the limiter and the cache alike: the classifier of "Redis is down" errors
// (Down, Unreachable), of authentication failures (Auth), and per-call bounds
// (Watch.Call) that end a call as soon as a dial is refused instead of after
// go-redis's dial and command retries.
//
// Why the bound is needed: with default options go-redis dials up to five
// times 100 ms apart (DialerRetries, DialerRetryTimeout) and resends a failed
// command up to three times with a backoff, all while the caller waits, and
// the dial runs in a goroutine of the pool's that the caller's context does
// not reach. A refused connection is known in microseconds; a dial hook
// installed on the client hears of it and cancels the calls in flight, so
// they answer under their failure policy at once.
package reach

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"
)

// ErrAuth marks a Redis that refused this client's credentials (a wrong or
// missing password or ACL user) or its ACL user's permissions (NOPERM). It is
// a configuration error, not an outage.
var ErrAuth = errors.New("redis authentication failed")

// authPrefixes start the replies of a Redis that refused a client's
// credentials. The last is what Redis answers a client that sent no password
// and then a command of more than ten arguments (an EVALSHA).
var authPrefixes = []string{"WRONGPASS", "NOAUTH", "NOPERM", "ERR AUTH", "ERR Client sent AUTH", "ERR Protocol error: unauthenticated"}

// Auth returns err wrapped with ErrAuth when it is an authentication failure,
// and nil otherwise.
func Auth(err error) error {
	if err == nil || errors.Is(err, ErrAuth) {
		return nil
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return nil
	}
	msg := re.Error()
	for _, p := range authPrefixes {
		if strings.HasPrefix(msg, p) {
			if strings.HasPrefix(msg, "ERR Protocol error: unauthenticated") || strings.HasPrefix(msg, "NOAUTH") {
				return fmt.Errorf("%w (no password was sent): %w", ErrAuth, err)
			}
			if strings.HasPrefix(msg, "NOPERM") {
				// The credentials were accepted: "authentication failed"
				// alone sends the operator to the wrong setting.
				return fmt.Errorf("%w (the credentials were accepted: the ACL user lacks a permission): %w", ErrAuth, err)
			}
			return fmt.Errorf("%w: %w", ErrAuth, err)
		}
	}
	return nil
}

// ErrNotReplicated: no replica acknowledged a write within the time asked
// (WAIT answered 0). Down counts it: the write may be lost in a failover.
var ErrNotReplicated = errors.New("redis: no replica acknowledged the write")

// downPrefixes start the replies of a Redis that is up but cannot serve:
// the one list of them, for the limiter, the cache and the market cache.
//
//   - LOADING: a restarted node still loading its data set;
//   - MASTERDOWN: a replica that lost its master (replica-serve-stale-data no);
//   - CLUSTERDOWN: a cluster with an uncovered slot or no quorum;
//   - TRYAGAIN: a cluster slot in migration, for a command over several keys;
//   - READONLY: a write sent to a replica (a failover demoted the node);
//   - OOM: maxmemory reached under noeviction;
//   - ERR max number of clients: maxclients reached.
var downPrefixes = []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "OOM", "ERR max number of clients"}

// Down reports whether err means Redis could not be reached, did not answer
// in time, or cannot serve: connection errors, timeouts, a closed client or
// pool, a dial refused while the call waited, the open breaker (ErrOpen), no
// replica acknowledgement (ErrNotReplicated), and the replies of downPrefixes.
// Replies Redis sent about the command itself (WRONGTYPE, NOSCRIPT, a script
// error, NOPERM, redis.Nil) are not: they prove Redis is up. It is the one
// "Redis is down" classifier: the limiter (its failure policy and breaker),
// the cache (its breaker and error counts) and the market cache use it alone.
func Down(err error) bool {
	if err == nil || err == redis.Nil {
		return false
	}
	var de *dialError
	if errors.As(err, &de) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) ||
		errors.Is(err, redis.ErrAutoPipelineTimeout) ||
		errors.Is(err, ErrNotReplicated) || errors.Is(err, ErrOpen) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return true
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range downPrefixes {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
	}
	return false
}

// Unreachable reports whether err, returned by a call made under caller,
// means Redis is down (Down) rather than that the caller gave up: with
// go-redis's ContextTimeoutEnabled a caller's deadline can surface as an i/o
// timeout a moment before caller.Err() reports it.
func Unreachable(caller context.Context, err error) bool {
	if CallerDone(caller) != nil {
		return false
	}
	return Down(err)
}

// CallerDone returns ctx's error, or context.DeadlineExceeded once its
// deadline has passed even if ctx has not noticed yet; nil while it runs.
func CallerDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// dialError is a refused (or otherwise failed) dial that ended a call waiting
// on it. It unwraps to the dial's own error.
type dialError struct{ err error }

func (e *dialError) Error() string { return "redis: dial failed: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// A Watch hears of the failed dials of one client and ends the calls that
// were waiting on them. Make one with For; the zero value and a nil *Watch
// bound calls by their timeout alone.
type Watch struct {
	// detach: the client ignores context deadlines while it reads a reply
	// (go-redis's ContextTimeoutEnabled is false, its default), so a call
	// with a timeout must be left to finish alone for its bound to hold.
	detach bool
	// waits: the client may wait on a dial (it retries dials or commands),
	// so calls are linked to the watch; a client that does neither fails a
	// refused dial at once on its own.
	waits bool
	dials atomic.Uint64 // connections made: a restart or failover always makes new ones
	// free holds idle slots for reuse; mu guards all, every slot that is not
	// dropped, which a refused dial walks to end the busy ones.
	free chan *slot
	mu   sync.Mutex
	all  map[*slot]struct{}
}

// hooker is a client that takes go-redis hooks.
type hooker interface{ AddHook(redis.Hook) }

// nodeHooker is a client that makes a *redis.Client per node (cluster, ring).
type nodeHooker interface{ OnNewNode(func(*redis.Client)) }

// watches holds the Watch of each client, by a weak pointer so that a client
// that is dropped is not kept alive; its entry goes with it.
var watches sync.Map

// For returns the Watch of client, installing its dial hook the first time:
// on a *redis.Client, and on every node a *redis.ClusterClient or *redis.Ring
// makes from then on. For other clients it returns nil, whose calls are
// bounded by their timeout alone.
func For(client any) *Watch {
	if IsNil(client) {
		return nil
	}
	switch c := client.(type) {
	case *redis.Client:
		o := c.Options()
		return forKey(weak.Make(c), c, !o.ContextTimeoutEnabled, o.DialerRetries > 1 || o.MaxRetries > 0, func(w *Watch) { c.AddHook(hook{w}) })
	case *redis.ClusterClient:
		// Its node clients are made on first use, after this.
		o := c.Options()
		return forKey(weak.Make(c), c, !o.ContextTimeoutEnabled, o.DialerRetries > 1 || o.MaxRetries > 0, func(w *Watch) {
			c.OnNewNode(func(n *redis.Client) { n.AddHook(hook{w}) })
		})
	case *redis.Ring:
		// Its shards' clients are made with it; later ones on a resharding.
		o := c.Options()
		return forKey(weak.Make(c), c, !o.ContextTimeoutEnabled, o.DialerRetries > 1 || o.MaxRetries > 0, func(w *Watch) {
			_ = c.ForEachShard(context.Background(), func(_ context.Context, n *redis.Client) error { n.AddHook(hook{w}); return nil })
			c.OnNewNode(func(n *redis.Client) { n.AddHook(hook{w}) })
		})
	}
	return nil
}

var installMu sync.Mutex

func forKey[T any](key weak.Pointer[T], client *T, detach, waits bool, install func(*Watch)) *Watch {
	if w, ok := watches.Load(key); ok {
		return w.(*Watch)
	}
	installMu.Lock()
	defer installMu.Unlock()
	if w, ok := watches.Load(key); ok {
		return w.(*Watch)
	}
	w := &Watch{detach: detach, waits: waits, free: make(chan *slot, maxIdleSlots)}
	install(w)
	watches.Store(key, w)
	runtime.AddCleanup(client, func(k weak.Pointer[T]) { watches.Delete(k) }, key)
	return w
}

// Dials returns how many connections the client has made so far (0 for a
// nil Watch). Redis restarting, or a failover, always makes the client dial.
func (w *Watch) Dials() uint64 {
	if w == nil {
		return 0
	}
	return w.dials.Load()
}

// failed ends every call in flight with cause. Calls that start after it
// are not ended by it.
func (w *Watch) failed(cause error) {
	de := &dialError{cause}
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := range w.all {
		s.mu.Lock()
		if s.busy {
			s.cancelLocked(context.Canceled, de)
		}
		s.mu.Unlock()
	}
}

// Call runs fn, one call to Redis made under ctx, bounded by timeout (when
// positive and shorter than ctx's own deadline) and, on a watched client, by
// the first dial that fails while it runs. fn must make its call with the
// context it is given, and keep that context no longer than the call. When
// the bound ends the call, Call's error says why in a way Down recognises:
// the failed dial, or a timeout naming its length.
//
// On a client that ignores context deadlines while it reads (go-redis's
// default, ContextTimeoutEnabled false), a call with a timeout runs fn in a
// goroutine of its own and Call returns when the bound ends, leaving fn to
// finish alone, within the client's ReadTimeout; fn must then write nothing
// its caller reads after an error. Otherwise fn runs inline.
//
// A call on a healthy Redis reuses the Watch's state (its context and timer):
// with a caller's context that cannot be cancelled (context.Background) it
// allocates nothing inline, and one goroutine start when detached.
func (w *Watch) Call(ctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	return w.call(ctx, timeout, fn, false)
}

// CallInline is Call with fn always run inline, never in a goroutine: on a
// client that ignores context deadlines while it reads, timeout then ends the
// waits for a connection (a dial, the pool, a retry's backoff) but not a read
// under way, which the client's ReadTimeout bounds.
func (w *Watch) CallInline(ctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	return w.call(ctx, timeout, fn, true)
}

func (w *Watch) call(ctx context.Context, timeout time.Duration, fn func(context.Context) error, inline bool) error {
	if w == nil {
		return callTimeout(ctx, timeout, fn)
	}
	s := w.get()
	use, done := s.start(ctx, timeout)
	if inline || !w.detach || !s.timed {
		var stop func() bool
		if ctx.Done() != nil {
			stop = context.AfterFunc(ctx, func() { s.cancel(use, ctx.Err(), context.Cause(ctx)) })
		}
		err := fn(s)
		if stop != nil {
			stop()
		}
		err = s.end(err)
		w.put(s)
		return err
	}
	s.fn = fn
	s.state.Store(running)
	go s.run()
	select {
	case err := <-s.result:
		err = s.end(err)
		w.put(s)
		return err
	case <-ctx.Done():
		// The caller's own context ended: go-redis, told to ignore it, still
		// reads the reply, and a caller that chose that (a Wait whose turn
		// came) wants it. End what waits on the context (a dial, a backoff)
		// and wait for the reply as an inline call would.
		s.cancel(use, ctx.Err(), context.Cause(ctx))
		err := s.end(<-s.result)
		w.put(s)
		return err
	case <-done:
		// Closed by the timer or a failed dial, either of which left its cause.
		s.mu.Lock()
		cause := s.cause
		s.mu.Unlock()
		if s.state.CompareAndSwap(running, abandoned) {
			// Left to finish alone: run puts the slot back, and another call
			// may take it at once.
			return cause
		}
		err := s.end(<-s.result) // fn finished as the bound ended
		w.put(s)
		return err
	}
}

// callTimeout is Call without a Watch: a timeout alone, inline.
func callTimeout(ctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	if timeout <= 0 {
		return fn(ctx)
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= timeout {
		return fn(ctx)
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := fn(tctx)
	if err != nil && (Down(err) || errors.Is(err, context.Canceled)) && tctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		err = &timeoutError{timeout}
	}
	return err
}

// maxIdleSlots bounds the slots a Watch keeps for reuse: more calls at once
// than this allocate their slot, and drop it after.
const maxIdleSlots = 256

// Detached call states (slot.state).
const (
	running   int32 = iota // fn runs
	finished               // fn returned while the caller waits: its error is in result
	abandoned              // the caller returned on its bound: run puts the slot back
)

// slot is the reusable state of one bounded call: the context fn runs
// under (a slot is a context.Context) and the timer of its timeout.
type slot struct {
	w      *Watch
	timer  *time.Timer // fires expire; left armed between calls (see armed)
	result chan error  // a detached call's error
	fn     func(context.Context) error
	state  atomic.Int32

	// Set by start, read only while the call runs.
	parent   context.Context // values, and the deadline when it is sooner
	deadline time.Time
	hasDL    bool
	timed    bool // the timeout set the deadline
	timeout  time.Duration

	mu    sync.Mutex
	use   uint64 // calls made with this slot: a late timer or dial for an earlier one is ignored
	busy  bool
	done  chan struct{}
	err   error
	cause error

	// armed is when the timer fires, zero once expire has run (guarded by
	// mu). A call leaves the timer armed: the next call, whose deadline is
	// later, keeps it, and expire, finding the deadline not reached, arms it
	// again for what is left. Calls a timeout apart or closer then touch the
	// timer once per timeout instead of twice per call.
	armed time.Time
}

func (w *Watch) get() *slot {
	select {
	case s := <-w.free:
		return s
	default:
	}
	s := &slot{w: w, result: make(chan error, 1), done: make(chan struct{})}
	s.timer = time.AfterFunc(time.Hour, s.expire)
	s.timer.Stop()
	w.mu.Lock()
	if w.all == nil {
		w.all = make(map[*slot]struct{})
	}
	w.all[s] = struct{}{}
	w.mu.Unlock()
	return s
}

// put makes s idle again, for the next call (or drops it). A slot whose
// call was ended (its Done closed) is dropped, never reused: a context the
// function derived from it is watched by a goroutine of the standard
// library's that may read its Err, Done and Value after the call, and must
// find them as they were (reused, a nil Err after a closed Done panics in
// package context).
func (w *Watch) put(s *slot) {
	s.mu.Lock()
	s.busy = false
	ended := s.err != nil
	s.fn = nil
	if !ended {
		s.parent = nil
	}
	s.mu.Unlock()
	if !ended {
		select {
		case w.free <- s:
			return
		default:
		}
	}
	s.timer.Stop()
	w.mu.Lock()
	delete(w.all, s)
	w.mu.Unlock()
}

// start readies s for a call under parent bounded by timeout, and returns
// the call's number and the channel its bound closes.
func (s *slot) start(parent context.Context, timeout time.Duration) (uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.use++
	s.busy = true
	if s.err != nil { // the last call was ended: a fresh channel
		s.done, s.err, s.cause = make(chan struct{}), nil, nil
	}
	s.parent = parent
	s.deadline, s.hasDL = parent.Deadline()
	s.timed, s.timeout = false, timeout
	if timeout > 0 && (!s.hasDL || time.Until(s.deadline) > timeout) {
		s.deadline, s.hasDL, s.timed = time.Now().Add(timeout), true, true
		if s.armed.IsZero() || s.armed.After(s.deadline) {
			s.timer.Reset(timeout)
			s.armed = s.deadline
		}
	}
	return s.use, s.done
}

// run is a detached call's goroutine.
func (s *slot) run() {
	err := s.fn(s)
	if s.state.CompareAndSwap(running, finished) {
		s.result <- err
		return
	}
	s.w.put(s) // its caller has gone
}

// expire ends the current call on its timeout. A timer armed for an
// earlier call of the slot (see armed) finds the deadline of this one still
// ahead, and arms itself again for it; an idle slot's is left to rest.
func (s *slot) expire() {
	s.mu.Lock()
	s.armed = time.Time{}
	if s.busy && s.timed {
		if left := time.Until(s.deadline); left > 0 {
			s.timer.Reset(left)
			s.armed = s.deadline
		} else {
			s.cancelLocked(context.DeadlineExceeded, &timeoutError{s.timeout})
		}
	}
	s.mu.Unlock()
}

// cancel ends call use of s, if it still runs.
func (s *slot) cancel(use uint64, err, cause error) {
	s.mu.Lock()
	if s.use == use && s.busy {
		s.cancelLocked(err, cause)
	}
	s.mu.Unlock()
}

func (s *slot) cancelLocked(err, cause error) {
	if s.err == nil {
		s.err, s.cause = err, cause
		close(s.done)
	}
}

// end turns the ending of its bound into an error Down recognises: the
// failed dial, or a timeout naming its length.
func (s *slot) end(err error) error {
	if err == nil || !(Down(err) || errors.Is(err, context.Canceled)) {
		return err
	}
	s.mu.Lock()
	cause := s.cause
	s.mu.Unlock()
	switch c := cause.(type) {
	case *dialError, *timeoutError:
		return c
	}
	if s.timed && !time.Now().Before(s.deadline) && s.parent.Err() == nil {
		// go-redis's read deadline (ContextTimeoutEnabled) passed a moment
		// before the timer.
		return &timeoutError{s.timeout}
	}
	return err
}

// Deadline is the caller's, or the timeout's when sooner.
func (s *slot) Deadline() (time.Time, bool) { return s.deadline, s.hasDL }

// Done is closed when the call's bound ends it.
func (s *slot) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// Err says why Done was closed: context.DeadlineExceeded (the timeout),
// context.Canceled (a failed dial), or the caller's context's error.
func (s *slot) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Value is the caller's context's (nil once the call is over and the slot
// idle).
func (s *slot) Value(key any) any {
	s.mu.Lock()
	p := s.parent
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Value(key)
}

// timeoutError is the cause of a call ended by its Start timeout.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string { return fmt.Sprintf("redis: no reply within %v", e.d) }
func (e *timeoutError) Unwrap() error { return context.DeadlineExceeded }

// refused reports whether a dial's error says for certain that nothing
// serves at the address: refused, or no route to it. A dial that timed out
// (a loaded machine, a slow network) or that go-redis abandoned says nothing
// the calls' own timeouts do not, and ending every call in flight on it would
// turn a slow moment into an outage.
func refused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ENOENT) // ENOENT: a unix socket gone
}

// hook reports a client's refused dials to its Watch.
type hook struct{ w *Watch }

func (h hook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil && refused(err) {
			h.w.failed(err)
		}
		if err == nil {
			h.w.dials.Add(1)
		}
		return conn, err
	}
}

func (h hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// ErrNilClient marks every call of a limiter or cache built with a nil client.
var ErrNilClient = errors.New("redquota: nil Redis client")

// IsNil reports whether client is nil, or an interface holding a nil pointer
// (a nil *redis.Client passed as a Client).
func IsNil(client any) bool {
	if client == nil {
		return true
	}
	v := reflect.ValueOf(client)
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
		return v.IsNil()
	}
	return false
}

// Waits reports whether calls on the watched client can wait on a dial, and
// so need Call to bound them even without a timeout.
func (w *Watch) Waits() bool { return w != nil && (w.waits || w.detach) }
