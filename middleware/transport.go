package middleware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/redquota/redquota/internal/bound"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/telemetry"
)

// Defaults of Options, each documented on its field.
const (
	// defaultFallbackHold is how long a 429 without a usable Retry-After (or a
	// 503 with a malformed one) holds its quota.
	defaultFallbackHold = time.Second
	// defaultBanHold is how long a 418 without a usable Retry-After holds its
	// quota: Binance's shortest IP ban.
	defaultBanHold = bound.BanHold
	// defaultRetryBackoff is the first retry's backoff; it doubles with each retry.
	defaultRetryBackoff = 100 * time.Millisecond
	// defaultMaxRetryBackoff bounds the backoff between retries.
	defaultMaxRetryBackoff = 5 * time.Second
)

// bookkeepingTimeout bounds the Redis calls made after a response (Sync,
// Hold): they must happen even when the request's context has just ended.
const bookkeepingTimeout = time.Second

// maxDrain is the most of a discarded response body read to free its connection.
const maxDrain = 64 << 10

// Options configure a Transport. The zero value works; each field documents
// its default.
type Options struct {
	// Default, when set, applies to requests no rule matches (its match
	// conditions are ignored). Default nil: such requests pass straight
	// through, counted in Stats.Unmatched, unless Strict.
	Default *Rule
	// Strict refuses a request that no rule matches (and no Default rule
	// takes), unsent, with an error wrapping ErrInvalid ("request matches no
	// rule"). Default false: it passes through unlimited, counted in Stats.Unmatched and in the
	// redquota.middleware.requests metric as "unmatched".
	Strict bool
	// FailFast makes a request that cannot be charged at once fail with a
	// *LimitedError instead of waiting for its turn (limiter.Limiter.Allow).
	// Such a charge leaves no reservation to tie a usage count to: a count is
	// synced into the window current when it arrives (limiter.Limiter.Sync),
	// which for an answer that crosses a fixed window's end may be the next
	// one (it can only slow us down). Default false: wait, up to the request
	// context's deadline (http.Client.Timeout sets one).
	FailFast bool
	// MaxRetries is how many times an idempotent request answered 429, 418 or
	// 503 is sent again, each time after the hold that answer caused and a
	// backoff with jitter, and charged again. A request is retried only when its
	// body can be rewound (no body, or GetBody set). Default 0: never; the
	// answer is returned to the caller.
	MaxRetries int
	// RetryBackoff is the backoff before the first retry, doubling after each
	// and drawn uniformly from its upper half (jitter). Default 100 ms.
	RetryBackoff time.Duration
	// MaxRetryBackoff caps the backoff. Default 5 s.
	MaxRetryBackoff time.Duration
	// Idempotent reports whether a request may be sent again. Default: GET,
	// HEAD, OPTIONS and TRACE, and requests with an Idempotency-Key or
	// X-Idempotency-Key header, as net/http decides. Order placement (POST) is
	// therefore never resent unless it carries an idempotency key.
	Idempotent func(*http.Request) bool
	// MaxHold caps any hold the Transport places (from Retry-After or a usage
	// header), so that an absurd value cannot stop the fleet for long. Default
	// and upper bound a week (the longest hold limiter.Hold accepts).
	MaxHold time.Duration
	// FallbackHold is the hold after a 429 without a usable Retry-After
	// (missing, malformed or negative), a 429 or 418 with Retry-After 0 (or a
	// date past: the header counts whole seconds, so 0 says under one, and a
	// refusal says to back off), or a 503 with a malformed one. Default 1 s. A
	// 503 with Retry-After missing or 0 holds nothing. Package wsguard holds
	// a refused handshake by the same rule.
	FallbackHold time.Duration
	// BanHold is the hold after a 418 without a usable Retry-After (missing
	// or malformed). Default 2 minutes, Binance's shortest IP ban.
	BanHold time.Duration
	// WindowGuard protects fixed-window limits (limiter.FixedWindow) against a
	// request charged in one window reaching the server in the next: it is
	// the limiter.Quota.Guard of every quota the Transport charges that has a
	// fixed-window limit and no Guard of its own, so the limiter never grants
	// a request within WindowGuard of its window's end (it books it at the
	// next window's start instead), deciding on Redis's clock. Set it to the
	// one-way latency to the server plus the clock difference between Redis
	// and the server; it must be shorter than every such limit's Period (a
	// rule whose quota it is not is invalid). A request that must first open
	// a connection (TCP, TLS) takes longer to land, so warm the client or size
	// the guard for it. Default 0: no guard.
	WindowGuard time.Duration
	// StripHeaders are headers removed from every request before it is sent,
	// whether a rule matched it or not: hints for a rule's Charges that the
	// server must not see (exchanges.KrakenPairHeader). Default none.
	StripHeaders []string
	// Telemetry are the OpenTelemetry providers of the Transport's (and a
	// Handler's) spans and metrics (see TELEMETRY_NAMES.md). Default: the
	// global providers.
	Telemetry telemetry.Providers
	// OnError, when set, receives the problems that do not fail a request: a
	// malformed header (ErrBadHeader), a Sync or Hold that Redis refused. It may
	// be called concurrently.
	OnError func(req *http.Request, err error)
}

