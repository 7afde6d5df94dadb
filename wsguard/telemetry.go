package wsguard

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/redquota/redquota/internal/otelx"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/telemetry"
)

// Telemetry names, listed with their attributes in TELEMETRY_NAMES.md.
// Messages, URLs, keys and an error's text are never recorded: a message can
// carry an API key and a signature. Errors are described by a class.
const (
	spanDial = "redquota.wsguard.Dial"
	spanSend = "redquota.wsguard.Send"

	metricOps      = "redquota.wsguard.operations"
	metricWait     = "redquota.wsguard.wait"
	metricRefusals = "redquota.wsguard.holds"

	attrGuard = attribute.Key("redquota.guard")
	attrQuota = otelx.Quota
)

// Operations and their results, the values of redquota.op and
// redquota.result on redquota.wsguard.operations.
const (
	opDial = iota // a connection attempt
	opSend        // a message sent
	numOps
)

const (
	resultOK      = iota // connected, or sent
	resultError          // dialled or written, and it failed
	resultNotSent        // refused before dialling or sending
	numResults
)

var (
	opNames     = [numOps]string{"dial", "send"}
	resultNames = [numResults]string{"ok", "error", "not_sent"}
)

// guardTel are a Guard's tracer and instruments, with their attribute sets
// built once: recording allocates nothing.
type guardTel struct {
	tracer   trace.Tracer
	ops      metric.Int64Counter
	wait     metric.Float64Histogram
	holds    metric.Int64Counter
	name     string
	opOpts   [numOps][numResults][]metric.AddOption
	waitOpts [numOps][]metric.RecordOption
}

func newGuardTel(p telemetry.Providers, name string) *guardTel {
	m := otelx.Meter(p)
	t := &guardTel{tracer: otelx.Tracer(p), name: name}
	t.ops = otelx.Counter(m, metricOps, "{operation}",
		"WebSocket connection attempts and messages sent through a guard, by result")
	t.wait = otelx.Histogram(m, metricWait, "s",
		"Time a connection attempt or a message waited for its turn")
	t.holds = otelx.Counter(m, metricRefusals, "{hold}",
		"Holds placed from the exchange's refusals seen on WebSocket connections")
	for op := range numOps {
		for r := range numResults {
			t.opOpts[op][r] = otelx.AddOpts(attrGuard.String(name), otelx.Op.String(opNames[op]), otelx.Result.String(resultNames[r]))
		}
		t.waitOpts[op] = otelx.RecordOpts(attrGuard.String(name), otelx.Op.String(opNames[op]))
	}
	return t
}

// start starts a span named name only when ctx's span is recording, and
// returns the function that ends it with err's class.
func (t *guardTel) start(ctx context.Context, name string) (context.Context, func(error)) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, func(error) {}
	}
	ctx, span := otelx.Start(ctx, t.tracer, name, trace.WithAttributes(attrGuard.String(t.name)))
	return ctx, func(err error) {
		class := ""
		if err != nil {
			class = errorClass(err)
		}
		otelx.End(span, class)
	}
}

func (t *guardTel) count(ctx context.Context, op, result int) {
	t.ops.Add(ctx, 1, t.opOpts[op][result]...)
}

func (t *guardTel) waited(ctx context.Context, op int, d time.Duration) {
	t.wait.Record(ctx, d.Seconds(), t.waitOpts[op]...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(otelx.Waited.Int64(d.Milliseconds()))
	}
}

// refused counts a hold placed on q (its Label or Name: never For's key).
func (t *guardTel) refused(ctx context.Context, q limiter.Quota) {
	name := q.Label
	if name == "" {
		name = q.Name
	}
	t.holds.Add(ctx, 1, metric.WithAttributes(attrGuard.String(t.name), attrQuota.String(name)))
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("redquota.wsguard.hold", trace.WithAttributes(attrQuota.String(name)))
	}
}

// errorClass is err's class, from a fixed list: an error's text can quote a
// URL with its query or a message.
func errorClass(err error) string {
	if c := otelx.Classify(err, "", errorClasses...); c != "" {
		return c
	}
	var ce *CloseError
	if errors.As(err, &ce) {
		return "closed"
	}
	return "error"
}

// errorClasses are the guard's error classes, in the order they are tested.
var errorClasses = []otelx.Class{
	{Err: limiter.ErrWouldExceedDeadline, Name: "rate_limited"},
	otelx.Canceled,
	otelx.Deadline,
	{Err: limiter.ErrUnavailable, Name: "limiter_unavailable"},
	{Err: errTooManyStreams, Name: "too_many_streams"},
}
