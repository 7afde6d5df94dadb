// Package otelx is the OpenTelemetry plumbing every redquota package records
// through (cache, market, limiter, middleware, wsguard): spans started only
// under a recording parent, ended with an error class instead of the error's
// text, metric options built once, instruments made from constant names, the
// breaker gauge, and the attribute keys more than one package records.
//
// What each package records, and under which names, stays in its own
// telemetry.go and in TELEMETRY_NAMES.md.
package otelx

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Attribute keys recorded by more than one package.
const (
	Op         = attribute.Key("redquota.op")
	Result     = attribute.Key("redquota.result")
	ErrorType  = attribute.Key("error.type")
	Quota      = attribute.Key("redquota.quota")
	Hit        = attribute.Key("redquota.hit")
	Found      = attribute.Key("redquota.found")
	Deleted    = attribute.Key("redquota.deleted")
	Waited     = attribute.Key("redquota.waited_ms")
	Cost       = attribute.Key("redquota.cost")
	Allowed    = attribute.Key("redquota.allowed")
	Remaining  = attribute.Key("redquota.remaining")
	RetryAfter = attribute.Key("redquota.retry_after_ms")
	DeniedBy   = attribute.Key("redquota.denied_by")
	Degraded   = attribute.Key("redquota.degraded")
)

// noSpan is the non-recording span of a call without a recording parent.
var noSpan = trace.SpanFromContext(context.Background())

// Start begins an internal span named name as a child of ctx's span. Without
// a recording span in ctx it starts none and returns ctx and a non-recording
// span: a redquota call is a step of its caller's work, not a trace of its
// own, and an untraced caller pays no tracing allocations. Callers set their
// attributes when the span returned is recording, or pass them in opts.
func Start(ctx context.Context, t trace.Tracer, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, noSpan
	}
	return t.Start(ctx, name, append(opts, trace.WithSpanKind(trace.SpanKindInternal))...)
}

// Fail marks span failed with class, an error's class from a fixed list,
// never its text (which can quote a key, a price or a signed URL): the
// error.type attribute and an error status described by class.
func Fail(span trace.Span, class string) {
	span.SetAttributes(ErrorType.String(class))
	span.SetStatus(codes.Error, class)
}

// End sets attrs on span, fails it with class unless class is "", and ends it.
// A span that is not recording is left alone.
func End(span trace.Span, class string, attrs ...attribute.KeyValue) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attrs...)
	if class != "" {
		Fail(span, class)
	}
	span.End()
}

// AddOpts returns the options that add to a counter with exactly the
// attributes kv. Built once per series, they make recording allocate nothing.
func AddOpts(kv ...attribute.KeyValue) []metric.AddOption {
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kv...))}
}

// RecordOpts returns the options that record a histogram value with exactly
// the attributes kv.
func RecordOpts(kv ...attribute.KeyValue) []metric.RecordOption {
	return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(kv...))}
}

// Counter returns m's counter name. Instrument constructors fail only on
// invalid names, and every redquota name is a valid constant; a provider that
// fails anyway gives nil, which callers skip when recording.
func Counter(m metric.Meter, name, unit, desc string) metric.Int64Counter {
	c, _ := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	return c
}

// Histogram returns m's histogram name, as Counter does.
func Histogram(m metric.Meter, name, unit, desc string) metric.Float64Histogram {
	h, _ := m.Float64Histogram(name, metric.WithUnit(unit), metric.WithDescription(desc))
	return h
}

// FloatGauge registers m's gauge name, whose values observe reports at each
// collection.
func FloatGauge(m metric.Meter, name, unit, desc string, observe func(metric.Float64Observer)) {
	_, _ = m.Float64ObservableGauge(name,
		metric.WithDescription(desc),
		metric.WithUnit(unit),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			observe(o)
			return nil
		}))
}

// BreakerGauge registers m's gauge name of a circuit breaker's state, read
// from state at each collection (reach.Path.State): 0 closed, 1 half-open,
// 2 open.
func BreakerGauge(m metric.Meter, name, desc string, state func() int64) {
	_, _ = m.Int64ObservableGauge(name,
		metric.WithDescription(desc),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(state())
			return nil
		}))
}

// A Class names the errors that match Err (errors.Is) in a span's
// error.type.
type Class struct {
	Err  error
	Name string
}

// The classes of a caller's context ending, which every package records.
var (
	Canceled = Class{context.Canceled, "canceled"}
	Deadline = Class{context.DeadlineExceeded, "deadline_exceeded"}
)

// Classify returns the name of the first of classes that err matches, or
// fallback.
func Classify(err error, fallback string, classes ...Class) string {
	for _, c := range classes {
		if errors.Is(err, c.Err) {
			return c.Name
		}
	}
	return fallback
}

// Outcome is a cache or market call's value of redquota.result: hit or miss
// for a read, fetched for a market read that called its fetch function, ok
// for another call that succeeded, error for a call that returned an error.
type Outcome uint8

// The outcomes, in the order of their names.
const (
	OutcomeHit Outcome = iota
	OutcomeMiss
	OutcomeFetched
	OutcomeOK
	OutcomeError
	NumOutcomes
)

var outcomeNames = [NumOutcomes]string{"hit", "miss", "fetched", "ok", "error"}

// Attr returns the outcome's redquota.result attribute.
func (o Outcome) Attr() attribute.KeyValue { return Result.String(outcomeNames[o]) }

// OutcomeOf is OutcomeError for an error, OutcomeOK otherwise.
func OutcomeOf(err error) Outcome {
	if err != nil {
		return OutcomeError
	}
	return OutcomeOK
}

// ReadOutcome is the outcome of a read: error, hit or miss.
func ReadOutcome(found bool, err error) Outcome {
	switch {
	case err != nil:
		return OutcomeError
	case found:
		return OutcomeHit
	}
	return OutcomeMiss
}
