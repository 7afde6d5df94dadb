package middleware

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/redquota/redquota/internal/otelx"
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

	// Besides otelx's redquota.quota, .cost, .result, .waited_ms, .allowed,
	// .degraded, .remaining, .retry_after_ms, .denied_by and error.type:
	attrRule           = attribute.Key("redquota.rule")
	attrStatusClass    = attribute.Key("redquota.status_class")
	attrLimitedStatus  = attribute.Key("redquota.limited_status")
	attrLimitedAnswers = attribute.Key("redquota.limited_answers")
	attrHeaderSync     = attribute.Key("redquota.header_sync")
	attrHold           = attribute.Key("redquota.hold_ms")
	attrRetries        = attribute.Key("redquota.retries")
	attrMethod         = attribute.Key("http.request.method")
	attrHost           = attribute.Key("server.address")
	attrStatus         = attribute.Key("http.response.status_code")
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
	m := otelx.Meter(p)
	return transportTel{
		tracer: otelx.Tracer(p),
		requests: otelx.Counter(m, metricRequests, "{request}",
			"Requests a Transport rule matched: each one sent (retries too) by its answer's status class, or error; not_sent for those refused before sending."),
		limited: otelx.Counter(m, metricLimited, "{response}",
			"429, 418 and 503 answers seen by a Transport, by status."),
		syncs: otelx.Counter(m, metricHeaderSyncs, "{header}",
			"Usage-header counts read by a Transport, by result: raised (our count raised to the server's), unchanged (already as high, or counted in a window already past), error."),
		wait: otelx.Histogram(m, metricWait, "s",
			"Time a Transport held a request before sending it: its wait for a turn in the quota."),
	}
}

func newRuleTel(quota string) ruleTel {
	var rt ruleTel
	q := otelx.Quota.String(quota)
	for c, name := range classNames {
		if quota == "" {
			rt.requests[c] = otelx.AddOpts(attrStatusClass.String(name))
			continue
		}
		rt.requests[c] = otelx.AddOpts(q, attrStatusClass.String(name))
	}
	for i, code := range limitedStatuses {
		rt.limited[i] = otelx.AddOpts(q, attrStatus.Int(code))
	}
	for s, name := range syncNames {
		rt.syncs[s] = otelx.AddOpts(q, otelx.Result.String(name))
	}
	rt.wait = otelx.RecordOpts(q)
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

// startRoundTrip begins the span of a request r matched, as a child of the
// caller's span; without a recording span in ctx it starts none.
func (t *Transport) startRoundTrip(ctx context.Context, r *rule, req *http.Request) (context.Context, trace.Span) {
	ctx, span := otelx.Start(ctx, t.tel.tracer, spanRoundTrip)
	if span.IsRecording() {
		method := req.Method
		if method == "" {
			method = http.MethodGet
		}
		span.SetAttributes(otelx.Quota.String(r.Quota.Name), attrRule.String(r.desc), attrMethod.String(method))
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
	span.SetAttributes(otelx.Cost.Int(total), otelx.Waited.Int64(tr.waited.Milliseconds()),
		attrLimitedAnswers.Int(tr.limited), attrHeaderSync.Bool(tr.synced),
		attrHold.Int64(tr.hold.Milliseconds()), attrRetries.Int(tr.retries))
	if tr.status != 0 {
		span.SetAttributes(attrStatus.Int(tr.status))
	}
	if tr.limitedStatus != 0 {
		span.SetAttributes(attrLimitedStatus.Int(tr.limitedStatus))
	}
	class := ""
	if err != nil {
		class = tr.errClass
	}
	otelx.End(span, class)
}

// refusalClass describes the error of a request refused before sending.
func refusalClass(err error) string {
	return otelx.Classify(err, "limiter",
		otelx.Class{Err: ErrRateLimited, Name: "rate_limited"},
		otelx.Class{Err: ErrInvalid, Name: "invalid_rule"},
		otelx.Canceled,
		otelx.Deadline,
		otelx.Class{Err: limiter.ErrUnavailable, Name: "limiter_unavailable"},
		otelx.Class{Err: limiter.ErrInvalid, Name: "invalid_cost"})
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
	ht := handlerTel{tracer: otelx.Tracer(p)}
	ht.decisions = otelx.Counter(otelx.Meter(p), metricDecisions, "{decision}",
		"Decisions of a server Handler by quota and result (allowed, denied, degraded, unavailable, error).")
	q := otelx.Quota.String(quota)
	for d, name := range decisionNames {
		ht.opts[d] = otelx.AddOpts(q, otelx.Result.String(name))
	}
	return ht
}

// start begins the span of a decision, as a child of the caller's (the server
// instrumentation's) span; without a recording span in ctx it starts none.
func (h *handler) start(ctx context.Context) (context.Context, trace.Span) {
	ctx, span := otelx.Start(ctx, h.tel.tracer, spanHandler)
	if span.IsRecording() {
		span.SetAttributes(otelx.Quota.String(h.quota.Name))
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
	span.SetAttributes(otelx.Result.String(decisionNames[d]))
	if status != 0 {
		span.SetAttributes(attrStatus.Int(status))
	}
	if res != nil {
		span.SetAttributes(otelx.Allowed.Bool(res.Allowed), otelx.Degraded.Bool(res.Degraded))
		if len(res.Limits) > 0 {
			span.SetAttributes(otelx.Remaining.Int(res.Remaining))
		}
		if !res.Allowed {
			span.SetAttributes(otelx.RetryAfter.Int64(res.RetryAfter.Milliseconds()), otelx.DeniedBy.String(res.DeniedBy))
		}
	}
	otelx.End(span, class)
}
