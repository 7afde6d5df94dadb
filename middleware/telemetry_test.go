package middleware_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/oteltest"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
	"github.com/redquota/redquota/telemetry"
)

// Secrets a test sends, which no span or metric may carry.
const (
	secretPassword = "pw-5e2d-SECRET"
	secretToken    = "Bearer tok-91a3-SECRET"
	secretQuery    = "signature=0a1b2c3d4e&apiKey=KEY-7f-SECRET"
	secretPath     = "/api/v3/account-PATH-SECRET"
)

func attrsOf(kv []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, a := range kv {
		m[a.Key] = a.Value
	}
	return m
}

// named returns the ended spans called name, in the order they ended.
func named(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// childrenOf returns the names of the spans whose parent is id.
func childrenOf(spans []sdktrace.ReadOnlySpan, id trace.SpanID) []string {
	var out []string
	for _, s := range spans {
		if s.Parent().SpanID() == id {
			out = append(out, s.Name())
		}
	}
	return out
}

// instrumentedLimiter is a limiter on the shared real redis-server, through a
// client that logs in with a password (an ACL user of its own), has the
// scripts loaded (no NOSCRIPT round trip, so one command span per decision)
// and is instrumented with redisotel on h's providers.
func instrumentedLimiter(t *testing.T, h *oteltest.Harness) *limiter.Limiter {
	t.Helper()
	srv := redistest.Shared(t)
	ctx := context.Background()
	admin := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	defer admin.Close()
	user := "telemetry-" + redistest.NewPrefix(t)
	if err := admin.Do(ctx, "ACL", "SETUSER", user, "on", ">"+secretPassword, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a := redis.NewClient(redistest.ClientOptions(srv.Addr()))
		defer a.Close()
		a.Do(context.Background(), "ACL", "DELUSER", user)
	})
	opts := redistest.ClientOptions(srv.Addr())
	opts.Username, opts.Password = user, secretPassword
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	if err := script.Load(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := telemetry.InstrumentClient(c, h.Providers); err != nil {
		t.Fatal(err)
	}
	return limiter.New(c, limiter.Options{Prefix: redistest.NewPrefix(t), Telemetry: h.Providers})
}

// noSecrets fails if any span (name, attributes, status, events) or metric
// attribute carries one of the test's secrets.
func noSecrets(t *testing.T, h *oteltest.Harness, extra ...string) {
	t.Helper()
	secrets := append([]string{secretPassword, "tok-91a3", "signature", "apiKey", "PATH-SECRET"}, extra...)
	check := func(where, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Fatalf("%s carries %q: %q", where, s, text)
			}
		}
	}
	for _, sp := range h.Rec.Ended() {
		check("span name", sp.Name())
		check(sp.Name()+" status", sp.Status().Description)
		for _, a := range sp.Attributes() {
			check(sp.Name()+" attribute "+string(a.Key), a.Value.Emit())
		}
		for _, e := range sp.Events() {
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

// spy is the Transport's next: it records the span each request carries.
type spy struct {
	mu      sync.Mutex
	parents []trace.SpanID
}

func (s *spy) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.parents = append(s.parents, trace.SpanContextFromContext(req.Context()).SpanID())
	s.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

// A RoundTrip span per request, child of the caller's span, with the
// limiter's span (and its redis command span) and the request sent nested
// under it; metrics count answers by class, 429s, header syncs and waits.
// Neither the URL's path and query, nor the Authorization header, nor the
// Redis password appear anywhere.
func TestTelemetryTransport(t *testing.T) {
	h := oteltest.New()
	lim := instrumentedLimiter(t, h)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/limited") {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.Header().Set("X-MBX-USED-WEIGHT-1M", "50")
	})
	quota := limiter.Quota{Name: "binance", Limits: []limiter.NamedLimit{{Name: "weight", Limit: limiter.Limit{Rate: 1000, Period: time.Minute, Burst: 1000, Algorithm: limiter.FixedWindow}}}}
	next := &spy{}
	tr := newTransport(t, next, lim, middleware.Options{Telemetry: h.Providers, FallbackHold: 50 * time.Millisecond},
		middleware.Rule{Quota: quota, Cost: limiter.Cost{"weight": 2}, Usage: []middleware.UsageParser{exchanges.BinanceUsage(map[string]string{"1m": "weight"}, nil)}})
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	ctx, parent := h.TP.Tracer("test").Start(context.Background(), "caller")
	send := func(base, path string) (int, error) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path+"?"+secretQuery, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", secretToken)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for i, c := range []struct {
		base, path string
		status     int
	}{
		{srv.URL, secretPath, 200},          // the usage header raises our count to 50
		{srv.URL, "/limited", 429},          // holds the quota 50 ms
		{srv.URL, secretPath, 200},          // waits for the hold; the usage header changes nothing
		{dead.URL, secretPath + "/gone", 0}, // no answer: a transport error
	} {
		status, err := send(c.base, c.path)
		if status != c.status || (err != nil) != (c.status == 0) {
			t.Fatalf("request %d: status %d, error %v", i, status, err)
		}
	}
	parent.End()

	spans := h.Rec.Ended()
	rts := named(spans, "redquota.middleware.RoundTrip")
	if len(rts) != 4 {
		t.Fatalf("%d RoundTrip spans, want 4", len(rts))
	}
	var skipped bool
	for i, s := range rts {
		if s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Fatalf("RoundTrip span %d is not a child of the caller's span", i)
		}
		id := s.SpanContext().SpanID()
		if next.parents[i] != id {
			t.Fatalf("request %d was sent without its RoundTrip span in its context", i)
		}
		reserve := named(spans, "redquota.limiter.Reserve")
		var under int
		for _, r := range reserve {
			if r.Parent().SpanID() == id {
				under++
				cmds := childrenOf(spans, r.SpanContext().SpanID())
				// While the 429's hold is in force (request 2), a decision
				// made after the client dialled a new connection (a loaded
				// machine, the registry's writer beside it) also reads the
				// run_id, to find a restart that lost the hold (Options.RestartSpent).
				if i == 2 && slices.Equal(cmds, []string{"fcall", "info"}) {
					cmds = cmds[:1]
				}
				if len(cmds) != 1 || cmds[0] != "fcall" {
					t.Fatalf("limiter span of request %d has command spans %v, want [fcall]", i, cmds)
				}
			}
		}
		if under != 1 {
			t.Fatalf("request %d: %d limiter spans under its RoundTrip span, want 1 (%v)", i, under, childrenOf(spans, id))
		}
		a := attrsOf(s.Attributes())
		if a["redquota.quota"].AsString() != "binance" || a["redquota.rule"].AsString() != `rule 0 (any → quota "binance")` ||
			a["http.request.method"].AsString() != "GET" || a["server.address"].AsString() != "127.0.0.1" || a["redquota.cost"].AsInt64() != 2 {
			t.Fatalf("request %d: attributes %v", i, s.Attributes())
		}
		switch i {
		case 0:
			skipped = !a["redquota.header_sync"].AsBool() // a minute's end between send and answer
			if a["http.response.status_code"].AsInt64() != 200 {
				t.Fatalf("request 0: %v", s.Attributes())
			}
		case 1:
			if a["http.response.status_code"].AsInt64() != 429 || a["redquota.limited_status"].AsInt64() != 429 ||
				a["redquota.limited_answers"].AsInt64() != 1 || a["redquota.hold_ms"].AsInt64() != 50 {
				t.Fatalf("request 1: %v", s.Attributes())
			}
		case 2:
			if a["redquota.waited_ms"].AsInt64() < 20 || a["redquota.header_sync"].AsBool() {
				t.Fatalf("request 2 should wait for the hold and sync nothing: %v", s.Attributes())
			}
			if _, ok := a["redquota.limited_status"]; ok {
				t.Fatalf("request 2: %v", s.Attributes())
			}
		case 3:
			if s.Status().Code != codes.Error || s.Status().Description != "transport" || a["error.type"].AsString() != "transport" {
				t.Fatalf("request 3: status %v, %v", s.Status(), s.Attributes())
			}
		}
		if i < 3 && s.Status().Code == codes.Error {
			t.Fatalf("request %d: status %v", i, s.Status())
		}
	}

	classes := h.Sums(t, "redquota.middleware.requests", "redquota.status_class")
	if classes["2xx"] != 2 || classes["4xx"] != 1 || classes["error"] != 1 || len(classes) != 3 {
		t.Fatalf("requests by class %v", classes)
	}
	if l := h.Sums(t, "redquota.middleware.limited", "http.response.status_code"); l["429"] != 1 || len(l) != 1 {
		t.Fatalf("limited %v", l)
	}
	syncs := h.Sums(t, "redquota.middleware.header_syncs", "redquota.result")
	if !skipped && (syncs["raised"] != 1 || syncs["unchanged"] != 1) {
		t.Fatalf("header syncs %v", syncs)
	}
	for _, sm := range h.Collect(t).ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "redquota.middleware.wait" {
				hist := m.Data.(metricdata.Histogram[float64])
				if len(hist.DataPoints) != 1 || hist.DataPoints[0].Count != 4 || hist.DataPoints[0].Sum < 0.02 {
					t.Fatalf("waits %+v", hist.DataPoints)
				}
			}
		}
	}
	noSecrets(t, h)
}

