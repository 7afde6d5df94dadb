package wsguard

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/redquota/redquota/internal/bound"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/telemetry"
)

// Socket is what the guard needs of a WebSocket connection, whatever the
// library. Read returns the next message's payload; when the peer closed the
// connection with a close frame its error wraps a *CloseError. Write sends
// one message. A Socket is used by one reader and one writer at a time, and
// Close may come while either is under way (Close writes a close frame, as
// gorilla/websocket's WriteControl and coder/websocket's Close may
// concurrently with a write): an adapter must allow that.
type Socket interface {
	Read(ctx context.Context) ([]byte, error)
	Write(ctx context.Context, msg []byte) error
	Close(code int, reason string) error
}

// CloseError is the close frame that ended a connection, as a Socket's Read
// reports it (errors.As).
type CloseError struct {
	// Code is the close status code (RFC 6455 §7.4), e.g. 1008 for a policy
	// violation.
	Code int
	// Reason is the close frame's reason text.
	Reason string
}

// Error describes the close.
func (e *CloseError) Error() string {
	return fmt.Sprintf("wsguard: connection closed: status %d: %s", e.Code, e.Reason)
}

// HandshakeError is a connection attempt the server answered with an HTTP
// status instead of switching protocols (a 429 for too many connection
// attempts), as a dial function reports it (errors.As; wscoder.Dial does).
type HandshakeError struct {
	// StatusCode is the answer's HTTP status.
	StatusCode int
	// Header is the answer's header (Retry-After).
	Header http.Header
}

// Error describes the refused handshake.
func (e *HandshakeError) Error() string {
	return fmt.Sprintf("wsguard: handshake answered with HTTP status %d", e.StatusCode)
}

// Signal is what Options.Refusals reads: a message received, the close
// that ended the connection, or a refused handshake.
type Signal struct {
	// Message is the payload of a message received; nil otherwise.
	Message []byte
	// Close is the close frame that ended the connection; nil otherwise.
	Close *CloseError
	// Handshake is a connection attempt the server refused; nil otherwise.
	// Whatever Refusals says of it, a 429 or 418 answer holds
	// Options.Connect's quotas as package middleware's Transport holds after
	// such an answer: for its Retry-After (in seconds, or an HTTP date
	// measured from the answer's Date); for FallbackHold when that is 0 (the
	// header counts whole seconds: 0 says under one, and a refusal says to
	// back off); without a readable one, a 429 for FallbackHold and a 418, an
	// IP ban, for 2 minutes (Binance's shortest ban). MaxHold caps it.
	Handshake *HandshakeError
}

// Refusal is a hold a signal calls for: the exchange has refused, or will
// refuse, what a quota charges for Hold.
//
// The quotas held are chosen among the quota instances of the request ID
// names (those Options.Charges returned for it: an account's instance, not
// every account's) and Options.Connect's: with ID and no Quota, every quota
// the request was charged; with Quota, those of them and of Options.Connect
// named Quota; with neither, Options.Connect's.
type Refusal struct {
	// Quota names the quota to hold (its Name; an instance of a template
	// keeps the template's name). Default "": see above.
	Quota string
	// ID is the id of the request the signal answers, as Options.Charges
	// returned it. Default "": no request.
	ID string
	// Hold is how long to hold. Default Options.FallbackHold.
	Hold time.Duration
}

// ErrInvalid is wrapped by every error of bad input, whose message says
// which: options the guard cannot use (a negative figure, a quota the
// limiter refuses), or a Subscribe that would take the connection past
// Options.MaxStreams (nothing was sent).
var ErrInvalid = errors.New("wsguard: invalid")

// errTooManyStreams is ErrInvalid for a Subscribe past Options.MaxStreams.
var errTooManyStreams = fmt.Errorf("%w: too many streams on one connection", ErrInvalid)

// Defaults of Options.
const (
	// defaultJitter bounds the random wait before a Redial's first attempt.
	defaultJitter = time.Second
	// defaultFallbackHold is the hold of a Refusal without Hold.
	defaultFallbackHold = time.Second
	// maxPending bounds the requests a connection remembers for refusals
	// naming them.
	maxPending = 4096
)

