// Package telemetry holds redquota's OpenTelemetry plumbing: the providers each
// package takes through its Options, and a helper that instruments a go-redis
// client with redisotel so that redis command spans nest under redquota's own.
//
// With nothing configured, the global providers are used; when those are not
// set either, every span and metric is a no-op (see BENCHMARKS.md for its cost).
package telemetry

import (
	"errors"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every redquota tracer and meter.
const ScopeName = "github.com/redquota/redquota"

// Providers are the OpenTelemetry providers a package reports to. A nil field
// means the global provider (otel.GetTracerProvider, otel.GetMeterProvider).
type Providers struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// Tracer returns the redquota tracer of p's tracer provider.
func (p Providers) Tracer() trace.Tracer {
	tp := p.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(ScopeName)
}

// Meter returns the redquota meter of p's meter provider.
func (p Providers) Meter() metric.Meter {
	mp := p.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(ScopeName)
}

// InstrumentClient adds redisotel tracing and metrics to a go-redis client
// (*redis.Client, *redis.ClusterClient or *redis.Ring). The db.statement
// attribute is off: a command's arguments can carry cached values, tokens or
// passwords (AUTH), and none of them belongs in a trace.
func InstrumentClient(rdb redis.UniversalClient, p Providers) error {
	topts := []redisotel.TracingOption{redisotel.WithDBStatement(false)}
	if p.TracerProvider != nil {
		topts = append(topts, redisotel.WithTracerProvider(p.TracerProvider))
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

// BreakerState is the value the redquota.*.breaker.state gauges report for a
// circuit breaker's state: 0 closed, 1 half-open, 2 open.
func BreakerState(s gobreaker.State) int64 {
	switch s {
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	}
	return 0
}
