package limiter

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/redquota/redquota/internal/oteltest"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
	"github.com/redquota/redquota/telemetry"
)

func decisions(h *oteltest.Harness, t *testing.T) map[string]int64 {
	t.Helper()
	return h.Sums(t, metricDecisions, attrKind, attrResult)
}

func attrsOf(kv []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, a := range kv {
		m[a.Key] = a.Value
	}
	return m
}

// Spans are children of the caller's span, with the redis command span
// (redisotel) nested under the limiter's; metrics count each decision.
func TestTelemetrySpansAndMetrics(t *testing.T) {
	h := oteltest.New()
	srv := redistest.Shared(t)
	c := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	defer c.Close()
	// Preload, so no decision needs a NOSCRIPT round trip (that would be a second command span).
	if err := script.Load(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := telemetry.InstrumentClient(c, h.Providers); err != nil {
		t.Fatal(err)
	}
	lim := New(c, Options{Prefix: redistest.NewPrefix(t), Telemetry: h.Providers})
	ctx, parent := h.TP.Tracer("test").Start(context.Background(), "caller")
	q := Quota{Name: "binance", Limits: []NamedLimit{{"weight", Limit{Rate: 10, Period: time.Minute, Burst: 10, Algorithm: FixedWindow}}, {"orders", PerMinute(2)}}}
	for i := 0; i < 3; i++ {
		if _, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 2, "orders": 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lim.Allow(ctx, Key("secret-user-key", PerSecond(5)).Take(1)); err != nil {
		t.Fatal(err)
	}
	if err := lim.Wait(ctx, Key("w", PerSecond(5)).Take(1)); err != nil {
		t.Fatal(err)
	}
	parent.End()

	spans := h.Rec.Ended()
	byID := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byID[s.SpanContext().SpanID().String()] = s
	}
	var quotaSpans, evalUnderLimiter int
	for _, s := range spans {
		switch s.Name() {
		case spanAllowQuota:
			quotaSpans++
			if s.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Fatalf("%s is not a child of the caller's span", s.Name())
			}
			a := attrsOf(s.Attributes())
			if a[attrQuota].AsString() != "binance" || a[attrCost].AsInt64() != 3 || a[attrKind].AsString() != "quota" {
				t.Fatalf("quota span attributes: %v", s.Attributes())
			}
			if quotaSpans == 3 {
				if a[attrAllowed].AsBool() || a[attrDeniedBy].AsString() != "orders" || a[attrRetryAfter].AsInt64() <= 0 {
					t.Fatalf("third quota call should be denied by orders: %v", s.Attributes())
				}
			} else if !a[attrAllowed].AsBool() {
				t.Fatalf("quota call %d denied: %v", quotaSpans, s.Attributes())
			}
		case spanAllow:
			a := attrsOf(s.Attributes())
			if a[attrAlgorithm].AsString() != "gcra" || !a[attrAllowed].AsBool() || a[attrRemaining].AsInt64() != 4 {
				t.Fatalf("allow span attributes: %v", s.Attributes())
			}
		case spanWait:
			if _, ok := attrsOf(s.Attributes())[attrWaited]; !ok {
				t.Fatalf("wait span without %s: %v", attrWaited, s.Attributes())
			}
		default:
			// A redisotel command span: its parent must be one of ours.
			if p, ok := byID[s.Parent().SpanID().String()]; ok && strings.HasPrefix(p.Name(), "redquota.limiter.") {
				evalUnderLimiter++
			}
		}
	}
	if quotaSpans != 3 {
		t.Fatalf("%d AllowQuota spans, want 3", quotaSpans)
	}
	if evalUnderLimiter != 5 {
		t.Fatalf("%d redis command spans nested under limiter spans, want 5 (one per decision)", evalUnderLimiter)
	}
	// No attribute of any span carries a key, a cached value or a password.
	for _, s := range spans {
		for _, a := range s.Attributes() {
			if v := a.Value.Emit(); strings.Contains(v, "secret-user-key") || (strings.Contains(v, "evalsha") || strings.Contains(v, "fcall")) && strings.Contains(v, ":{") {
				t.Fatalf("span %s attribute %s carries a key: %q", s.Name(), a.Key, v)
			}
		}
	}
	got := decisions(h, t)
	want := map[string]int64{"quota/allowed": 2, "quota/denied": 1, "single/allowed": 2}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("decisions %v, want %v", got, want)
		}
	}
}

