package middleware

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/telemetry"
)

// Telemetry names, listed with their attributes in TELEMETRY_NAMES.md.
//
// A request's URL is never recorded beyond its host: paths can carry ids and
// queries carry signatures and API keys. Nor are headers, a Handler's keys
// (API keys, accounts, addresses) or an error's text (a transport error quotes
// the whole URL); errors are described by a class instead.
const (
	spanRoundTrip = "redquota.middleware.RoundTrip"
	spanHandler   = "redquota.middleware.Handler"

	metricRequests    = "redquota.middleware.requests"
	metricLimited     = "redquota.middleware.limited"
	metricHeaderSyncs = "redquota.middleware.header_syncs"
	metricWait        = "redquota.middleware.wait"
	metricDecisions   = "redquota.middleware.server.decisions"

	attrQuota          = attribute.Key("redquota.quota")
	attrRule           = attribute.Key("redquota.rule")
	attrCost           = attribute.Key("redquota.cost")
	attrStatusClass    = attribute.Key("redquota.status_class")
	attrResult         = attribute.Key("redquota.result")
	attrWaited         = attribute.Key("redquota.waited_ms")
	attrLimitedStatus  = attribute.Key("redquota.limited_status")
	attrLimitedAnswers = attribute.Key("redquota.limited_answers")
	attrHeaderSync     = attribute.Key("redquota.header_sync")
	attrHold           = attribute.Key("redquota.hold_ms")
	attrRetries        = attribute.Key("redquota.retries")
	attrAllowed        = attribute.Key("redquota.allowed")
	attrDegraded       = attribute.Key("redquota.degraded")
	attrRemaining      = attribute.Key("redquota.remaining")
	attrRetryAfter     = attribute.Key("redquota.retry_after_ms")
	attrDeniedBy       = attribute.Key("redquota.denied_by")
	attrMethod         = attribute.Key("http.request.method")
	attrHost           = attribute.Key("server.address")
	attrStatus         = attribute.Key("http.response.status_code")
	attrErrorType      = attribute.Key("error.type")
)

// Status classes, the values of redquota.status_class on
// redquota.middleware.requests: one per request sent (retries included), by
// its answer's status or "error" when no answer came; "not_sent" for a
// request refused before sending.
const (
	class1xx = iota
	class2xx
	class3xx
	class4xx
	class5xx
	classError
	classNotSent
	classUnmatched
	numClasses
)

var classNames = [numClasses]string{"1xx", "2xx", "3xx", "4xx", "5xx", "error", "not_sent", "unmatched"}

// statusClass is the class of an HTTP status code.
func statusClass(code int) int {
	if code < 100 || code > 599 {
		return classError
	}
	return class1xx + code/100 - 1
}

// The statuses counted by redquota.middleware.limited.
var limitedStatuses = [3]int{http.StatusTooManyRequests, http.StatusTeapot, http.StatusServiceUnavailable}

func limitedIndex(code int) int {
	for i, c := range limitedStatuses {
		if c == code {
			return i
		}
	}
	return -1
}

// Results of a usage header, the values of redquota.result on
// redquota.middleware.header_syncs.
const (
	syncRaised    = iota // our count was raised to the server's
	syncUnchanged        // ours was already as high, or the charge's window has passed
	syncError            // the Sync failed
	numSyncs
)

var syncNames = [numSyncs]string{"raised", "unchanged", "error"}

// transportTel are a Transport's tracer and instruments.
type transportTel struct {
	tracer   trace.Tracer
	requests metric.Int64Counter
	limited  metric.Int64Counter
	syncs    metric.Int64Counter
	wait     metric.Float64Histogram
	// unmatched are the options of a request no rule matched.
	unmatched []metric.AddOption
}

// ruleTel are a rule's metric options, built once: recording allocates nothing.
type ruleTel struct {
	requests [numClasses][]metric.AddOption
	limited  [len(limitedStatuses)][]metric.AddOption
	syncs    [numSyncs][]metric.AddOption
	wait     []metric.RecordOption
}

