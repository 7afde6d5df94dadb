// Package prom serves redquota's OpenTelemetry metrics for Prometheus.
//
// New returns the Providers to hand to each package's Options.Telemetry (and to
// telemetry.InstrumentClient) and the http.Handler that serves what they
// record in Prometheus's text format:
//
//	h, providers, err := prom.New()
//	if err != nil {
//		return err
//	}
//	http.Handle("/metrics", h)
//	lim := limiter.New(rdb, limiter.Options{Telemetry: providers})
//
// Names follow the exporter's translation of the OpenTelemetry ones: dots become
// underscores, a unit becomes a suffix (s → _seconds), counters end in _total,
// and curly-brace units ({request}) are dropped; so redquota.cache.requests is
// redquota_cache_requests_total and redquota.limiter.wait is
// redquota_limiter_wait_seconds. redisotel's millisecond histograms are
// recorded in seconds, as Prometheus's conventions want. TELEMETRY_NAMES.md
// lists each metric's two names side by side. Each series carries the
// otel_scope_name label (github.com/redquota/redquota for redquota's own).
//
// This is its own package, not part of package telemetry, so that a program
// that does not serve Prometheus does not link the Prometheus client library.
package prom

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/redquota/redquota/telemetry"
)

// secondsBuckets are the bucket bounds of redquota's histograms in seconds
// (waits, load times): from 100 µs, a cache hit on a near Redis, to 30 s, a
// long hold. OpenTelemetry's default bounds (0, 5, 10, 25 … 10000) suit
// milliseconds and would put every wait under 5 s in one bucket.
var secondsBuckets = []float64{
	0, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
}

// New returns a handler serving, in Prometheus's text format, the metrics
// recorded through the returned Providers, and those Providers. Its
// MeterProvider is a new OpenTelemetry SDK provider read by the Prometheus
// exporter at each scrape; its TracerProvider is nil (the global one), as
// traces do not go to Prometheus. Nothing global is changed: the handler
// serves only this provider's metrics, from a registry of its own.
//
// Each call returns an independent pair; a program calls it once and shares
// the Providers between its limiter, cache, market and Transports, whose
// metrics then add up in one scrape.
func New() (http.Handler, telemetry.Providers, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutTargetInfo())
	if err != nil {
		return nil, telemetry.Providers{}, fmt.Errorf("prom: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(exp),
		sdkmetric.WithView(secondsView, dropView(waitsDuration)),
	)
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	return h, telemetry.Providers{MeterProvider: seconds{mp}}, nil
}

// waitsDuration is redisotel's pool wait total, an Int64 observable in
// nanoseconds: Prometheus wants seconds, and an integer observed in a
// callback cannot be rescaled on its way, so it is not exported (its count,
// db.client.connections.waits, is).
const waitsDuration = "db.client.connections.waits_duration"

// secondsView gives every histogram in seconds the bounds secondsBuckets.
func secondsView(i sdkmetric.Instrument) (sdkmetric.Stream, bool) {
	if i.Kind != sdkmetric.InstrumentKindHistogram || i.Unit != "s" {
		return sdkmetric.Stream{}, false
	}
	return sdkmetric.Stream{
		Name:        i.Name,
		Description: i.Description,
		Unit:        i.Unit,
		Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: secondsBuckets},
	}, true
}

// dropView drops the instrument called name.
func dropView(name string) sdkmetric.View {
	return func(i sdkmetric.Instrument) (sdkmetric.Stream, bool) {
		if i.Name != name {
			return sdkmetric.Stream{}, false
		}
		return sdkmetric.Stream{Name: i.Name, Aggregation: sdkmetric.AggregationDrop{}}, true
	}
}