// Options configure a Guard. The zero value works (and limits nothing); each
// field documents its default.
type Options struct {
	// Name labels the guard's telemetry (redquota.guard). Default "wsguard".
	Name string
	// Connect are the quotas and costs of one connection attempt, charged
	// fleet-wide, all or nothing, before each attempt. Default none.
	Connect []limiter.Charge
	// MessageRate limits the messages each connection sends (Send,
	// Subscribe), per second, in this process. Default 0: no limit.
	MessageRate rate.Limit
	// MessageBurst is how many messages may go at once within MessageRate.
	// Default 1.
	MessageBurst int
	// MaxStreams is the most streams one connection may subscribe to.
	// Default 0: no limit.
	MaxStreams int
	// Charges, when set, prices a request message: the id its answer will
	// carry (for Refusal.ID; "" for none) and the quotas and costs it is
	// charged before it is sent (none: only the local limit applies). An error
	// fails Send, unsent.
	Charges func(msg []byte) (id string, cs []limiter.Charge, err error)
	// Refusals, when set, reads every message Read returns and the close that
	// ends the connection into the holds they call for.
	Refusals func(Signal) []Refusal
	// Jitter bounds the random wait before each attempt of Redial: the first
	// waits up to Jitter, each failed one doubles the bound, up to 32×Jitter.
	// Default 1 s; negative for none.
	Jitter time.Duration
	// FallbackHold is the hold of a Refusal without Hold, and of a handshake
	// refused 429 without a readable Retry-After or 418 with Retry-After 0
	// (see Signal.Handshake). Default 1 s.
	FallbackHold time.Duration
	// MaxHold caps every hold, so that an absurd retryAfter cannot stop the
	// fleet for long. Default and upper bound a week (the longest hold limiter.Hold accepts).
	MaxHold time.Duration
	// Telemetry are the providers of the guard's spans and metrics (see
	// TELEMETRY_NAMES.md). Default: the global providers.
	Telemetry telemetry.Providers
	// OnError, when set, receives the problems that fail no call: a hold
	// Redis refused, a signal naming a quota the connection was not charged
	// or a request it has no charges of.
	OnError func(error)
}

// Guard guards the connections of one endpoint for a fleet. It is safe for
// concurrent use.
type Guard struct {
	lim  *limiter.Limiter
	opts Options
	tel  *guardTel
}

// New returns a Guard charging lim. Options that cannot be used are an error
// wrapping ErrInvalid.
func New(lim *limiter.Limiter, opts Options) (*Guard, error) {
	if lim == nil {
		return nil, fmt.Errorf("%w: nil limiter", ErrInvalid)
	}
	if opts.Name == "" {
		opts.Name = "wsguard"
	}
	if opts.MessageRate < 0 || opts.MessageBurst < 0 || opts.MaxStreams < 0 || opts.FallbackHold < 0 || opts.MaxHold < 0 {
		return nil, fmt.Errorf("%w: negative figure", ErrInvalid)
	}
	if opts.MessageBurst == 0 {
		opts.MessageBurst = 1
	}
	if opts.Jitter == 0 {
		opts.Jitter = defaultJitter
	}
	if opts.FallbackHold == 0 {
		opts.FallbackHold = defaultFallbackHold
	}
	if opts.MaxHold == 0 || opts.MaxHold > bound.Hold {
		opts.MaxHold = bound.Hold
	}
	for _, c := range opts.Connect {
		if err := c.Quota.Validate(); err != nil {
			return nil, fmt.Errorf("%w: connect quota: %w", ErrInvalid, err)
		}
	}
	return &Guard{lim: lim, opts: opts, tel: newGuardTel(opts.Telemetry, opts.Name)}, nil
}

// Conn is a connection opened through a Guard. Send and Subscribe may be
// called by several goroutines; Read by one at a time.
type Conn struct {
	g    *Guard
	dial func(context.Context) (Socket, error)
	msgs *rate.Limiter // nil: no local limit

	// wmu makes the Sends of several goroutines write one at a time: a
	// Socket has one writer at a time.
	wmu sync.Mutex

	mu      sync.Mutex
	sock    Socket
	closed  bool // by Close: final, a Redial under way or later opens nothing
	streams int
	pending map[string][]limiter.Charge // id → charges of the latest requests sent
	order   []string                    // pending's ids, oldest first
}