func newTransportTel(p telemetry.Providers) transportTel {
	m := p.Meter()
	var tt transportTel
	tt.tracer = p.Tracer()
	// Instrument constructors fail only on invalid names; ours are constant.
	// A nil instrument (a failing provider) is skipped when recording.
	tt.requests, _ = m.Int64Counter(metricRequests,
		metric.WithDescription("Requests a Transport rule matched: each one sent (retries too) by its answer's status class, or error; not_sent for those refused before sending."),
		metric.WithUnit("{request}"))
	tt.limited, _ = m.Int64Counter(metricLimited,
		metric.WithDescription("429, 418 and 503 answers seen by a Transport, by status."),
		metric.WithUnit("{response}"))
	tt.syncs, _ = m.Int64Counter(metricHeaderSyncs,
		metric.WithDescription("Usage-header counts read by a Transport, by result: raised (our count raised to the server's), unchanged (already as high, or counted in a window already past), error."),
		metric.WithUnit("{header}"))
	tt.wait, _ = m.Float64Histogram(metricWait,
		metric.WithDescription("Time a Transport held a request before sending it: its wait for a turn in the quota."),
		metric.WithUnit("s"))
	return tt
}

func newRuleTel(quota string) ruleTel {
	var rt ruleTel
	q := attrQuota.String(quota)
	for c, name := range classNames {
		if quota == "" {
			rt.requests[c] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attrStatusClass.String(name)))}
			continue
		}
		rt.requests[c] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(q, attrStatusClass.String(name)))}
	}
	for i, code := range limitedStatuses {
		rt.limited[i] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(q, attrStatus.Int(code)))}
	}
	for s, name := range syncNames {
		rt.syncs[s] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(q, attrResult.String(name)))}
	}
	rt.wait = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(q))}
	return rt
}

// trip is what one RoundTrip did, for its span.
type trip struct {
	charges       []limiter.Charge
	errClass      string // the class of the error returned
	waited        time.Duration
	status        int // the last answer's status
	limitedStatus int // the last 429, 418 or 503 seen
	limited       int // 429, 418 and 503 answers seen
	synced        bool
	hold          time.Duration // the longest hold placed
	retries       int
}

// noSpan is the non-recording span of a call without a recording parent.
var noSpan = trace.SpanFromContext(context.Background())

// startRoundTrip begins the span of a request r matched, as a child of the
// caller's span; without a recording span in ctx it starts none.
func (t *Transport) startRoundTrip(ctx context.Context, r *rule, req *http.Request) (context.Context, trace.Span) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, noSpan
	}
	ctx, span := t.tel.tracer.Start(ctx, spanRoundTrip, trace.WithSpanKind(trace.SpanKindInternal))
	if span.IsRecording() {
		method := req.Method
		if method == "" {
			method = http.MethodGet
		}
		span.SetAttributes(attrQuota.String(r.Quota.Name), attrRule.String(r.desc), attrMethod.String(method))
		if req.URL != nil {
			span.SetAttributes(attrHost.String(req.URL.Hostname()))
		}
	}
	return ctx, span
}

// endRoundTrip ends a RoundTrip span with what the trip did and, on an error,
// the error's class.
func endRoundTrip(span trace.Span, tr *trip, err error) {
	if !span.IsRecording() {
		return
	}
	total := 0
	for _, ch := range tr.charges {
		for _, c := range ch.Cost {
			total += c
		}
	}
	span.SetAttributes(attrCost.Int(total), attrWaited.Int64(tr.waited.Milliseconds()),
		attrLimitedAnswers.Int(tr.limited), attrHeaderSync.Bool(tr.synced),
		attrHold.Int64(tr.hold.Milliseconds()), attrRetries.Int(tr.retries))
	if tr.status != 0 {
		span.SetAttributes(attrStatus.Int(tr.status))
	}
	if tr.limitedStatus != 0 {
		span.SetAttributes(attrLimitedStatus.Int(tr.limitedStatus))
	}
	if err != nil {
		span.SetAttributes(attrErrorType.String(tr.errClass))
		span.SetStatus(codes.Error, tr.errClass)
	}
	span.End()
}

// refusalClass describes the error of a request refused before sending.
func refusalClass(err error) string {
	switch {
	case errors.Is(err, ErrRateLimited):
		return "rate_limited"
	case errors.Is(err, ErrInvalidRule):
		return "invalid_rule"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	case errors.Is(err, limiter.ErrUnavailable):
		return "limiter_unavailable"
	case errors.Is(err, limiter.ErrInvalid), errors.Is(err, limiter.ErrInvalid), errors.Is(err, limiter.ErrInvalid):
		return "invalid_cost"
	}
	return "limiter"
}