// Stats are counts of what a Transport did.
type Stats struct {
	// Sent counts requests (and retries) sent under a rule.
	Sent int64
	// TooManyRequests, Banned and Unavailable count 429, 418 and 503 answers.
	TooManyRequests, Banned, Unavailable int64
	// Holds counts holds placed in Redis.
	Holds int64
	// Syncs counts usage headers that raised our count to the server's.
	Syncs int64
	// Retries counts requests sent again after a 429, 418 or 503.
	Retries int64
	// Errors counts the problems passed to Options.OnError.
	Errors int64
	// Unmatched counts requests no rule matched: sent unlimited, or refused
	// with ErrInvalid when the Transport is Strict.
	Unmatched int64
}

type counters struct {
	sent, tooMany, banned, unavailable, holds, syncs, retries, errors, unmatched atomic.Int64
}

// Transport is an http.RoundTripper that charges each request a Rule matches to
// the rule's quota before sending it, and learns from the answer. It is safe
// for concurrent use; it never modifies the caller's request.
type Transport struct {
	next  http.RoundTripper
	lim   *limiter.Limiter
	rules []*rule
	def   *rule
	opts  Options
	stats counters
	tel   transportTel
}

var _ http.RoundTripper = (*Transport)(nil)

// NewTransport returns a Transport that sends through next
// (http.DefaultTransport when nil) and charges requests to lim by rules, the
// first match winning, with opts (the zero Options works). It fails with an
// error wrapping ErrInvalid, naming every invalid rule, when lim is nil or a
// rule (or opts.Default) cannot be used.
func NewTransport(next http.RoundTripper, lim *limiter.Limiter, opts Options, rules ...Rule) (*Transport, error) {
	if lim == nil {
		return nil, fmt.Errorf("%w: nil limiter", ErrInvalid)
	}
	t := newTransport(next, lim, opts, rules...)
	var errs []error
	for _, r := range t.rules {
		errs = append(errs, r.err)
	}
	if t.def != nil {
		errs = append(errs, t.def.err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

// newTransport is NewTransport without its checks: a rule that cannot be
// used fails the requests it matches, unsent.
func newTransport(next http.RoundTripper, lim *limiter.Limiter, opts Options, rules ...Rule) *Transport {
	if next == nil {
		next = http.DefaultTransport
	}
	if opts.MaxHold <= 0 || opts.MaxHold > bound.Hold {
		opts.MaxHold = bound.Hold
	}
	if opts.FallbackHold <= 0 {
		opts.FallbackHold = defaultFallbackHold
	}
	if opts.BanHold <= 0 {
		opts.BanHold = defaultBanHold
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = defaultRetryBackoff
	}
	if opts.MaxRetryBackoff <= 0 {
		opts.MaxRetryBackoff = defaultMaxRetryBackoff
	}
	if opts.Idempotent == nil {
		opts.Idempotent = replayable
	}
	t := &Transport{next: next, lim: lim, opts: opts, tel: newTransportTel(opts.Telemetry)}
	for i, r := range rules {
		t.rules = append(t.rules, compile(r, fmt.Sprintf("rule %d (%s)", i, r.describe()), opts.WindowGuard))
	}
	if opts.Default != nil {
		t.def = compile(*opts.Default, fmt.Sprintf("default rule (%s)", opts.Default.describe()), opts.WindowGuard)
		t.opts.Default = nil
	}
	for _, r := range t.rules {
		r.tel = newRuleTel(r.Quota.Name)
	}
	if t.def != nil {
		t.def.tel = newRuleTel(t.def.Quota.Name)
	}
	t.tel.unmatched = newRuleTel("").requests[classUnmatched]
	return t
}

// Stats returns the counts so far.
func (t *Transport) Stats() Stats {
	return Stats{
		Sent:            t.stats.sent.Load(),
		TooManyRequests: t.stats.tooMany.Load(),
		Banned:          t.stats.banned.Load(),
		Unavailable:     t.stats.unavailable.Load(),
		Holds:           t.stats.holds.Load(),
		Syncs:           t.stats.syncs.Load(),
		Retries:         t.stats.retries.Load(),
		Errors:          t.stats.errors.Load(),
		Unmatched:       t.stats.unmatched.Load(),
	}
}

func (t *Transport) match(req *http.Request) *rule {
	for _, r := range t.rules {
		if r.matches(req) {
			return r
		}
	}
	return t.def
}

// RoundTrip charges req to the quota of the first rule that matches it, waits
// for its turn, sends it, and learns from the answer.
//
// It returns without sending, closing req's body, when the cost cannot be
// computed or charged (the limiter's ErrInvalid), the quota has no room in
// time or was found held at each of its turns (*LimitedError,
// ErrRateLimited), req's context ends while it waits
// (the context's error), Redis cannot be reached under a fail-closed
// policy (limiter.ErrUnavailable), or, on a Strict Transport, no rule matches
// it (ErrInvalid too).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := t.match(req)
	if r == nil {
		t.stats.unmatched.Add(1)
		if t.tel.requests != nil {
			t.tel.requests.Add(req.Context(), 1, t.tel.unmatched...)
		}
		if t.opts.Strict {
			if req.Body != nil {
				_ = req.Body.Close()
			}
			return nil, fmt.Errorf("%w: %s %s%s", errUnmatched, method(req), req.URL.Host, req.URL.Path)
		}
		return t.next.RoundTrip(t.strip(req))
	}
	ctx, span := t.startRoundTrip(req.Context(), r, req)
	var tr trip
	resp, err := t.roundTrip(ctx, span.IsRecording(), req, r, &tr)
	endRoundTrip(span, &tr, err)
	return resp, err
}

// roundTrip is RoundTrip for a request r matches. ctx is req's context with
// the RoundTrip span, if one is recording (traced); then the request is sent
// with it, so that the spans of next nest under the RoundTrip span. tr
// collects what it did, for the span.
func (t *Transport) roundTrip(ctx context.Context, traced bool, req *http.Request, r *rule, tr *trip) (*http.Response, error) {
	fail := func(err error, class string) (*http.Response, error) {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		t.countRequest(ctx, r, classNotSent)
		tr.errClass = class
		return nil, err
	}
	if r.err != nil {
		return fail(r.err, "invalid_rule")
	}
	var body []byte
	if r.Charges != nil {
		var err error
		if req, body, err = readBody(req); err != nil {
			return fail(fmt.Errorf("middleware: read request body: %w", err), "body")
		}
	}
	charges, err := r.charges(req, body, t.opts.WindowGuard)
	if err != nil {
		return fail(err, "invalid_cost")
	}
	tr.charges = charges
	req = t.strip(req)
	began := time.Now()
	res, err := t.acquire(ctx, charges, 0)
	tr.waited = time.Since(began)
	t.recordWait(ctx, r, tr.waited)
	if err != nil {
		return fail(err, refusalClass(err))
	}
	retry := t.opts.MaxRetries > 0 && t.opts.Idempotent(req) && rewindable(req)
	out := req
	for attempt := 0; ; attempt++ {
		t.stats.sent.Add(1)
		send := out
		if traced {
			send = out.WithContext(ctx)
		}
		resp, err := t.next.RoundTrip(send)
		if err != nil {
			t.countRequest(ctx, r, classError)
			tr.errClass = "transport" // the error's text quotes the URL, query and all
			return nil, err
		}
		t.countRequest(ctx, r, statusClass(resp.StatusCode))
		tr.status = resp.StatusCode
		a := &Answer{Request: out, StatusCode: resp.StatusCode, Header: resp.Header, Charges: charges}
		if r.PeekBody > 0 {
			a.Body, _ = peek(resp, r.PeekBody)
		}
		t.learn(ctx, r, a, res, tr)
		if !retry || attempt >= t.opts.MaxRetries || !retryStatus(resp.StatusCode) {
			return resp, nil
		}
		if _, whole := peek(resp, maxDrain); !whole {
			return resp, nil // too large a body to drain: hand it over
		}
		next, err := rewind(req)
		if err != nil {
			return resp, nil
		}
		began := time.Now()
		res, err = t.acquire(ctx, charges, t.backoff(attempt))
		waited := time.Since(began)
		tr.waited += waited
		t.recordWait(ctx, r, waited)
		if err != nil {
			if next.Body != nil {
				_ = next.Body.Close()
			}
			return resp, nil // no room before the deadline: the caller gets the answer
		}
		t.stats.retries.Add(1)
		tr.retries++
		out = next
	}
}

func retryStatus(code int) bool {
	return code == http.StatusTooManyRequests || code == http.StatusTeapot || code == http.StatusServiceUnavailable
}

// replayable is net/http's rule for requests it may send again.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return len(req.Header["Idempotency-Key"]) > 0 || len(req.Header["X-Idempotency-Key"]) > 0
}

func rewindable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// rewind returns a copy of req with a fresh body: the caller's req is never touched.
func rewind(req *http.Request) (*http.Request, error) {
	out := req.Clone(req.Context())
	if req.Body == nil || req.Body == http.NoBody {
		return out, nil
	}
	b, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	out.Body = b
	return out, nil
}

// strip returns req, or a copy of it without Options.StripHeaders when it has
// any of them.
func (t *Transport) strip(req *http.Request) *http.Request {
	for i, h := range t.opts.StripHeaders {
		if _, ok := req.Header[http.CanonicalHeaderKey(h)]; !ok {
			continue
		}
		out := req.Clone(req.Context())
		for _, h := range t.opts.StripHeaders[i:] {
			out.Header.Del(h)
		}
		return out
	}
	return req
}

// method is req's method, GET when empty.
func method(req *http.Request) string {
	if req.Method == "" {
		return http.MethodGet
	}
	return req.Method
}

// readBody returns a copy of req's body, at most maxBody+1 bytes (nil when
// it has none), and the request to send: req itself when its body can be
// read again (GetBody), else a copy of req whose body gives back what was
// read, then the rest. A body read whole becomes rewindable (GetBody), so
// that a retry can send it again.
func readBody(req *http.Request) (*http.Request, []byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil, nil
	}
	if req.GetBody != nil {
		rc, err := req.GetBody()
		if err != nil {
			return req, nil, err
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, maxBody+1))
		return req, b, err
	}
	b, err := io.ReadAll(io.LimitReader(req.Body, maxBody+1))
	if err != nil {
		return req, nil, err
	}
	out := req.Clone(req.Context())
	if len(b) > maxBody {
		out.Body = readCloser{io.MultiReader(bytes.NewReader(b), req.Body), req.Body}
		return out, b, nil
	}
	_ = req.Body.Close()
	out.Body = io.NopCloser(bytes.NewReader(b))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return out, b, nil
}

