package telemetry_test

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/telemetry"
)

// One set of providers for the client and the limiter: the limiter's
// decision span nests under the caller's and is the parent of the Redis
// command that made the decision (EVALSHA on miniredis, FCALL on Redis 7);
// the limiter's metrics count it.
func Example() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	spans := tracetest.NewSpanRecorder()
	metrics := sdkmetric.NewManualReader()
	p := telemetry.Providers{
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)),
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics)),
	}

	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	if err := telemetry.InstrumentClient(rdb, p); err != nil {
		fmt.Println(err)
		return
	}
	lim := limiter.New(rdb, limiter.Options{Telemetry: p})
	// redquota's spans, as the client's, start under a recording span only:
	// an untraced decision (this first one, which also loads the scripts)
	// costs no trace.
	if _, err := lim.Allow(context.Background(), limiter.Key("user:42", limiter.PerSecond(10)).Take(1)); err != nil {
		fmt.Println(err)
		return
	}
	ctx, request := p.TracerProvider.Tracer("app").Start(context.Background(), "request")
	if _, err := lim.Allow(ctx, limiter.Key("user:42", limiter.PerSecond(10)).Take(1)); err != nil {
		fmt.Println(err)
		return
	}
	request.End()

	names := map[[8]byte]string{}
	for _, s := range spans.Ended() {
		names[s.SpanContext().SpanID()] = s.Name()
	}
	for _, s := range spans.Ended() {
		if parent, ok := names[s.Parent().SpanID()]; ok {
			fmt.Printf("span %s under %s\n", s.Name(), parent)
		}
	}
	var rm metricdata.ResourceMetrics
	_ = metrics.Collect(context.Background(), &rm)
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name == telemetry.ScopeName {
			for _, m := range sm.Metrics {
				fmt.Println("metric", m.Name)
			}
		}
	}
	// Output:
	// span evalsha under redquota.limiter.Allow
	// span redquota.limiter.Allow under request
	// metric redquota.limiter.decisions
	// metric redquota.limiter.breaker.state
}