// Dial charges one connection attempt to Options.Connect, waits for its turn
// (past any hold: no attempt is made during one) and opens the connection with
// dial. The attempt stays charged when dial fails: exchanges count attempts.
// It returns without dialling when ctx ends first or the turn would come after
// ctx's deadline (an error wrapping limiter.ErrWouldExceedDeadline).
func (g *Guard) Dial(ctx context.Context, dial func(context.Context) (Socket, error)) (*Conn, error) {
	c := &Conn{g: g, dial: dial, pending: map[string][]limiter.Charge{}}
	if g.opts.MessageRate > 0 {
		c.msgs = rate.NewLimiter(g.opts.MessageRate, g.opts.MessageBurst)
	}
	sock, _, err := g.attempt(ctx, dial)
	if err != nil {
		c.refusedHandshake(ctx, err)
		return nil, err
	}
	c.sock = sock
	return c, nil
}

// refusedHandshake learns from err, a failed attempt's, when the server
// refused the handshake: Options.Refusals' holds and, for a 429 or 418,
// Options.Connect's for as long as package middleware holds after such an
// answer (bound.RefusalHold, with FallbackHold and bound.BanHold).
func (c *Conn) refusedHandshake(ctx context.Context, err error) {
	var he *HandshakeError
	if !errors.As(err, &he) {
		return
	}
	c.learn(ctx, Signal{Handshake: he})
	if he.StatusCode != http.StatusTooManyRequests && he.StatusCode != http.StatusTeapot {
		return
	}
	d, _ := bound.RefusalHold(he.StatusCode, he.Header.Get("Retry-After"), he.Header.Get("Date"), time.Now(), c.g.opts.FallbackHold, bound.BanHold)
	c.hold(ctx, Refusal{Hold: d}, c.g.holdReason(Signal{Handshake: he}))
}

// attempt makes one charged connection attempt; dialed reports that the
// turn came and dial was called.
func (g *Guard) attempt(ctx context.Context, dial func(context.Context) (Socket, error)) (_ Socket, dialed bool, _ error) {
	ctx, end := g.tel.start(ctx, spanDial)
	start := time.Now()
	err := g.acquire(ctx, g.opts.Connect)
	g.tel.waited(ctx, opDial, time.Since(start))
	if err != nil {
		g.tel.count(ctx, opDial, resultNotSent)
		end(err)
		return nil, false, err
	}
	sock, err := dial(ctx)
	if err != nil {
		g.tel.count(ctx, opDial, resultError)
		err = fmt.Errorf("wsguard: dial: %w", err)
		end(err)
		return nil, true, err
	}
	g.tel.count(ctx, opDial, resultOK)
	end(nil)
	return sock, true, nil
}

// acquire returns once cs are charged: at their turn, outside every hold.
func (g *Guard) acquire(ctx context.Context, cs []limiter.Charge) error {
	if len(cs) == 0 {
		return ctx.Err()
	}
	r, err := g.lim.Reserve(ctx, cs...)
	if err == nil {
		err = r.Wait(ctx)
	}
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("wsguard: %w", err)
	}
	return err
}

// Redial closes the connection (if still open) and opens it again with the
// same dial function, until an attempt succeeds or ctx ends: each attempt
// waits a random jitter (see Options.Jitter), then is charged and waits its
// turn as Dial's. The new connection has no streams and no pending requests:
// subscribe again. Of concurrent Redials, one connection stays open; after
// Close (even one that comes while Redial dials) Redial leaves nothing open
// and returns an error wrapping net.ErrClosed.
func (c *Conn) Redial(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errClosed
	}
	old := c.sock
	c.sock, c.streams = nil, 0
	clear(c.pending)
	c.order = nil
	c.mu.Unlock()
	if old != nil {
		_ = old.Close(1000, "redial")
	}
	bound := c.g.opts.Jitter
	for try := 0; ; try++ {
		if bound > 0 {
			if err := sleep(ctx, rand.N(bound)); err != nil {
				return err
			}
			if try < 5 {
				bound *= 2
			}
		}
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed { // Close came while this Redial waited: attempt no more
			return errClosed
		}
		sock, dialed, err := c.g.attempt(ctx, c.dial)
		if err == nil {
			c.mu.Lock()
			closed, open := c.closed, c.sock != nil
			if !closed && !open {
				c.sock = sock
			}
			c.mu.Unlock()
			switch {
			case closed:
				_ = sock.Close(1000, "closed")
				return errClosed
			case open: // a concurrent Redial opened one first
				_ = sock.Close(1000, "redial")
			}
			return nil
		}
		c.refusedHandshake(ctx, err)
		if !dialed || ctx.Err() != nil {
			return err // the turn was refused, or ctx ended: no point trying again
		}
	}
}