// A request refused before it is sent is counted as not_sent, and its span has
// the refusal's class as its error status.
func TestTelemetryTransportRefused(t *testing.T) {
	h := oteltest.New()
	_, lim := miniLimiter(t)
	srv := newServer(t, func(http.ResponseWriter, *http.Request) {})
	tr := newTransport(t, nil, lim, middleware.Options{Telemetry: h.Providers, FailFast: true},
		middleware.Rule{Quota: exQuota, Cost: limiter.Cost{"weight": 100}})
	ctx, parent := h.TP.Tracer("test").Start(context.Background(), "caller")
	for i := range 2 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"?"+secretQuery, nil)
		resp, err := tr.RoundTrip(req)
		if i == 0 && err == nil {
			resp.Body.Close()
		} else if i == 1 && !errors.Is(err, middleware.ErrRateLimited) {
			t.Fatalf("second request: %v", err)
		}
	}
	parent.End()
	rts := named(h.Rec.Ended(), "redquota.middleware.RoundTrip")
	if len(rts) != 2 || rts[1].Status().Code != codes.Error || rts[1].Status().Description != "rate_limited" {
		t.Fatalf("spans %v", rts)
	}
	if c := h.Sums(t, "redquota.middleware.requests", "redquota.status_class"); c["2xx"] != 1 || c["not_sent"] != 1 {
		t.Fatalf("requests by class %v", c)
	}
	noSecrets(t, h)
}

