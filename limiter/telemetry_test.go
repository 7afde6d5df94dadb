package limiter

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/redquota/redquota/internal/oteltest"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/scripts"
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
	if err := scripts.Load(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := telemetry.InstrumentClient(c, h.Providers); err != nil {
		t.Fatal(err)
	}
	lim := New(c, Options{Prefix: redistest.NewPrefix(t), Telemetry: h.Providers})
	ctx, parent := h.TP.Tracer("test").Start(context.Background(), "caller")
	q := Quota{Name: "binance", Limits: []NamedLimit{{"weight", PerMinute(10).WithAlgorithm(FixedWindow)}, {"orders", PerMinute(2)}}}
	for i := 0; i < 3; i++ {
		if _, err := lim.AllowQuota(ctx, q, Cost{"weight": 2, "orders": 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lim.Allow(ctx, "secret-user-key", PerSecond(5)); err != nil {
		t.Fatal(err)
	}
	if err := lim.Wait(ctx, "w", PerSecond(5)); err != nil {
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
			if v := a.Value.Emit(); strings.Contains(v, "secret-user-key") || strings.Contains(v, "evalsha") && strings.Contains(v, ":{") {
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
	if _, err := closed.Allow(ctx, "k", PerSecond(1)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("fail closed: %v", err)
	}
	if r, err := open.Allow(ctx, "k", PerSecond(1)); err != nil || !r.Degraded {
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
	if _, err := lim.Allow(context.Background(), "k", PerSecond(1)); err != nil {
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
	if _, err := lim.AllowQuota(ctx, q, Cost{"r": 1}); err != nil {
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
