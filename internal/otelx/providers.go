package otelx

// This file gives redquota's packages their tracer and meter from the
// telemetry.Providers a caller passed: what package telemetry no longer
// exports, so that its public API is Providers, InstrumentClient and
// ScopeName.

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/redquota/redquota/telemetry"
)

// Tracer returns the redquota tracer (scope telemetry.ScopeName) of p's
// tracer provider, the global one when p has none.
func Tracer(p telemetry.Providers) trace.Tracer {
	tp := p.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(telemetry.ScopeName)
}

// Meter returns the redquota meter (scope telemetry.ScopeName) of p's meter
// provider, the global one when p has none.
func Meter(p telemetry.Providers) metric.Meter {
	mp := p.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(telemetry.ScopeName)
}
