package cache_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/oteltest"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
	"github.com/redquota/redquota/telemetry"
)

// requests returns redquota.cache.requests as "op/result" → count.
func requests(h *oteltest.Harness, t *testing.T) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, sm := range h.Collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "redquota.cache.requests" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				o, _ := dp.Attributes.Value("redquota.op")
				r, _ := dp.Attributes.Value("redquota.result")
				out[o.AsString()+"/"+r.AsString()] += dp.Value
			}
		}
	}
	return out
}

// metric returns the named metric's data.
func metric(h *oteltest.Harness, t *testing.T, name string) metricdata.Aggregation {
	t.Helper()
	for _, sm := range h.Collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m.Data
			}
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func attrsOf(kv []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, a := range kv {
		m[a.Key] = a.Value
	}
	return m
}

// ours returns the ended cache spans in the order they ended.
func ours(spans []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if strings.HasPrefix(s.Name(), "redquota.cache.") {
			out = append(out, s)
		}
	}
	return out
}

// instrumented returns a client of the shared real redis-server, its scripts
// loaded (so no call takes a NOSCRIPT round trip, which would be a second
// command span) and instrumented with redisotel on h's providers.
func instrumented(t *testing.T, h *oteltest.Harness, opts *redis.Options) *redis.Client {
	t.Helper()
	srv := redistest.Shared(t)
	if opts == nil {
		opts = redistest.ClientOptions(srv.Addr())
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	if err := script.Load(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := telemetry.InstrumentClient(c, h.Providers); err != nil {
		t.Fatal(err)
	}
	return c
}

// Cache spans are children of the caller's span, with the redis command spans
// (redisotel) nested under them; metrics count each call by op and result.
func TestTelemetrySpansAndMetrics(t *testing.T) {
	h := oteltest.New()
	c := cache.New(instrumented(t, h, nil), cache.Options{Prefix: redistest.NewPrefix(t), Telemetry: h.Providers})
	ctx, parent := h.Parent()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var s string
	must(c.Set(ctx, "a", "1", time.Minute))
	if found, err := c.Get(ctx, "a", &s); !found || err != nil {
		t.Fatal(found, err)
	}
	if found, err := c.Get(ctx, "nothing", &s); found || err != nil {
		t.Fatal(found, err)
	}
	must(c.SetMany(ctx, map[string]any{"b": "2", "c": "3"}, time.Minute))
	if got, err := cache.GetMany[string](ctx, c, []string{"a", "b", "nothing"}); len(got) != 2 || err != nil {
		t.Fatal(got, err)
	}
	g := c.Group("g")
	must(g.Set(ctx, "t", "4", time.Minute, "tag1", "tag2"))
	loads := 0
	load := func(context.Context) (string, error) { loads++; return "5", nil }
	for range 2 {
		if v, err := cache.GetOrLoad(ctx, c, "lo", time.Minute, load); v != "5" || err != nil {
			t.Fatal(v, err)
		}
	}
	if n, err := g.InvalidateTags(ctx, "tag1"); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	parent.End()

	all := h.Rec.Ended()
	spans := ours(all)
	type want struct {
		name  string
		attrs map[string]any
		cmds  int // redis command spans nested under it
	}
	wants := []want{
		{"redquota.cache.Set", map[string]any{"redquota.op": "set", "redquota.result": "ok"}, 1},
		{"redquota.cache.Get", map[string]any{"redquota.op": "get", "redquota.result": "hit", "redquota.hit": true}, 1},
		{"redquota.cache.Get", map[string]any{"redquota.result": "miss", "redquota.hit": false}, 1},
		{"redquota.cache.SetMany", map[string]any{"redquota.op": "set_many", "redquota.keys": int64(2)}, 1},
		{"redquota.cache.GetMany", map[string]any{"redquota.op": "get_many", "redquota.keys": int64(3), "redquota.found": int64(2), "redquota.result": "hit"}, 1},
		{"redquota.cache.SetTagged", map[string]any{"redquota.op": "set_tagged", "redquota.keys": int64(1), "redquota.tags": int64(2)}, 1},
		// A miss: GET, GET again inside the flight, load, SET.
		{"redquota.cache.GetOrLoad", map[string]any{"redquota.op": "get_or_load", "redquota.result": "miss", "redquota.hit": false, "redquota.loaded": true, "redquota.tags": int64(0)}, 3},
		{"redquota.cache.GetOrLoad", map[string]any{"redquota.result": "hit", "redquota.hit": true, "redquota.loaded": false}, 1},
		{"redquota.cache.InvalidateTags", map[string]any{"redquota.op": "invalidate", "redquota.tags": int64(1), "redquota.deleted": int64(1)}, 1},
	}
	if len(spans) != len(wants) {
		t.Fatalf("%d cache spans, want %d", len(spans), len(wants))
	}
	children := map[trace.SpanID][]string{}
	for _, s := range all {
		children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s.Name())
	}
	for i, w := range wants {
		s := spans[i]
		if s.Name() != w.name {
			t.Fatalf("span %d is %s, want %s", i, s.Name(), w.name)
		}
		if s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Fatalf("%s is not a child of the caller's span", s.Name())
		}
		a := attrsOf(s.Attributes())
		for k, v := range w.attrs {
			if got := a[attribute.Key(k)].AsInterface(); got != v {
				t.Fatalf("%s: %s = %v, want %v (%v)", s.Name(), k, got, v, s.Attributes())
			}
		}
		if s.Status().Code == codes.Error {
			t.Fatalf("%s: error status %v", s.Name(), s.Status())
		}
		if got := children[s.SpanContext().SpanID()]; len(got) != w.cmds {
			t.Fatalf("%s: command spans %v nested, want %d", s.Name(), got, w.cmds)
		}
	}
	if loads != 1 {
		t.Fatalf("%d loads", loads)
	}

	got := requests(h, t)
	wantReq := map[string]int64{
		"set/ok": 1, "get/hit": 1, "get/miss": 1, "set_many/ok": 1,
		"get_many/hit": 2, "get_many/miss": 1, "set_tagged/ok": 1,
		"get_or_load/miss": 1, "get_or_load/hit": 1, "invalidate/ok": 1,
	}
	if len(got) != len(wantReq) {
		t.Fatalf("requests %v, want %v", got, wantReq)
	}
	for k, v := range wantReq {
		if got[k] != v {
			t.Fatalf("requests %v, want %v", got, wantReq)
		}
	}
	hist := metric(h, t, "redquota.cache.load.duration").(metricdata.Histogram[float64])
	if len(hist.DataPoints) != 1 || hist.DataPoints[0].Count != 1 {
		t.Fatalf("load durations %+v", hist.DataPoints)
	}
	if r, _ := hist.DataPoints[0].Attributes.Value("redquota.result"); r.AsString() != "ok" {
		t.Fatalf("load result %v", r)
	}
}