// A request no rule matches is counted as unmatched, without a quota, sent
// or (Strict) refused; its URL stays out of telemetry.
func TestTelemetryUnmatched(t *testing.T) {
	h := oteltest.New()
	_, lim := miniLimiter(t)
	srv := newServer(t, func(http.ResponseWriter, *http.Request) {})
	rule := middleware.Rule{Hosts: []string{"api.binance.com"}, Quota: exQuota, Cost: weight1}
	for _, strict := range []bool{false, true} {
		tr := newTransport(t, nil, lim, middleware.Options{Telemetry: h.Providers, Strict: strict}, rule)
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"?"+secretQuery, nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		if strict != errors.Is(err, middleware.ErrInvalid) {
			t.Fatalf("strict %v: %v", strict, err)
		}
	}
	if c := h.Sums(t, "redquota.middleware.requests", "redquota.status_class"); c["unmatched"] != 2 || len(c) != 1 {
		t.Fatalf("requests by class %v", c)
	}
	if c := h.Sums(t, "redquota.middleware.requests", "redquota.quota"); len(c) != 1 || c[""] != 2 {
		t.Fatalf("requests by quota %v: an unmatched request has no quota", c)
	}
	if srv.hits.Load() != 1 {
		t.Fatalf("%d requests sent, want 1 (the strict one is refused)", srv.hits.Load())
	}
	noSecrets(t, h)
}