// A decision that fails marks its span with an error status; fail-open
// answers are counted as such.
func TestTelemetryErrorsAndFailOpen(t *testing.T) {
	h := oteltest.New()
	srv := redistest.Private(t)
	c := srv.Client()
	defer c.Close()
	closed := New(c, Options{Prefix: "e", Telemetry: h.Providers, CoolDown: time.Minute})
	open := New(c, Options{Prefix: "e", Telemetry: h.Providers, Failure: FailOpen, CoolDown: time.Minute})
	srv.Stop()
	ctx, parent := h.TP.Tracer("test").Start(context.Background(), "caller")
	if _, err := closed.Allow(ctx, Key("k", PerSecond(1)).Take(1)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("fail closed: %v", err)
	}
	if r, err := open.Allow(ctx, Key("k", PerSecond(1)).Take(1)); err != nil || !r.Degraded {
		t.Fatalf("fail open: %+v %v", r, err)
	}
	parent.End()
	var errored, degraded bool
	for _, s := range h.Rec.Ended() {
		if s.Name() != spanAllow {
			continue
		}
		if s.Status().Code == codes.Error {
			errored = true
		}
		if attrsOf(s.Attributes())[attrDegraded].AsBool() {
			degraded = true
		}
	}
	if !errored || !degraded {
		t.Fatalf("error status %v, degraded attribute %v", errored, degraded)
	}
	got := decisions(h, t)
	if got["single/error"] != 1 || got["single/fail_open"] != 1 {
		t.Fatalf("decisions %v", got)
	}
}

// Without a recording parent span no limiter span is started (and nothing is
// allocated for tracing).
func TestTelemetryNoParentNoSpan(t *testing.T) {
	h := oteltest.New()
	_, c := redistest.NewMini(t)
	lim := New(c, Options{Telemetry: h.Providers})
	if _, err := lim.Allow(context.Background(), Key("k", PerSecond(1)).Take(1)); err != nil {
		t.Fatal(err)
	}
	if n := len(h.Rec.Ended()); n != 0 {
		t.Fatalf("%d spans without a parent", n)
	}
	if decisions(h, t)["single/allowed"] != 1 {
		t.Fatal("decision not counted")
	}
}

// A quota's Label, not its Name, reaches telemetry: per-user names stay out of traces.
func TestTelemetryQuotaLabel(t *testing.T) {
	h := oteltest.New()
	_, c := redistest.NewMini(t)
	lim := New(c, Options{Telemetry: h.Providers})
	ctx, parent := h.TP.Tracer("test").Start(context.Background(), "caller")
	q := Quota{Name: "api:secret-api-key-123", Label: "api", Limits: []NamedLimit{{"r", PerSecond(5)}}}
	if _, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"r": 1}}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	found := false
	for _, s := range h.Rec.Ended() {
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.Emit(), "secret-api-key") {
				t.Fatalf("span %s carries the quota's name: %v", s.Name(), a)
			}
			if a.Key == attrQuota && a.Value.AsString() == "api" {
				found = true
			}
		}
	}
	if !found {
		t.Fatal("no span recorded the label")
	}
}