// Redis errors mark spans with an error status and class, count as errors,
// open the breaker (reported by its gauge); a load function's error is
// classed as such.
func TestTelemetryErrors(t *testing.T) {
	h := oteltest.New()
	m, client := redistest.NewMini(t)
	c := cache.New(client, cache.Options{Telemetry: h.Providers, BreakerFailures: 2, BreakerCoolDown: time.Hour})
	breaker := func() int64 {
		t.Helper()
		g := metric(h, t, "redquota.cache.breaker.state").(metricdata.Gauge[int64])
		if len(g.DataPoints) != 1 {
			t.Fatalf("breaker gauge %+v", g.DataPoints)
		}
		return g.DataPoints[0].Value
	}
	if b := breaker(); b != 0 {
		t.Fatalf("breaker %d before any error", b)
	}
	m.Close()
	ctx, parent := h.Parent()
	var s string
	for range 3 { // two Redis errors open the breaker; the third call is rejected
		if _, err := c.Get(ctx, "k", &s); err == nil {
			t.Fatal("Get on a closed server succeeded")
		}
	}
	failed := errors.New("exchange down")
	if _, err := cache.GetOrLoad(ctx, c, "k", time.Minute, func(context.Context) (string, error) { return "", failed }); !errors.Is(err, failed) {
		t.Fatal(err)
	}
	// Redis errors never fail the load path.
	if v, err := cache.GetOrLoad(ctx, c, "k2", time.Minute, func(context.Context) (string, error) { return "v", nil }); v != "v" || err != nil {
		t.Fatal(v, err)
	}
	parent.End()
	var classes []string
	for _, sp := range ours(h.Rec.Ended()) {
		a := attrsOf(sp.Attributes())
		class := a["error.type"].AsString()
		classes = append(classes, class)
		if (class != "") != (sp.Status().Code == codes.Error) || sp.Status().Description != class {
			t.Fatalf("%s: status %+v, error.type %q", sp.Name(), sp.Status(), class)
		}
	}
	if got, want := strings.Join(classes, ","), "redis,redis,circuit_open,load,"; got != want {
		t.Fatalf("error classes %s, want %s", got, want)
	}
	if b := breaker(); b != 2 {
		t.Fatalf("breaker %d, want 2 (open)", b)
	}
	got := requests(h, t)
	if got["get/error"] != 3 || got["get_or_load/error"] != 1 || got["get_or_load/miss"] != 1 {
		t.Fatalf("requests %v", got)
	}
	hist := metric(h, t, "redquota.cache.load.duration").(metricdata.Histogram[float64])
	byResult := map[string]uint64{}
	for _, dp := range hist.DataPoints {
		r, _ := dp.Attributes.Value("redquota.result")
		byResult[r.AsString()] += dp.Count
	}
	if byResult["ok"] != 1 || byResult["error"] != 1 {
		t.Fatalf("load durations by result %v", byResult)
	}
}