// peek reads up to n bytes of resp's body and puts them back: the caller
// still reads the whole body, and the read error the peek met, if any. whole
// reports that the body was read to its end (or to an error): then the
// original body is closed, freeing the connection, and resp.Body is the copy
// in memory. A nil body (which http.Client tolerates from a RoundTripper) is
// an empty one.
func peek(resp *http.Response, n int) (b []byte, whole bool) {
	if resp.Body == nil || resp.Body == http.NoBody {
		resp.Body = http.NoBody
		return nil, true
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(n)+1))
	if len(b) > n {
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
		return b[:n], false
	}
	_ = resp.Body.Close()
	rest := io.Reader(eof{})
	if err != nil {
		rest = errReader{err}
	}
	resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), rest))
	return b, true
}

// readCloser reads from a Reader and closes a Closer.
type readCloser struct {
	io.Reader
	io.Closer
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type eof struct{}

func (eof) Read([]byte) (int, error) { return 0, io.EOF }

// backoff is the jittered delay before retry attempt+1.
func (t *Transport) backoff(attempt int) time.Duration {
	d := t.opts.MaxRetryBackoff
	// Doubled only while it stays under the cap: a shift past int64 wraps.
	if attempt < 63 && t.opts.RetryBackoff <= d>>attempt {
		d = t.opts.RetryBackoff << attempt
	}
	return d/2 + rand.N(d/2+1)
}

func (t *Transport) report(req *http.Request, err error) {
	t.stats.errors.Add(1)
	if t.opts.OnError != nil {
		t.opts.OnError(req, err)
	}
}
