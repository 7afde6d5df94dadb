package wsguard

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

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

	attrGuard     = attribute.Key("redquota.guard")
	attrOp        = attribute.Key("redquota.op")
	attrResult    = attribute.Key("redquota.result")
	attrQuota     = attribute.Key("redquota.quota")
	attrErrorType = attribute.Key("error.type")
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
	m := p.Meter()
	t := &guardTel{tracer: p.Tracer(), name: name}
	// Instrument errors only come from invalid names, which are constants.
	t.ops, _ = m.Int64Counter(metricOps, metric.WithUnit("{operation}"),
		metric.WithDescription("WebSocket connection attempts and messages sent through a guard, by result"))
	t.wait, _ = m.Float64Histogram(metricWait, metric.WithUnit("s"),
		metric.WithDescription("Time a connection attempt or a message waited for its turn"))
	t.holds, _ = m.Int64Counter(metricRefusals, metric.WithUnit("{hold}"),
		metric.WithDescription("Holds placed from the exchange's refusals seen on WebSocket connections"))
	for op := range numOps {
		for r := range numResults {
			t.opOpts[op][r] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
				attrGuard.String(name), attrOp.String(opNames[op]), attrResult.String(resultNames[r])))}
		}
		t.waitOpts[op] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
			attrGuard.String(name), attrOp.String(opNames[op])))}
	}
	return t
}

// start starts a span named name only when ctx's span is recording, and
// returns the function that ends it with err's class.
func (t *guardTel) start(ctx context.Context, name string) (context.Context, func(error)) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, func(error) {}
	}
	ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attrGuard.String(t.name)))
	return ctx, func(err error) {
		if err != nil {
			c := errorClass(err)
			span.SetAttributes(attrErrorType.String(c))
			span.SetStatus(codes.Error, c)
		}
		span.End()
	}
}

func (t *guardTel) count(ctx context.Context, op, result int) {
	t.ops.Add(ctx, 1, t.opOpts[op][result]...)
}

func (t *guardTel) waited(ctx context.Context, op int, d time.Duration) {
	t.wait.Record(ctx, d.Seconds(), t.waitOpts[op]...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attribute.Int64("redquota.waited_ms", d.Milliseconds()))
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
	switch {
	case errors.Is(err, limiter.ErrWouldExceedDeadline):
		return "rate_limited"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	case errors.Is(err, limiter.ErrUnavailable):
		return "limiter_unavailable"
	case errors.Is(err, ErrTooManyStreams):
		return "too_many_streams"
	}
	var ce *CloseError
	if errors.As(err, &ce) {
		return "closed"
	}
	return "error"
}
