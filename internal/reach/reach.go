// Package reach is the one place that tells whether Redis can be reached, for
// the limiter and the cache alike: the classifier of "Redis is down" errors
// (Down, Unreachable), of authentication failures (Auth), and per-call bounds
// (Watch.Start) that end a call as soon as a dial is refused instead of after
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

// ErrAuth marks a Redis that refused this client's credentials: a wrong or
// missing password or ACL user. It is a configuration error, not an outage.
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
			return fmt.Errorf("%w: %w", ErrAuth, err)
		}
	}
	return nil
}

// ErrNotReplicated: no replica acknowledged a write within the time asked
// (WAIT answered 0). Down counts it: the write may be lost in a failover.
var ErrNotReplicated = errors.New("redis: no replica acknowledged the write")

// downPrefixes start the replies of a Redis that is up but cannot serve.
var downPrefixes = []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "OOM", "ERR max number of clients"}

// Down reports whether err means Redis could not be reached, did not answer
// in time, or cannot serve: connection errors, timeouts, a closed client or
// pool, a dial refused while the call waited, and the replies of a node that
// is loading, read-only, out of memory or without a master. Replies Redis sent
// about the command itself (WRONGTYPE, a script error, redis.Nil) are not.
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
		errors.Is(err, ErrNotReplicated) {
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
	// must be left to finish alone for its bound to hold.
	detach bool
	// waits: the client may wait on a dial (it retries dials or commands),
	// so calls are linked to the watch; a client that does neither fails a
	// refused dial at once on its own.
	waits bool
	dials atomic.Uint64 // connections made: a restart or failover always makes new ones
	// gen is the current generation, ended (with the dial's error as cause)
	// when a dial is refused; mu serialises the swap.
	gen  atomic.Pointer[context.Context]
	mu   sync.Mutex
	fire context.CancelCauseFunc
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
	w := &Watch{detach: detach, waits: waits}
	w.newGen()
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

// failed ends every call in flight with cause and starts a new generation.
func (w *Watch) failed(cause error) {
	w.mu.Lock()
	fire := w.fire
	w.newGen()
	w.mu.Unlock()
	fire(&dialError{cause})
}

// newGen starts a new generation; w.mu is held, or w is not shared yet.
func (w *Watch) newGen() {
	gen, fire := context.WithCancelCause(context.Background())
	w.gen.Store(&gen)
	w.fire = fire
}

func (w *Watch) current() context.Context { return *w.gen.Load() }

// Call runs fn, one call to Redis made under ctx, bounded by timeout (when
// positive and shorter than ctx's own deadline) and, on a watched client, by
// the first dial that fails while it runs. fn must make its call with the
// context it is given. When the bound ends the call, Call's error says why in
// a way Down recognises: the failed dial, or a timeout naming its length.
//
// On a client that ignores context deadlines while it reads (go-redis's
// default, ContextTimeoutEnabled false), fn runs in a goroutine of its own and
// Call returns when the bound ends, leaving fn to finish alone, within the
// client's ReadTimeout; fn must then write nothing its caller reads after an
// error. Clients built with ContextTimeoutEnabled run fn inline.
func (w *Watch) Call(ctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	var b bound
	cctx := b.start(w, ctx, timeout)
	if w == nil || !w.detach || cctx.Done() == nil {
		return b.end(fn(cctx))
	}
	done := make(chan error, 1)
	go func() { done <- fn(cctx) }()
	select {
	case err := <-done:
		return b.end(err)
	case <-cctx.Done():
		if _, ok := context.Cause(cctx).(*dialError); ok || b.timedOut() {
			return b.end(cctx.Err())
		}
		// The caller's own context ended: go-redis, told to ignore it, still
		// reads the reply, and a caller that chose that (a Wait whose turn
		// came) wants it. Wait for it as an inline call would.
		return b.end(<-done)
	}
}

// bound is what start set up for one call, undone by end.
type bound struct {
	ctx           context.Context
	timed         context.Context // the context the timeout was added to; nil without one
	timeout       time.Duration
	cancel        context.CancelCauseFunc
	stopWatch     func() bool
	cancelTimeout context.CancelFunc
}

// start bounds one call made under ctx as Call says and returns the context
// to make it with.
func (b *bound) start(w *Watch, ctx context.Context, timeout time.Duration) context.Context {
	if w != nil && w.waits {
		ctx, b.cancel = context.WithCancelCause(ctx)
		gen := w.current()
		cancel := b.cancel
		b.stopWatch = context.AfterFunc(gen, func() { cancel(context.Cause(gen)) })
	}
	if timeout > 0 {
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > timeout {
			b.timed, b.timeout = ctx, timeout
			ctx, b.cancelTimeout = context.WithTimeout(ctx, timeout)
		}
	}
	b.ctx = ctx
	return ctx
}

// end releases the bound and turns its ending into an error Down
// recognises: the failed dial, or a timeout naming its length.
func (b *bound) end(err error) error {
	if err != nil && (Down(err) || errors.Is(err, context.Canceled)) {
		// go-redis reports the bound's ending as the context's error (or an
		// i/o timeout): say what ended it.
		if de, ok := context.Cause(b.ctx).(*dialError); ok {
			err = de
		} else if b.timedOut() {
			err = &timeoutError{b.timeout}
		}
	}
	if b.cancelTimeout != nil {
		b.cancelTimeout()
	}
	if b.stopWatch != nil {
		b.stopWatch()
		b.cancel(nil)
	}
	return err
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

// timedOut reports whether the call's own timeout, not its caller's context
// or a failed dial, ended it.
func (b *bound) timedOut() bool {
	return b.timed != nil && b.ctx.Err() == context.DeadlineExceeded && b.timed.Err() == nil
}
