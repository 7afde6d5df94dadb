package limiter

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/redquota/redquota/telemetry"
)

// Telemetry names, documented in the README.
const (
	// Spans.
	spanAllow      = "redquota.limiter.Allow"
	spanAllowQuota = "redquota.limiter.AllowQuota"
	spanReserve    = "redquota.limiter.Reserve"
	spanWait       = "redquota.limiter.Wait"

	// Metrics.
	metricDecisions = "redquota.limiter.decisions"
	metricWait      = "redquota.limiter.wait"
	metricBreaker   = "redquota.limiter.breaker.state"

	// Attributes. Keys (which may be user ids) are never recorded; quota
	// names, limit names and algorithms are configuration and are.
	attrResult     = attribute.Key("redquota.result")
	attrKind       = attribute.Key("redquota.kind")
	attrQuota      = attribute.Key("redquota.quota")
	attrAlgorithm  = attribute.Key("redquota.algorithm")
	attrCost       = attribute.Key("redquota.cost")
	attrAllowed    = attribute.Key("redquota.allowed")
	attrRemaining  = attribute.Key("redquota.remaining")
	attrRetryAfter = attribute.Key("redquota.retry_after_ms")
	attrDeniedBy   = attribute.Key("redquota.denied_by")
	attrWaited     = attribute.Key("redquota.waited_ms")
	attrDegraded   = attribute.Key("redquota.degraded")
)

// Decision results, the values of redquota.result.
const (
	resultAllowed = iota
	resultDenied
	resultFailOpen
	resultLocal
	resultError
	numResults
)

var resultNames = [numResults]string{"allowed", "denied", "fail_open", "local", "error"}

type instruments struct {
	tracer    trace.Tracer
	decisions metric.Int64Counter
	wait      metric.Float64Histogram
	// Attribute options built once per (kind, result): recording a decision allocates nothing.
	addOpts [2][numResults][]metric.AddOption
	recOpts [2][]metric.RecordOption
}

const (
	kindSingle = 0
	kindQuota  = 1
)

var kindNames = [2]string{"single", "quota"}

func (l *Limiter) initTelemetry(p telemetry.Providers) {
	in := &l.tel
	in.tracer = p.Tracer()
	m := p.Meter()
	// Instrument constructors only fail on invalid names; ours are constant
	// and valid, and a nil instrument from a failing provider is replaced by a no-op.
	in.decisions, _ = m.Int64Counter(metricDecisions,
		metric.WithDescription("Limiter decisions by kind (single, quota) and result (allowed, denied, fail_open, local, error)."),
		metric.WithUnit("{decision}"))
	in.wait, _ = m.Float64Histogram(metricWait,
		metric.WithDescription("Time Wait and WaitQuota slept before their turn."),
		metric.WithUnit("s"))
	_, _ = m.Int64ObservableGauge(metricBreaker,
		metric.WithDescription("The Redis circuit breaker: 0 closed, 1 half-open, 2 open (decisions go to the failure policy)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(telemetry.BreakerState(l.breaker.State()))
			return nil
		}))
	for k := range kindNames {
		for r := range resultNames {
			set := attribute.NewSet(attrKind.String(kindNames[k]), attrResult.String(resultNames[r]))
			in.addOpts[k][r] = []metric.AddOption{metric.WithAttributeSet(set)}
		}
		in.recOpts[k] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrKind.String(kindNames[k])))}
	}
}

// count records one decision.
func (l *Limiter) count(ctx context.Context, kind int, r *reply, err error) {
	if l.tel.decisions == nil {
		return
	}
	res := resultError
	switch {
	case err != nil:
	case r.degraded && l.opts.Failure == FailOpen:
		res = resultFailOpen
	case r.degraded:
		res = resultLocal
	case r.granted:
		res = resultAllowed
	default:
		res = resultDenied
	}
	l.tel.decisions.Add(ctx, 1, l.tel.addOpts[kind][res]...)
}

// start begins a span for a decision on p, as a child of the caller's span.
// Without a recording span in ctx it starts none: a decision is a step of
// the caller's work, not a trace of its own, and an untraced caller then pays
// no tracing allocations at all. Attributes are built only when recording.
func (l *Limiter) start(ctx context.Context, name string, kind int, p *plan) (context.Context, trace.Span) {
	if parent := trace.SpanFromContext(ctx); !parent.IsRecording() {
		return ctx, parent
	}
	ctx, span := l.tel.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
	if span.IsRecording() {
		cost := 0
		for _, c := range p.costs[:p.n] {
			cost += c
		}
		attrs := []attribute.KeyValue{attrKind.String(kindNames[kind]), attrCost.Int(cost)}
		if kind == kindQuota {
			attrs = append(attrs, attrQuota.String(p.quota))
		} else {
			attrs = append(attrs, attrAlgorithm.String(p.limits[0].Algorithm.String()))
		}
		span.SetAttributes(attrs...)
	}
	return ctx, span
}

// end finishes a decision span with its outcome.
func end(span trace.Span, p *plan, r *reply, err error) {
	if span.IsRecording() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		} else {
			var rem int64
			if p.n > 0 {
				rem = r.per[0].rem
				for _, x := range r.per[1:p.n] {
					rem = min(rem, x.rem)
				}
			}
			attrs := []attribute.KeyValue{attrAllowed.Bool(r.granted), attrRemaining.Int64(rem), attrDegraded.Bool(r.degraded)}
			if !r.granted {
				attrs = append(attrs, attrRetryAfter.Int64(r.waitUS/1000))
				switch {
				case r.by < 0:
					attrs = append(attrs, attrDeniedBy.String(HoldName))
				case r.by >= 1 && int(r.by) <= p.n && p.names[r.by-1] != "":
					attrs = append(attrs, attrDeniedBy.String(p.names[r.by-1]))
				}
			}
			span.SetAttributes(attrs...)
		}
	}
	if span.IsRecording() {
		span.End()
	}
}

// recordWait records the time a Wait slept.
func (l *Limiter) recordWait(ctx context.Context, kind int, d time.Duration, span trace.Span) {
	if l.tel.wait != nil {
		l.tel.wait.Record(ctx, d.Seconds(), l.tel.recOpts[kind]...)
	}
	if span.IsRecording() {
		span.SetAttributes(attrWaited.Int64(d.Milliseconds()))
	}
}