// A Handler span per decision, child of the server's span, with the Redis
// command span directly under it: the limiter's own span, which would name
// the keyed quota and so the client's key, is not started. Decisions are
// counted by result; the key (here the Authorization header) appears nowhere.
func TestTelemetryHandler(t *testing.T) {
	h := oteltest.New()
	lim := instrumentedLimiter(t, h)
	quota := limiter.Quota{Name: "api", Limits: []limiter.NamedLimit{{Name: "calls", Limit: limiter.PerMinute(2)}}}
	served := 0
	handler := middleware.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { served++ }), lim,
		func(r *http.Request) (string, error) { return r.Header.Get("Authorization"), nil }, quota, h.Providers)

	ctx, parent := h.TP.Tracer("test").Start(context.Background(), "server")
	codesSeen := []int{}
	for range 3 {
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, secretPath+"?"+secretQuery, nil)
		req.Header.Set("Authorization", secretToken)
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, req)
		codesSeen = append(codesSeen, w.Code)
	}
	parent.End()
	if served != 2 || codesSeen[2] != http.StatusTooManyRequests {
		t.Fatalf("served %d, codes %v", served, codesSeen)
	}
	spans := h.Rec.Ended()
	if n := len(named(spans, "redquota.limiter.AllowQuota")); n != 0 {
		t.Fatalf("%d limiter spans: they would carry the key", n)
	}
	hs := named(spans, "redquota.middleware.Handler")
	if len(hs) != 3 {
		t.Fatalf("%d Handler spans, want 3", len(hs))
	}
	for i, s := range hs {
		if s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Fatalf("Handler span %d is not a child of the server's span", i)
		}
		if cmds := childrenOf(spans, s.SpanContext().SpanID()); len(cmds) != 1 || cmds[0] != "fcall" {
			t.Fatalf("Handler span %d has children %v, want [fcall]", i, cmds)
		}
		a := attrsOf(s.Attributes())
		if a["redquota.quota"].AsString() != "api" {
			t.Fatalf("Handler span %d: %v", i, s.Attributes())
		}
		if i < 2 && (a["redquota.result"].AsString() != "allowed" || !a["redquota.allowed"].AsBool() || a["redquota.remaining"].AsInt64() != int64(1-i)) {
			t.Fatalf("Handler span %d: %v", i, s.Attributes())
		}
		if i == 2 && (a["redquota.result"].AsString() != "denied" || a["http.response.status_code"].AsInt64() != 429 ||
			a["redquota.denied_by"].AsString() != "calls" || a["redquota.retry_after_ms"].AsInt64() <= 0) {
			t.Fatalf("Handler span 2: %v", s.Attributes())
		}
	}
	if d := h.Sums(t, "redquota.middleware.server.decisions", "redquota.result"); d["allowed"] != 2 || d["denied"] != 1 || len(d) != 2 {
		t.Fatalf("decisions %v", d)
	}
	noSecrets(t, h, "tok-91a3")
}

// When Redis cannot be reached and the limiter fails closed, the Handler's
// span has an error status and the decision counts as unavailable.
func TestTelemetryHandlerUnavailable(t *testing.T) {
	h := oteltest.New()
	m, c := redistest.NewMini(t)
	lim := limiter.New(c, limiter.Options{CoolDown: time.Minute})
	m.Close()
	handler := middleware.Handler(http.NotFoundHandler(), lim,
		func(*http.Request) (string, error) { return "k", nil }, exQuota, h.Providers)
	ctx, parent := h.TP.Tracer("test").Start(context.Background(), "server")
	w := httptest.NewRecorder()
	handler.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil))
	parent.End()
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", w.Code)
	}
	hs := named(h.Rec.Ended(), "redquota.middleware.Handler")
	if len(hs) != 1 || hs[0].Status().Code != codes.Error || hs[0].Status().Description != "limiter_unavailable" {
		t.Fatalf("spans %v", hs)
	}
	if d := h.Sums(t, "redquota.middleware.server.decisions", "redquota.result"); d["unavailable"] != 1 {
		t.Fatalf("decisions %v", d)
	}
}