// socket returns the current socket, or an error when there is none.
func (c *Conn) socket() (Socket, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sock == nil {
		if c.closed {
			return nil, errClosed
		}
		return nil, errRedialing
	}
	return c.sock, nil
}

// errClosed is the error of a call on a connection Close closed.
var errClosed = fmt.Errorf("wsguard: connection closed: %w", net.ErrClosed)

// errRedialing is the error of a call on a connection Redial is opening
// again: not net.ErrClosed, which says it is gone for good.
var errRedialing = errors.New("wsguard: connection not open: redialing")

// Send sends msg once the connection's local limit lets it and, when
// Options.Charges prices it, once its charges are taken (at their turn,
// outside every hold). It returns without sending when ctx ends first, the
// turn would come after ctx's deadline (limiter.ErrWouldExceedDeadline), or
// Charges fails.
func (c *Conn) Send(ctx context.Context, msg []byte) error {
	ctx, end := c.g.tel.start(ctx, spanSend)
	err := c.send(ctx, msg)
	end(err)
	return err
}

func (c *Conn) send(ctx context.Context, msg []byte) error {
	sock, err := c.socket()
	if err != nil {
		c.g.tel.count(ctx, opSend, resultNotSent)
		return err
	}
	start := time.Now()
	if c.msgs != nil {
		if err := c.msgs.Wait(ctx); err != nil {
			c.g.tel.count(ctx, opSend, resultNotSent)
			if ctx.Err() == nil {
				// rate's Wait fails on one message (≤ the burst) only when
				// ctx ends or its turn would pass ctx's deadline, which its
				// error does not say in a way errors.Is can see.
				return fmt.Errorf("wsguard: message limit: %w: %w", limiter.ErrWouldExceedDeadline, err)
			}
			return fmt.Errorf("wsguard: %w", err)
		}
	}
	var id string
	var cs []limiter.Charge
	if f := c.g.opts.Charges; f != nil {
		if id, cs, err = f(msg); err != nil {
			c.g.tel.count(ctx, opSend, resultNotSent)
			return fmt.Errorf("wsguard: charges: %w", err)
		}
	}
	if err := c.g.acquire(ctx, cs); err != nil {
		c.g.tel.waited(ctx, opSend, time.Since(start))
		c.g.tel.count(ctx, opSend, resultNotSent)
		return err
	}
	c.g.tel.waited(ctx, opSend, time.Since(start))
	if id != "" && len(cs) > 0 {
		c.remember(id, cs)
	}
	c.wmu.Lock()
	err = sock.Write(ctx, msg)
	c.wmu.Unlock()
	if err != nil {
		c.g.tel.count(ctx, opSend, resultError)
		return fmt.Errorf("wsguard: write: %w", err)
	}
	c.g.tel.count(ctx, opSend, resultOK)
	return nil
}

// remember keeps the charges of request id for a refusal naming it, for the
// latest maxPending requests (answers that refuse nothing are not parsed, so
// the oldest are forgotten instead).
func (c *Conn) remember(id string, cs []limiter.Charge) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[id]; !ok {
		c.order = append(c.order, id)
	}
	c.pending[id] = cs
	for len(c.order) > maxPending {
		delete(c.pending, c.order[0])
		c.order = c.order[1:]
	}
}

// Subscribe sends msg (a subscribe request; nil sends nothing, for streams
// named in the connection's URL) and counts n more streams on the
// connection. It fails with an error wrapping ErrInvalid, sending nothing,
// when the connection would hold more than Options.MaxStreams. A negative n
// unsubscribes: msg (an unsubscribe request) is sent first, then the
// connection counts -n fewer streams, never below 0.
func (c *Conn) Subscribe(ctx context.Context, msg []byte, n int) error {
	if n < 0 {
		if msg != nil {
			if err := c.Send(ctx, msg); err != nil {
				return err
			}
		}
		c.mu.Lock()
		c.streams = max(c.streams+n, 0)
		c.mu.Unlock()
		return nil
	}
	c.mu.Lock()
	if max := c.g.opts.MaxStreams; max > 0 && c.streams+n > max {
		have := c.streams
		c.mu.Unlock()
		return fmt.Errorf("%w: %d + %d > %d", errTooManyStreams, have, n, max)
	}
	c.streams += n // claimed now, so that concurrent Subscribes cannot pass the cap together
	c.mu.Unlock()
	if msg == nil {
		return nil
	}
	if err := c.Send(ctx, msg); err != nil {
		c.mu.Lock()
		c.streams = max(c.streams-n, 0)
		c.mu.Unlock()
		return err
	}
	return nil
}

