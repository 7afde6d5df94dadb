package cache

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/redquota/redquota/internal/otelx"
	"github.com/redquota/redquota/internal/reach"
	"github.com/redquota/redquota/telemetry"
)

// Telemetry names, listed with their attributes in TELEMETRY_NAMES.md.
//
// No span or metric attribute carries a key, a group, a tag's name, a value or
// an error's text: keys and groups may be user ids, and an error's text may
// quote a key or, for a load function, a URL with its query. Errors are
// described by a class (errorClass) instead.
const (
	metricRequests = "redquota.cache.requests"
	metricBreaker  = "redquota.cache.breaker.state"
	metricLoad     = "redquota.cache.load.duration"

	attrHit     = otelx.Hit
	attrFound   = otelx.Found
	attrDeleted = otelx.Deleted
	attrExists  = attribute.Key("redquota.exists")
	attrKeys    = attribute.Key("redquota.keys")
	attrTags    = attribute.Key("redquota.tags")
	attrNames   = attribute.Key("redquota.names")
	attrLoaded  = attribute.Key("redquota.loaded")
	attrShared  = attribute.Key("redquota.shared")
)

// op is a cache operation: a span name and the value of redquota.op.
type op uint8

const (
	opGet op = iota
	opGetMany
	opGetOrLoad
	opExists
	opCount
	opRecall
	opSet
	opSetMany
	opSetTagged
	opInvalidate
	opDelete
	opDeletePattern
	opIncr
	opRemember
	numOps
)

var ops = [numOps]struct{ span, name string }{
	opGet:           {"redquota.cache.Get", "get"},
	opGetMany:       {"redquota.cache.GetMany", "get_many"},
	opGetOrLoad:     {"redquota.cache.GetOrLoad", "get_or_load"},
	opExists:        {"redquota.cache.Exists", "exists"},
	opCount:         {"redquota.cache.Count", "count"},
	opRecall:        {"redquota.cache.Recall", "recall"},
	opSet:           {"redquota.cache.Set", "set"},
	opSetMany:       {"redquota.cache.SetMany", "set_many"},
	opSetTagged:     {"redquota.cache.SetTagged", "set_tagged"},
	opInvalidate:    {"redquota.cache.InvalidateTags", "invalidate"},
	opDelete:        {"redquota.cache.Delete", "delete"},
	opDeletePattern: {"redquota.cache.DeletePattern", "delete_pattern"},
	opIncr:          {"redquota.cache.Incr", "incr"},
	opRemember:      {"redquota.cache.Remember", "remember"},
}

// result is the value of redquota.result: hit or miss for the reads of values
// (get, get_many, get_or_load), ok for every other call that succeeded, error
// for a call that returned an error.
type result = otelx.Outcome

const resultHit, resultMiss, resultOK, resultError = otelx.OutcomeHit, otelx.OutcomeMiss, otelx.OutcomeOK, otelx.OutcomeError

// instruments are a core's tracer and metric instruments, with the attribute
// options of every (op, result) built once: recording allocates nothing.
type instruments struct {
	tracer   trace.Tracer
	requests metric.Int64Counter
	load     metric.Float64Histogram
	addOpts  [numOps][otelx.NumOutcomes][]metric.AddOption
	loadOpts [2][]metric.RecordOption // ok, error
}

func (c *core) initTelemetry(p telemetry.Providers) {
	in := &c.tel
	in.tracer = otelx.Tracer(p)
	m := otelx.Meter(p)
	in.requests = otelx.Counter(m, metricRequests, "{request}",
		"Cache calls by operation and result (hit, miss, ok, error); reads of many keys count each key.")
	in.load = otelx.Histogram(m, metricLoad, "s",
		"Time GetOrLoad's load function took, by result (ok, error).")
	if c.near != nil {
		c.near.initTelemetry(m)
	}
	if c.breaker {
		otelx.BreakerGauge(m, metricBreaker,
			"The cache's Redis circuit breaker: 0 closed, 1 half-open, 2 open (calls fail at once with ErrCircuitOpen).",
			c.path.State)
	}
	for o := range ops {
		for r := range otelx.NumOutcomes {
			in.addOpts[o][r] = otelx.AddOpts(otelx.Op.String(ops[o].name), r.Attr())
		}
	}
	in.loadOpts[0] = otelx.RecordOpts(otelx.Result.String("ok"))
	in.loadOpts[1] = otelx.RecordOpts(otelx.Result.String("error"))
}

// start begins the span of an operation, as a child of the caller's span.
// Without a recording span in ctx it starts none: a cache call is a step of
// the caller's work, not a trace of its own, and an untraced caller pays no
// tracing allocations.
func (c *core) start(ctx context.Context, o op) (context.Context, trace.Span) {
	ctx, span := otelx.Start(ctx, c.tel.tracer, ops[o].span)
	if span.IsRecording() {
		span.SetAttributes(otelx.Op.String(ops[o].name))
	}
	return ctx, span
}

// count adds n to the requests of (o, r).
func (c *core) count(ctx context.Context, o op, r result, n int64) {
	if c.tel.requests != nil && n > 0 {
		c.tel.requests.Add(ctx, n, c.tel.addOpts[o][r]...)
	}
}

// finish counts one call of o and ends its span, with its result and, on an
// error, an error status described by the error's class.
func (c *core) finish(ctx context.Context, span trace.Span, o op, r result, err error) {
	c.count(ctx, o, r, 1)
	end(span, r, err, "")
}

// end ends span with result r, and err described by class (errorClass(err)
// when empty).
func end(span trace.Span, r result, err error, class string) {
	if !span.IsRecording() {
		return
	}
	if err == nil {
		class = ""
	} else if class == "" {
		class = errorClass(err)
	}
	otelx.End(span, class, r.Attr())
}

// resultOf is resultError for an error, resultOK otherwise.
var resultOf = otelx.OutcomeOf

// recordLoad records the time a load function took.
func (c *core) recordLoad(ctx context.Context, d time.Duration, err error) {
	if c.tel.load == nil {
		return
	}
	i := 0
	if err != nil {
		i = 1
	}
	c.tel.load.Record(ctx, d.Seconds(), c.tel.loadOpts[i]...)
}

// errorClass describes err for a span without its text, which can quote a key.
// The redis command span (redisotel) beneath carries a Redis error's detail.
func errorClass(err error) string {
	return otelx.Classify(err, "redis", errorClasses...)
}

// errorClasses are the cache's error classes, in the order they are tested.
var errorClasses = []otelx.Class{
	{Err: ErrCircuitOpen, Name: "circuit_open"},
	otelx.Canceled,
	otelx.Deadline,
	{Err: errDecode, Name: "decode"},
	{Err: errEncode, Name: "encode"},
	{Err: errTooLarge, Name: "value_too_large"},
	{Err: reach.ErrNilClient, Name: "redis"},
	{Err: ErrInvalid, Name: "invalid_argument"},
}
