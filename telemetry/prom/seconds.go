package prom

import (
	"context"

	"go.opentelemetry.io/otel/metric"
)

// seconds is a MeterProvider whose meters turn a float histogram declared in
// milliseconds into one in seconds, its values divided by 1000 as they are
// recorded. redisotel measures its command and dial times in ms, which
// Prometheus's conventions (and promtool check metrics) reject: they want the
// base unit. With it, db.client.connections.use_time is served as
// db_client_connections_use_time_seconds, on the same buckets as redquota's
// own histograms.
type seconds struct{ metric.MeterProvider }

func (p seconds) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return secondsMeter{p.MeterProvider.Meter(name, opts...)}
}

type secondsMeter struct{ metric.Meter }

func (m secondsMeter) Float64Histogram(name string, opts ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	cfg := metric.NewFloat64HistogramConfig(opts...)
	if cfg.Unit() != "ms" {
		return m.Meter.Float64Histogram(name, opts...)
	}
	h, err := m.Meter.Float64Histogram(name, metric.WithDescription(cfg.Description()), metric.WithUnit("s"))
	return msHistogram{h}, err
}

// msHistogram records milliseconds as seconds.
type msHistogram struct{ metric.Float64Histogram }

func (h msHistogram) Record(ctx context.Context, ms float64, opts ...metric.RecordOption) {
	h.Float64Histogram.Record(ctx, ms/1000, opts...)
}