// Read returns the next message received. Before returning it, and before
// returning the close that ended the connection, it hands it to
// Options.Refusals and places the holds they call for, in every process.
func (c *Conn) Read(ctx context.Context) ([]byte, error) {
	sock, err := c.socket()
	if err != nil {
		return nil, err
	}
	msg, err := sock.Read(ctx)
	if err != nil {
		var ce *CloseError
		if errors.As(err, &ce) {
			c.learn(ctx, Signal{Close: ce})
		}
		return nil, err
	}
	c.learn(ctx, Signal{Message: msg})
	return msg, nil
}

// learn places the holds sig calls for, then forgets the requests they
// named (answered): only then, so that several refusals of one signal may
// name the same request.
func (c *Conn) learn(ctx context.Context, sig Signal) {
	f := c.g.opts.Refusals
	if f == nil {
		return
	}
	rfs := f(sig)
	for _, rf := range rfs {
		c.hold(ctx, rf, c.g.holdReason(sig))
	}
	c.mu.Lock()
	for _, rf := range rfs {
		if _, ok := c.pending[rf.ID]; ok && rf.ID != "" {
			delete(c.pending, rf.ID)
			// order keeps exactly pending's ids: left here, an id used again
			// would be listed twice, and its older place, aging out, would
			// forget the newer request.
			c.order = slices.DeleteFunc(c.order, func(id string) bool { return id == rf.ID })
		}
	}
	c.mu.Unlock()
}

// holdReason is what a hold sig calls for records for operators (Inspect,
// redquota status): the guard's name and the signal's kind, never a
// message's text.
func (g *Guard) holdReason(sig Signal) string {
	switch {
	case sig.Handshake != nil:
		return fmt.Sprintf("%s: handshake answered %d", g.opts.Name, sig.Handshake.StatusCode)
	case sig.Close != nil:
		return fmt.Sprintf("%s: closed with %d", g.opts.Name, sig.Close.Code)
	}
	return g.opts.Name + ": refusal message"
}

// hold places rf's hold on each quota it names, with reason.
func (c *Conn) hold(ctx context.Context, rf Refusal, reason string) {
	o := c.g.opts
	d := rf.Hold
	if d <= 0 {
		d = o.FallbackHold
	}
	d = min(d, o.MaxHold)
	var cands []limiter.Charge
	if rf.ID != "" {
		c.mu.Lock()
		cands = c.pending[rf.ID]
		c.mu.Unlock()
		if len(cands) == 0 && rf.Quota == "" {
			c.g.report(fmt.Errorf("wsguard: refusal names request %q, which this connection has no charges of (never priced, or forgotten): nothing held", rf.ID))
			return
		}
	}
	if rf.ID == "" || rf.Quota != "" {
		cands = append(cands[:len(cands):len(cands)], o.Connect...)
	}
	// A hold is placed even when the caller has gone: the fleet must learn it.
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	held := map[string]bool{} // quota instances held, by their printed value (Quota is not comparable)
	found := false
	for _, ch := range cands {
		if rf.Quota != "" && ch.Quota.Name != rf.Quota {
			continue
		}
		found = true
		if id := fmt.Sprintf("%+v", ch.Quota); held[id] {
			continue
		} else {
			held[id] = true
		}
		if _, err := c.g.lim.Hold(hctx, ch.Quota, d, reason); err != nil {
			c.g.report(fmt.Errorf("wsguard: hold %s: %w", ch.Quota.Name, err))
			continue
		}
		c.g.tel.refused(ctx, ch.Quota)
	}
	if !found && rf.Quota != "" {
		c.g.report(fmt.Errorf("wsguard: refusal names quota %q, which this connection was not charged", rf.Quota))
	}
}

func (g *Guard) report(err error) {
	if g.opts.OnError != nil {
		g.opts.OnError(err)
	}
}

// Close closes the connection with code and reason, for good. Send,
// Subscribe, Read and Redial on a closed connection return an error wrapping
// net.ErrClosed.
func (c *Conn) Close(code int, reason string) error {
	c.mu.Lock()
	sock := c.sock
	c.sock, c.closed = nil, true
	c.mu.Unlock()
	if sock == nil {
		return nil
	}
	return sock.Close(code, reason)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
