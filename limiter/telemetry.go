package limiter

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/redquota/redquota/internal/otelx"
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
	metricUsage     = "redquota.limiter.usage"
	metricHold      = "redquota.limiter.hold"

	// Attributes, besides otelx's redquota.result, .quota, .cost, .allowed,
	// .remaining, .retry_after_ms, .denied_by, .waited_ms and .degraded. Keys
	// (which may be user ids) are never recorded; quota names, limit names
	// and algorithms are configuration and are.
	attrKind      = attribute.Key("redquota.kind")
	attrLimit     = attribute.Key("redquota.limit")
	attrAlgorithm = attribute.Key("redquota.algorithm")
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
	// usage and hold are the gauges' values since the last collection.
	usage, hold gauges
}

// gaugeKey names one gauge series: a quota's label and a limit name ("" for a hold).
type gaugeKey struct{ quota, limit string }

// gauges keeps the highest value recorded per series since the last
// collection. The map is copied on insert (series are configuration: few, and
// added once), so a decision reads it and updates its entry without a lock.
type gauges struct {
	mu sync.Mutex // serialises inserts
	m  atomic.Pointer[map[gaugeKey]*gaugeEntry]
}

type gaugeEntry struct {
	set attribute.Set
	// bits is math.Float64bits(value+1), 0 when nothing was recorded since the
	// last collection. Values are >= 0, so the bits order as the values do.
	bits atomic.Uint64
}

// record raises k's value since the last collection to at least v (v >= 0).
func (g *gauges) record(k gaugeKey, v float64) {
	var e *gaugeEntry
	if m := g.m.Load(); m != nil {
		e = (*m)[k]
	}
	if e == nil {
		e = g.add(k)
	}
	b := math.Float64bits(v + 1)
	for {
		old := e.bits.Load()
		if old >= b || e.bits.CompareAndSwap(old, b) {
			return
		}
	}
}

func (g *gauges) add(k gaugeKey) *gaugeEntry {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := map[gaugeKey]*gaugeEntry{}
	if old := g.m.Load(); old != nil {
		if e := (*old)[k]; e != nil {
			return e
		}
		for k2, e := range *old {
			m[k2] = e
		}
	}
	kv := []attribute.KeyValue{otelx.Quota.String(k.quota)}
	if k.limit != "" {
		kv = append(kv, attrLimit.String(k.limit))
	}
	e := &gaugeEntry{set: attribute.NewSet(kv...)}
	m[k] = e
	g.m.Store(&m)
	return e
}

// observe reports each series recorded since the last collection, and clears
// it: a limit no decision touched since is not reported (its last value
// would go stale as the limit refills).
func (g *gauges) observe(o metric.Float64Observer) {
	m := g.m.Load()
	if m == nil {
		return
	}
	for _, e := range *m {
		if b := e.bits.Swap(0); b != 0 {
			o.Observe(math.Float64frombits(b)-1, metric.WithAttributeSet(e.set))
		}
	}
}

// observe records, from a decision's reply, the used fraction of each limit
// of p's first quota, and the hold left when that quota's hold denied it.
// Single keys (their key is their name) and degraded answers are not
// recorded, nor a window limit of a grant booked ahead: decide.lua answers it
// 0 remaining by convention (the booking is in a later window, or pushed
// there by Guard while the current one still has room).
func (l *Limiter) observe(p *plan, r *reply) {
	if l.tel.decisions == nil || p.quota == "" || r.degraded {
		return
	}
	ahead := r.granted && r.waitUS > 0
	for i := range p.n {
		if a := p.limits[i].Algorithm; p.of[i] != 0 || ahead && (a == FixedWindow || a == SlidingWindowCounter) {
			continue
		}
		m := float64(p.limits[i].most())
		l.tel.usage.record(gaugeKey{p.quota, p.names[i]}, min(max((m-float64(r.per[i].rem))/m, 0), 1))
	}
	if !r.granted && r.by == -1 {
		l.tel.hold.record(gaugeKey{quota: p.quota}, float64(max(r.waitUS, 0))/1e6)
	}
}

const (
	kindSingle = 0
	kindQuota  = 1
)

var kindNames = [2]string{"single", "quota"}

func (l *Limiter) initTelemetry(p telemetry.Providers) {
	in := &l.tel
	in.tracer = otelx.Tracer(p)
	m := otelx.Meter(p)
	in.decisions = otelx.Counter(m, metricDecisions, "{decision}",
		"Limiter decisions by kind (single, quota) and result (allowed, denied, fail_open, local, error).")
	in.wait = otelx.Histogram(m, metricWait, "s",
		"Time Wait slept before its turn.")
	otelx.BreakerGauge(m, metricBreaker,
		"The Redis circuit breaker: 0 closed, 1 half-open, 2 open (decisions go to the failure policy).",
		l.path.State)
	otelx.FloatGauge(m, metricUsage, "1",
		"Highest used fraction ((Max-Remaining)/Max) of a quota's limit in this process's decisions since the last collection; unreported when none.",
		in.usage.observe)
	otelx.FloatGauge(m, metricHold, "s",
		"Longest time left on a quota's hold among the decisions it denied since the last collection; unreported when none.",
		in.hold.observe)
	for k := range kindNames {
		for r := range resultNames {
			in.addOpts[k][r] = otelx.AddOpts(attrKind.String(kindNames[k]), otelx.Result.String(resultNames[r]))
		}
		in.recOpts[k] = otelx.RecordOpts(attrKind.String(kindNames[k]))
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
	ctx, span := otelx.Start(ctx, l.tel.tracer, name)
	if span.IsRecording() {
		cost := 0
		for _, c := range p.costs[:p.n] {
			cost += c
		}
		attrs := []attribute.KeyValue{attrKind.String(kindNames[kind]), otelx.Cost.Int(cost)}
		if kind == kindQuota {
			attrs = append(attrs, otelx.Quota.String(p.quota))
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
			attrs := []attribute.KeyValue{otelx.Allowed.Bool(r.granted), otelx.Remaining.Int64(rem), otelx.Degraded.Bool(r.degraded)}
			if !r.granted {
				attrs = append(attrs, otelx.RetryAfter.Int64(r.waitUS/1000))
				switch {
				case r.by < 0:
					attrs = append(attrs, otelx.DeniedBy.String(HoldName))
				case r.by >= 1 && int(r.by) <= p.n && p.names[r.by-1] != "":
					attrs = append(attrs, otelx.DeniedBy.String(p.names[r.by-1]))
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
		span.SetAttributes(otelx.Waited.Int64(d.Milliseconds()))
	}
}