// Every decision records each charged limit's used fraction under the quota's
// label and the limit's name (never the key), the highest since the last
// collection; a hold that denies records the time it has left.
func TestTelemetryUsageAndHold(t *testing.T) {
	h := oteltest.New()
	mr, c := redistest.NewMini(t)
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) // Redis TIME stands still: the hold left is exact
	lim := New(c, Options{Prefix: "u", Telemetry: h.Providers})
	ctx := context.Background()
	base := Quota{Name: "binance-ip", Label: "binance", Limits: []NamedLimit{
		{"weight", Limit{Rate: 10, Period: time.Minute, Burst: 10, Algorithm: FixedWindow}}, {"orders", PerMinute(4)}}}
	q := base.For("secret-user-key")
	usage := func() map[string]float64 { return h.Gauges(t, metricUsage, attrQuota, attrLimit) }

	if _, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 7, "orders": 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := lim.Allow(ctx, Key("secret-user-key", PerSecond(5)).Take(1)); err != nil { // a single key: not recorded
		t.Fatal(err)
	}
	// weight: 9 of 10 used; orders: 1 of 4, its latest decision.
	want := map[string]float64{"binance/weight": 0.9, "binance/orders": 0.25}
	got := usage()
	if len(got) != len(want) || math.Abs(got["binance/weight"]-0.9) > 1e-9 || got["binance/orders"] != 0.25 {
		t.Fatalf("usage %v, want %v", got, want)
	}
	if got := usage(); len(got) != 0 {
		t.Fatalf("usage reported again without a decision since: %v", got)
	}
	// A denied decision reports usage too (weight full, nothing charged).
	if r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 2}}); err != nil || r.Allowed {
		t.Fatalf("want a denial: %+v %v", r, err)
	}
	if got := usage(); len(got) != 1 || math.Abs(got["binance/weight"]-0.9) > 1e-9 {
		t.Fatalf("usage after a denial %v, want binance/weight 0.9", got)
	}

	if _, err := lim.Hold(ctx, q, time.Minute, ""); err != nil {
		t.Fatal(err)
	}
	if r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"orders": 1}}); err != nil || r.Allowed || r.DeniedBy != HoldName {
		t.Fatalf("want a denial by the hold: %+v %v", r, err)
	}
	if got := h.Gauges(t, metricHold, attrQuota); len(got) != 1 || got["binance"] != 60 {
		t.Fatalf("hold %v, want binance 60 s", got)
	}
	for _, sm := range h.Collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			for _, s := range oteltest.AttrSets(m.Data) {
				if strings.Contains(s.Encoded(attribute.DefaultEncoder()), "secret-user-key") {
					t.Fatalf("%s carries the key: %v", m.Name, s)
				}
			}
		}
	}
}

// A grant booked in a later window reports no usage for its window limits:
// decide.lua answers them 0 remaining by convention, and here the current
// window is nearly empty (Guard pushed the grant past its end). Its GCRA
// limit, whose remaining is the bucket's, is reported: the booking 5 s ahead
// puts its theoretical arrival time 5 + 15 s ahead, half of the 60 s bucket.
func TestTelemetryUsageBookedAhead(t *testing.T) {
	h := oteltest.New()
	mr, c := redistest.NewMini(t)
	mr.SetTime(time.Date(2026, 1, 1, 0, 0, 55, 0, time.UTC)) // 5 s before the minute's window ends
	lim := New(c, Options{Prefix: "a", Telemetry: h.Providers})
	q := Quota{Name: "q", Guard: 10 * time.Second, Limits: []NamedLimit{
		{"weight", Limit{Rate: 10, Period: time.Minute, Burst: 10, Algorithm: FixedWindow}}, {"orders", PerMinute(4)}}}
	res, err := lim.Reserve(context.Background(), Charge{Quota: q, Cost: Cost{"weight": 1, "orders": 1}})
	if err != nil || !res.OK() || res.Delay() <= 0 {
		t.Fatalf("want a grant booked ahead: %v %v", res, err)
	}
	got := h.Gauges(t, metricUsage, attrQuota, attrLimit)
	if len(got) != 1 || got["q/orders"] != 0.5 {
		t.Fatalf("usage %v, want only q/orders 0.5", got)
	}
}
