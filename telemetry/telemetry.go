package telemetry

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of every redquota tracer and meter.
const ScopeName = "github.com/redquota/redquota"

// Providers are the OpenTelemetry providers a package reports to. A nil field
// means the global provider (otel.GetTracerProvider, otel.GetMeterProvider).
type Providers struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// UnparentedClientSpans, read by InstrumentClient only, makes it trace
	// commands that have no recording parent span too, each as a root trace
	// of its own. Default false: a command span starts only under a
	// recording parent, as redquota's own spans do, so untraced decisions
	// cost no trace volume.
	UnparentedClientSpans bool
}

// InstrumentClient adds redisotel tracing and metrics to a go-redis client
// (*redis.Client, *redis.ClusterClient or *redis.Ring). The db.statement
// attribute is off: a command's arguments can carry cached values, tokens or
// passwords (AUTH), and none of them belongs in a trace. Command spans start
// only under a recording parent unless p.UnparentedClientSpans. A new
// connection's set-up (HELLO, AUTH, SELECT, CLIENT SETINFO, CLIENT
// MAINT_NOTIFICATIONS) is not traced: go-redis sends it on every dial and
// ignores the errors of servers older than the commands (Redis 7.0 refuses
// CLIENT MAINT_NOTIFICATIONS), which would otherwise be error spans.
// A nil client is an error.
func InstrumentClient(rdb redis.UniversalClient, p Providers) error {
	if isNil(rdb) {
		return errors.New("telemetry: InstrumentClient: nil Redis client")
	}
	tp := p.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if !p.UnparentedClientSpans {
		tp = parentOnly{tp: tp}
	}
	topts := []redisotel.TracingOption{
		redisotel.WithDBStatement(false),
		redisotel.WithTracerProvider(tp),
		redisotel.WithCommandFilter(setup),
		redisotel.WithCommandsFilter(func(cmds []redis.Cmder) bool {
			for _, c := range cmds {
				if !setup(c) {
					return false
				}
			}
			return len(cmds) > 0
		}),
	}
	var mopts []redisotel.MetricsOption
	if p.MeterProvider != nil {
		mopts = append(mopts, redisotel.WithMeterProvider(p.MeterProvider))
	}
	return errors.Join(
		redisotel.InstrumentTracing(rdb, topts...),
		redisotel.InstrumentMetrics(rdb, mopts...),
	)
}

// setup reports whether cmd is one go-redis sends to set up a new connection.
func setup(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "auth", "select", "readonly":
		return true
	case "client":
		args := cmd.Args()
		if len(args) > 1 {
			sub, _ := args[1].(string)
			switch strings.ToLower(sub) {
			case "setinfo", "maint_notifications", "setname":
				return true
			}
		}
	}
	return false
}

// parentOnly is a TracerProvider whose tracers start a span only under a
// recording (or sampled) parent; elsewhere they return a non-recording span and the
// context unchanged.
type parentOnly struct {
	embedded.TracerProvider
	tp trace.TracerProvider
}

func (p parentOnly) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return parentOnlyTracer{t: p.tp.Tracer(name, opts...)}
}

type parentOnlyTracer struct {
	embedded.Tracer
	t trace.Tracer
}

func (t parentOnlyTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	// A sampled span context counts as a parent too: middleware hands the
	// limiter its span's context alone, so that Redis spans nest under it.
	if parent := trace.SpanFromContext(ctx); !parent.IsRecording() && !parent.SpanContext().IsSampled() {
		return ctx, noop.Span{}
	}
	return t.t.Start(ctx, name, opts...)
}

// isNil reports whether rdb is nil, or a nil pointer of a go-redis client
// type (which redisotel would dereference).
func isNil(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case nil:
		return true
	case *redis.Client:
		return c == nil
	case *redis.ClusterClient:
		return c == nil
	case *redis.Ring:
		return c == nil
	}
	return false
}