func (t *Transport) countRequest(ctx context.Context, r *rule, class int) {
	if t.tel.requests != nil {
		t.tel.requests.Add(ctx, 1, r.tel.requests[class]...)
	}
}

func (t *Transport) countLimited(ctx context.Context, r *rule, code int) {
	if i := limitedIndex(code); i >= 0 && t.tel.limited != nil {
		t.tel.limited.Add(ctx, 1, r.tel.limited[i]...)
	}
}

func (t *Transport) countSync(ctx context.Context, r *rule, result int) {
	if t.tel.syncs != nil {
		t.tel.syncs.Add(ctx, 1, r.tel.syncs[result]...)
	}
}

func (t *Transport) recordWait(ctx context.Context, r *rule, d time.Duration) {
	if t.tel.wait != nil {
		t.tel.wait.Record(ctx, d.Seconds(), r.tel.wait...)
	}
}

// Server-side decisions, the values of redquota.result on
// redquota.middleware.server.decisions.
const (
	decAllowed     = iota
	decDenied      // answered 429
	decDegraded    // allowed by the limiter's failure policy, Redis unreachable
	decUnavailable // answered 503: Redis unreachable, the limiter fails closed
	decError       // answered 500: a misconfigured quota, a key or limiter error
	numDecisions
)

var decisionNames = [numDecisions]string{"allowed", "denied", "degraded", "unavailable", "error"}

// handlerTel are a Handler's tracer, instrument and metric options.
type handlerTel struct {
	tracer    trace.Tracer
	decisions metric.Int64Counter
	opts      [numDecisions][]metric.AddOption
}

func newHandlerTel(p telemetry.Providers, quota string) handlerTel {
	ht := handlerTel{tracer: p.Tracer()}
	ht.decisions, _ = p.Meter().Int64Counter(metricDecisions,
		metric.WithDescription("Decisions of a server Handler by quota and result (allowed, denied, degraded, unavailable, error)."),
		metric.WithUnit("{decision}"))
	q := attrQuota.String(quota)
	for d, name := range decisionNames {
		ht.opts[d] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(q, attrResult.String(name)))}
	}
	return ht
}

// start begins the span of a decision, as a child of the caller's (the server
// instrumentation's) span; without a recording span in ctx it starts none.
func (h *handler) start(ctx context.Context) (context.Context, trace.Span) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, noSpan
	}
	ctx, span := h.tel.tracer.Start(ctx, spanHandler, trace.WithSpanKind(trace.SpanKindInternal))
	if span.IsRecording() {
		span.SetAttributes(attrQuota.String(h.quota.Name))
	}
	return ctx, span
}

// limiterContext is the context of the limiter call of a decision whose span
// is recording: the decision span carries the limiter's answer, and Redis
// command spans nest directly under it.
func limiterContext(ctx context.Context, span trace.Span) context.Context {
	if !span.IsRecording() {
		return ctx
	}
	return trace.ContextWithSpanContext(ctx, span.SpanContext())
}

// decide counts a decision and ends its span, with the status answered (0
// when the request goes on to next) and, on an error, its class.
func (h *handler) decide(ctx context.Context, span trace.Span, d int, status int, res *limiter.Result, class string) {
	if h.tel.decisions != nil {
		h.tel.decisions.Add(ctx, 1, h.tel.opts[d]...)
	}
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attrResult.String(decisionNames[d]))
	if status != 0 {
		span.SetAttributes(attrStatus.Int(status))
	}
	if res != nil {
		span.SetAttributes(attrAllowed.Bool(res.Allowed), attrDegraded.Bool(res.Degraded))
		if len(res.Limits) > 0 {
			span.SetAttributes(attrRemaining.Int(res.Remaining))
		}
		if !res.Allowed {
			span.SetAttributes(attrRetryAfter.Int64(res.RetryAfter.Milliseconds()), attrDeniedBy.String(res.DeniedBy))
		}
	}
	if class != "" {
		span.SetAttributes(attrErrorType.String(class))
		span.SetStatus(codes.Error, class)
	}
	span.End()
}
