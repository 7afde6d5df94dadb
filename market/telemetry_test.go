package market_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

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
	"github.com/redquota/redquota/market"
	"github.com/redquota/redquota/telemetry"
)

func attrsOf(kv []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, a := range kv {
		m[a.Key] = a.Value
	}
	return m
}

const secretPassword = "pw-33b1-SECRET"

// Market spans are children of the caller's span, with the cache spans they
// trigger (and under those the redis command spans) nested beneath; metrics
// count calls by kind, op and result, and API calls by exchange. No symbol,
// endpoint, value, fetch error text or Redis password appears anywhere.
func TestTelemetry(t *testing.T) {
	h := oteltest.New()
	srv := redistest.Shared(t)
	ctx := context.Background()
	admin := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	defer admin.Close()
	user := "telemetry-" + redistest.NewPrefix(t)
	if err := admin.Do(ctx, "ACL", "SETUSER", user, "on", ">"+secretPassword, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	defer admin.Do(ctx, "ACL", "DELUSER", user)
	opts := redistest.ClientOptions(srv.Addr())
	opts.Username, opts.Password = user, secretPassword
	client := redis.NewClient(opts)
	defer client.Close()
	if err := script.Load(ctx, client); err != nil {
		t.Fatal(err)
	}
	if err := telemetry.InstrumentClient(client, h.Providers); err != nil {
		t.Fatal(err)
	}
	m := market.New(cache.New(client, cache.Options{Prefix: redistest.NewPrefix(t), Telemetry: h.Providers}), market.Options{Telemetry: h.Providers})

	ctx, parent := h.TP.Tracer("test").Start(ctx, "caller")
	btc := market.Ticker{Symbol: "BTCUSDT", Price: 45123.25, Time: epoch}
	if err := m.SetTicker(ctx, "binance", "BTCUSDT", btc); err != nil {
		t.Fatal(err)
	}
	if _, found, err := m.GetTicker(ctx, "binance", "BTCUSDT"); !found || err != nil {
		t.Fatal(found, err)
	}
	if _, found, err := market.Get[market.OrderBook](ctx, m, "binance", "ETHUSDT"); found || err != nil {
		t.Fatal(found, err)
	}
	fetch := func(context.Context) (market.Ticker, error) {
		return market.Ticker{Symbol: "SOLUSDT", Price: 98765.5}, nil
	}
	for range 2 {
		if _, err := market.OrFetch(ctx, m, "binance", "SOLUSDT", fetch); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := m.IncrementAPICalls(ctx, "binance", "/api/v3/order-ENDPOINT", 0); err != nil {
			t.Fatal(err)
		}
	}
	failed := errors.New(`Get "https://api.binance.com/api/v3/klines?signature=0f0f&apiKey=KEY-SECRET": EOF`)
	if _, err := market.OrFetch(ctx, m, "binance", "XRPUSDT", func(context.Context) ([]market.Candle, error) { return nil, failed }, "1m"); !errors.Is(err, failed) {
		t.Fatal(err)
	}
	if err := m.SetTicker(ctx, "binance", "ADAUSDT", market.Ticker{Price: math.NaN()}); !errors.Is(err, market.ErrInvalid) {
		t.Fatal(err)
	}
	if n, err := m.InvalidateExchange(ctx, "binance"); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	parent.End()

	spans := h.Rec.Ended()
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s)
	}
	type want struct {
		name, kind, result, errClass string
		cache                        []string // the cache spans directly under it
	}
	wants := []want{
		{"redquota.market.Set", "ticker", "ok", "", []string{"redquota.cache.SetTagged", "redquota.cache.Remember"}},
		{"redquota.market.Get", "ticker", "hit", "", []string{"redquota.cache.Get"}},
		{"redquota.market.Get", "orderbook", "miss", "", []string{"redquota.cache.Get"}},
		{"redquota.market.GetOrFetch", "ticker", "fetched", "", []string{"redquota.cache.GetOrLoad"}},
		{"redquota.market.GetOrFetch", "ticker", "hit", "", []string{"redquota.cache.GetOrLoad"}},
		{"redquota.market.IncrementAPICalls", "api_calls", "ok", "", []string{"redquota.cache.Incr"}},
		{"redquota.market.IncrementAPICalls", "api_calls", "ok", "", []string{"redquota.cache.Incr"}},
		{"redquota.market.GetOrFetch", "candles", "error", "fetch", []string{"redquota.cache.GetOrLoad"}},
		{"redquota.market.Set", "ticker", "error", "invalid_argument", nil},
		{"redquota.market.Invalidate", "exchange", "ok", "", []string{"redquota.cache.InvalidateTags"}},
	}
	var ours []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if strings.HasPrefix(s.Name(), "redquota.market.") {
			ours = append(ours, s)
		}
	}
	if len(ours) != len(wants) {
		t.Fatalf("%d market spans, want %d", len(ours), len(wants))
	}
	for i, w := range wants {
		s := ours[i]
		a := attrsOf(s.Attributes())
		if s.Name() != w.name || a["redquota.market.kind"].AsString() != w.kind || a["redquota.result"].AsString() != w.result ||
			a["redquota.market.exchange"].AsString() != "binance" || a["error.type"].AsString() != w.errClass {
			t.Fatalf("span %d: %s %v, want %+v", i, s.Name(), s.Attributes(), w)
		}
		if s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Fatalf("span %d is not a child of the caller's span", i)
		}
		if (w.errClass != "") != (s.Status().Code == codes.Error) {
			t.Fatalf("span %d: status %v", i, s.Status())
		}
		var got []string
		for _, c := range children[s.SpanContext().SpanID()] {
			got = append(got, c.Name())
			// Each cache span has the redis command spans beneath it.
			if len(children[c.SpanContext().SpanID()]) == 0 {
				t.Fatalf("span %d: %s has no command span under it", i, c.Name())
			}
		}
		if strings.Join(got, ",") != strings.Join(w.cache, ",") {
			t.Fatalf("span %d (%s): children %v, want %v", i, s.Name(), got, w.cache)
		}
	}
	if a := attrsOf(ours[9].Attributes()); a["redquota.deleted"].AsInt64() != 2 {
		t.Fatalf("invalidate: %v", ours[9].Attributes())
	}

	got := h.Sums(t, "redquota.market.requests", "redquota.market.kind", "redquota.op", "redquota.result")
	wantReq := map[string]int64{
		"ticker/set/ok": 1, "ticker/get/hit": 1, "orderbook/get/miss": 1,
		"ticker/get_or_fetch/fetched": 1, "ticker/get_or_fetch/hit": 1, "api_calls/incr/ok": 2,
		"candles/get_or_fetch/error": 1, "ticker/set/error": 1, "exchange/invalidate/ok": 1,
	}
	if len(got) != len(wantReq) {
		t.Fatalf("requests %v, want %v", got, wantReq)
	}
	for k, v := range wantReq {
		if got[k] != v {
			t.Fatalf("requests %v, want %v", got, wantReq)
		}
	}
	if calls := h.Sums(t, "redquota.market.api_calls", "redquota.market.exchange"); calls["binance"] != 2 || len(calls) != 1 {
		t.Fatalf("api calls %v", calls)
	}

	// Nothing carries a symbol, an endpoint, a value, the fetch error's URL or the password.
	secrets := []string{"USDT", "ENDPOINT", "45123", "98765", "signature", "apiKey", "NaN", secretPassword}
	check := func(where, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Fatalf("%s carries %q: %q", where, s, text)
			}
		}
	}
	for _, s := range spans {
		check("span name", s.Name())
		check(s.Name()+" status", s.Status().Description)
		for _, a := range s.Attributes() {
			check(s.Name()+" attribute "+string(a.Key), a.Value.Emit())
		}
		for _, e := range s.Events() {
			for _, a := range e.Attributes {
				check(s.Name()+" event attribute "+string(a.Key), a.Value.Emit())
			}
		}
	}
	var rm metricdata.ResourceMetrics
	if err := h.Reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if sum, ok := mt.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					for _, a := range dp.Attributes.ToSlice() {
						check(mt.Name+" attribute "+string(a.Key), a.Value.Emit())
					}
				}
			}
		}
	}
}

// Without a recording parent span no market span is started; metrics still count.
func TestTelemetryNoParentNoSpan(t *testing.T) {
	h := oteltest.New()
	_, client := redistest.NewMini(t)
	m := market.New(cache.New(client, cache.Options{Telemetry: h.Providers}), market.Options{Telemetry: h.Providers})
	if _, _, err := m.GetTicker(context.Background(), "binance", "BTCUSDT"); err != nil {
		t.Fatal(err)
	}
	if n := len(h.Rec.Ended()); n != 0 {
		t.Fatalf("%d spans without a parent", n)
	}
	if got := h.Sums(t, "redquota.market.requests", "redquota.market.kind", "redquota.result"); got["ticker/miss"] != 1 {
		t.Fatalf("requests %v", got)
	}
}