// Without a recording parent span no cache span is started; metrics still count.
func TestTelemetryNoParentNoSpan(t *testing.T) {
	h := oteltest.New()
	_, client := redistest.NewMini(t)
	c := cache.New(client, cache.Options{Telemetry: h.Providers})
	if err := c.Set(context.Background(), "k", "v", time.Minute); err != nil {
		t.Fatal(err)
	}
	var s string
	if found, err := c.Get(context.Background(), "k", &s); !found || err != nil {
		t.Fatal(found, err)
	}
	if n := len(h.Rec.Ended()); n != 0 {
		t.Fatalf("%d spans without a parent", n)
	}
	if got := requests(h, t); got["set/ok"] != 1 || got["get/hit"] != 1 {
		t.Fatalf("requests %v", got)
	}
}

// No span (its attributes, status, events) or metric attribute carries a key,
// a group, a tag, a cached value, the Redis password, or the text of a load
// function's error (here a URL with its signed query).
func TestTelemetryNoSecrets(t *testing.T) {
	const (
		password = "pw-7c1e-SECRET"
		key      = "user-4711-KEY"
		group    = "acct-0042-GROUP"
		tag      = "tag-9-TAG"
		value    = "VALUE-42.5-CACHED"
		query    = "signature=abcdef0123&apiKey=KEY-SECRET"
	)
	h := oteltest.New()
	srv := redistest.Shared(t)
	admin := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	defer admin.Close()
	user := "telemetry-" + redistest.NewPrefix(t)
	if err := admin.Do(context.Background(), "ACL", "SETUSER", user, "on", ">"+password, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	defer admin.Do(context.Background(), "ACL", "DELUSER", user)
	opts := redistest.ClientOptions(srv.Addr())
	opts.Username, opts.Password = user, password
	c := cache.New(instrumented(t, h, opts), cache.Options{Prefix: redistest.NewPrefix(t), Telemetry: h.Providers})
	g := c.Group(group)

	ctx, parent := h.Parent()
	if err := g.Set(ctx, key, value, time.Minute, tag); err != nil {
		t.Fatal(err)
	}
	var s string
	if found, err := g.Get(ctx, key, &s); !found || err != nil || s != value {
		t.Fatal(found, err, s)
	}
	var n int
	if _, err := g.Get(ctx, key, &n); !errors.Is(err, cache.ErrCodec) { // the error's text quotes the key
		t.Fatal(err)
	}
	if _, err := cache.GetMany[string](ctx, g, []string{key}); err != nil {
		t.Fatal(err)
	}
	loadErr := errors.New(`Get "https://api.example.com/api/v3/order?` + query + `": connection reset`)
	if _, err := cache.GetOrLoad(ctx, g, key+"-2", time.Minute, func(context.Context) (string, error) { return "", loadErr }); !errors.Is(err, loadErr) {
		t.Fatal(err)
	}
	if _, err := g.Get(ctx, strings.Repeat(key, 100), &s); !errors.Is(err, cache.ErrInvalid) {
		t.Fatal(err)
	}
	if _, err := g.InvalidateTags(ctx, tag); err != nil {
		t.Fatal(err)
	}
	parent.End()

	secrets := []string{password, key, group, tag, value, "signature", "apiKey"}
	check := func(where, text string) {
		t.Helper()
		for _, sec := range secrets {
			if strings.Contains(text, sec) {
				t.Fatalf("%s carries %q: %q", where, sec, text)
			}
		}
	}
	spans := h.Rec.Ended()
	if n := len(ours(spans)); n != 7 || len(spans)-n < 7 {
		t.Fatalf("%d cache spans (want 7) and %d others (want the command spans too)", n, len(spans)-n)
	}
	for _, sp := range spans {
		check("span name", sp.Name())
		check(sp.Name()+" status", sp.Status().Description)
		for _, a := range sp.Attributes() {
			check(sp.Name()+" attribute "+string(a.Key), a.Value.Emit())
		}
		for _, e := range sp.Events() {
			check(sp.Name()+" event", e.Name)
			for _, a := range e.Attributes {
				check(sp.Name()+" event attribute "+string(a.Key), a.Value.Emit())
			}
		}
	}
	for _, sm := range h.Collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			for _, set := range oteltest.AttrSets(m.Data) {
				for _, a := range set.ToSlice() {
					check(m.Name+" attribute "+string(a.Key), a.Value.Emit())
				}
			}
		}
	}
}

// BenchmarkGetTelemetry: a Get hit with the global no-op providers (none set),
// with SDK providers but no recording parent span (metrics only), and with a
// recording parent span (a cache span per call, plus metrics). The client is
// not instrumented: this measures the cache's own telemetry.
func BenchmarkGetTelemetry(b *testing.B) {
	h := oteltest.New()
	cases := []struct {
		name string
		opts cache.Options
		ctx  func() context.Context
	}{
		{"none", cache.Options{}, context.Background},
		{"metrics", cache.Options{Telemetry: h.Providers}, context.Background},
		{"traced", cache.Options{Telemetry: h.Providers}, func() context.Context {
			ctx, _ := h.TP.Tracer("bench").Start(context.Background(), "parent")
			return ctx
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			tc.opts.Prefix = redistest.NewPrefix(b)
			c := cache.New(benchClient(b), tc.opts)
			ctx := tc.ctx()
			if err := c.Set(ctx, "btc", benchQuote, time.Hour); err != nil {
				b.Fatal(err)
			}
			var q quote
			b.ReportAllocs()
			for b.Loop() {
				if found, err := c.Get(ctx, "btc", &q); !found || err != nil {
					b.Fatal(found, err)
				}
			}
		})
	}
}
