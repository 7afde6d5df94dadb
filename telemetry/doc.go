// Package telemetry holds what redquota's packages need of OpenTelemetry:
// the providers each takes through its Options (Providers), and a helper
// that instruments a go-redis client with redisotel so that Redis command
// spans nest under redquota's own (InstrumentClient).
//
// Most callers set nothing: with a zero Providers the global providers are
// used, and when those are not set either every span and metric is a no-op
// (see BENCHMARKS.md for its cost). Pass Providers in a package's Options to
// report elsewhere, and call InstrumentClient once on the client the
// limiter and cache share:
//
//	p := telemetry.Providers{TracerProvider: tp, MeterProvider: mp}
//	if err := telemetry.InstrumentClient(rdb, p); err != nil {
//		return err
//	}
//	lim := limiter.New(rdb, limiter.Options{Telemetry: p})
//
// Every tracer and meter is named ScopeName; TELEMETRY_NAMES.md lists the
// spans, metrics and attributes.
package telemetry
