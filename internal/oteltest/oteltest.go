// Package oteltest gives tests OpenTelemetry SDK providers that record into
// memory: a tracetest.SpanRecorder for spans and a ManualReader for metrics.
package oteltest

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/redquota/redquota/telemetry"
)

// Harness holds in-memory providers and what they recorded.
type Harness struct {
	Rec       *tracetest.SpanRecorder
	Reader    *sdkmetric.ManualReader
	TP        *sdktrace.TracerProvider
	Providers telemetry.Providers
}

// New returns a harness whose Providers record into Rec and Reader.
func New() *Harness {
	h := &Harness{Rec: tracetest.NewSpanRecorder(), Reader: sdkmetric.NewManualReader()}
	h.TP = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.Rec))
	h.Providers = telemetry.Providers{TracerProvider: h.TP, MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.Reader))}
	return h
}

// Parent starts a recording span standing for the caller's.
func (h *Harness) Parent() (context.Context, trace.Span) {
	return h.TP.Tracer("test").Start(context.Background(), "caller")
}

// Collect reads every metric recorded so far.
func (h *Harness) Collect(t testing.TB) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.Reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

// Sums returns the int64 counter name's data points, keyed by the values of
// attrs joined with "/" (points with equal keys are added).
func (h *Harness) Sums(t testing.TB, name string, attrs ...attribute.Key) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, sm := range h.Collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				t.Fatalf("%s is %T, not an int64 sum", name, m.Data)
			}
			for _, dp := range sum.DataPoints {
				out[key(dp.Attributes, attrs)] += dp.Value
			}
		}
	}
	return out
}

// Gauges returns the float64 gauge name's data points, keyed by the values
// of attrs joined with "/".
func (h *Harness) Gauges(t testing.TB, name string, attrs ...attribute.Key) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, sm := range h.Collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			g, ok := m.Data.(metricdata.Gauge[float64])
			if !ok {
				t.Fatalf("%s is %T, not a float64 gauge", name, m.Data)
			}
			for _, dp := range g.DataPoints {
				out[key(dp.Attributes, attrs)] = dp.Value
			}
		}
	}
	return out
}

// key joins the values of attrs in set with "/".
func key(set attribute.Set, attrs []attribute.Key) string {
	parts := make([]string, len(attrs))
	for i, a := range attrs {
		v, _ := set.Value(a)
		parts[i] = v.Emit()
	}
	return strings.Join(parts, "/")
}

// AttrSets returns the attribute sets of every data point of a metric, for
// any aggregation the SDK produces.
func AttrSets(d metricdata.Aggregation) []attribute.Set {
	var out []attribute.Set
	switch d := d.(type) {
	case metricdata.Sum[int64]:
		for _, dp := range d.DataPoints {
			out = append(out, dp.Attributes)
		}
	case metricdata.Sum[float64]:
		for _, dp := range d.DataPoints {
			out = append(out, dp.Attributes)
		}
	case metricdata.Gauge[int64]:
		for _, dp := range d.DataPoints {
			out = append(out, dp.Attributes)
		}
	case metricdata.Gauge[float64]:
		for _, dp := range d.DataPoints {
			out = append(out, dp.Attributes)
		}
	case metricdata.Histogram[int64]:
		for _, dp := range d.DataPoints {
			out = append(out, dp.Attributes)
		}
	case metricdata.Histogram[float64]:
		for _, dp := range d.DataPoints {
			out = append(out, dp.Attributes)
		}
	}
	return out
}
