package prom_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/market"
	"github.com/redquota/redquota/middleware"
	"github.com/redquota/redquota/telemetry"
	"github.com/redquota/redquota/telemetry/prom"
	"github.com/redquota/redquota/wsguard"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// series is one expected sample: a name, a subset of its labels, a value.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

func (s series) String() string { return fmt.Sprintf("%s%v", s.name, s.labels) }

// TestScrape serves the endpoint, drives known traffic through a limiter, a
// Transport, a cache and a market, scrapes it, and finds every series
// TELEMETRY_NAMES.md documents, with the counts that traffic must produce.
func TestScrape(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		h, providers, err := prom.New()
		require.NoError(t, err)
		srv := httptest.NewServer(h)
		defer srv.Close()

		// A client of this test's own, so that redisotel's hooks report here only.
		rdb := ownClient(t, b)
		defer rdb.Close()
		require.NoError(t, telemetry.InstrumentClient(rdb, providers))

		// Limiter: a quota of 2 orders a minute asked 3 times (2 allowed, 1
		// denied), one single-key Allow, and one Wait whose turn is immediate.
		lim := limiter.New(rdb, limiter.Options{Prefix: b.Prefix, Telemetry: providers})
		orders := limiter.Quota{Name: "orders", Limits: []limiter.NamedLimit{{Name: "orders", Limit: limiter.PerMinute(2)}}}
		for i, want := range []bool{true, true, false} {
			res, err := lim.Allow(ctx, limiter.Charge{Quota: orders, Cost: limiter.Cost{"orders": 1}})
			require.NoError(t, err)
			require.Equal(t, want, res.Allowed, "AllowQuota #%d", i)
		}
		res, err := lim.Allow(ctx, limiter.Key("single", limiter.PerMinute(10)).Take(1))
		require.NoError(t, err)
		require.True(t, res.Allowed)
		require.NoError(t, lim.Wait(ctx, limiter.Key("waiter", limiter.PerMinute(10)).Take(1)))

		// Transport, failing fast so that nothing waits on the clock: on quota
		// "spot" a 200 whose usage header raises our count, then a 429 whose
		// hold refuses the next request unsent; on quota "ban" a 418.
		exch := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/spot/ok":
				w.Header().Set("X-MBX-USED-WEIGHT-1M", "7")
			case "/spot/busy":
				w.Header().Set("Retry-After", "60")
				w.WriteHeader(http.StatusTooManyRequests)
			case "/ban/me":
				w.Header().Set("Retry-After", "60")
				w.WriteHeader(http.StatusTeapot)
			}
		}))
		defer exch.Close()
		weight := func(name string) limiter.Quota {
			return limiter.Quota{Name: name, Limits: []limiter.NamedLimit{{Name: "weight",
				Limit: limiter.Limit{Rate: 1200, Period: time.Minute, Burst: 1200, Algorithm: limiter.FixedWindow}}}}
		}
		usage := []middleware.UsageParser{exchanges.BinanceUsage(map[string]string{"1m": "weight"}, nil)}
		tr, err := middleware.NewTransport(nil, lim, middleware.Options{FailFast: true, Telemetry: providers},
			middleware.Rule{PathPrefix: "/spot/", Quota: weight("spot"), Cost: limiter.Cost{"weight": 1}, Usage: usage},
			middleware.Rule{PathPrefix: "/ban/", Quota: weight("ban"), Cost: limiter.Cost{"weight": 1}},
		)
		require.NoError(t, err)
		client := &http.Client{Transport: tr}
		for _, c := range []struct {
			path   string
			status int // 0: refused unsent
		}{{"/spot/ok", 200}, {"/spot/busy", 429}, {"/spot/ok", 0}, {"/ban/me", 418}} {
			resp, err := client.Get(exch.URL + c.path)
			if c.status == 0 {
				require.ErrorIs(t, err, middleware.ErrRateLimited, c.path)
				continue
			}
			require.NoError(t, err, c.path)
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			require.Equal(t, c.status, resp.StatusCode, c.path)
		}
		client.CloseIdleConnections()

		// Server side: a Handler allowing one client 1 request a minute, asked twice.
		api := limiter.Quota{Name: "api", Limits: []limiter.NamedLimit{{Name: "rps", Limit: limiter.PerMinute(1)}}}
		hnd := middleware.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), lim,
			func(*http.Request) (string, error) { return "client", nil }, api, providers)
		for _, code := range []int{200, 429} {
			rec := httptest.NewRecorder()
			hnd.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			require.Equal(t, code, rec.Code)
		}

		// Cache: one set, one hit, two misses, one GetOrLoad whose load runs.
		c := cache.New(rdb, cache.Options{Prefix: b.Prefix, Telemetry: providers})
		require.NoError(t, c.Set(ctx, "k", 1, time.Minute))
		var v int
		for _, key := range []string{"k", "absent", "absent"} {
			_, err := c.Get(ctx, key, &v)
			require.NoError(t, err)
		}
		_, err = cache.GetOrLoad(ctx, c, "loaded", time.Minute, func(context.Context) (int, error) { return 2, nil })
		require.NoError(t, err)

		// Market: a ticker fetched through (miss, fetched), then served (hit);
		// two API calls counted.
		m := market.New(c, market.Options{Telemetry: providers})
		fetch := func(context.Context) (market.Ticker, error) { return market.Ticker{Symbol: "BTCUSDT", Price: 1}, nil }
		for range 2 {
			_, err := market.OrFetch(ctx, m, "binance", "BTCUSDT", fetch)
			require.NoError(t, err)
		}
		for range 2 {
			_, err := m.IncrementAPICalls(ctx, "binance", "/api/v3/ticker", time.Minute)
			require.NoError(t, err)
		}

		// A near cache, used for nothing: its gauges and counter are served
		// from the start (0 or 1 each; miniredis has no tracking).
		nc := cache.New(rdb, cache.Options{Prefix: b.Prefix, Telemetry: providers, NearMaxBytes: 1 << 20})
		defer nc.Close()

		// WebSocket guard: one dial charged to a connection quota, one message
		// sent, and a message read that the exchange's refusal turns into a
		// hold on that quota.
		wsConn := limiter.Quota{Name: "wsconn", Limits: []limiter.NamedLimit{{Name: "attempts", Limit: limiter.PerMinute(10)}}}
		g, err := wsguard.New(lim, wsguard.Options{
			Connect:   []limiter.Charge{{Quota: wsConn, Cost: limiter.Cost{"attempts": 1}}},
			Telemetry: providers,
			Refusals: func(s wsguard.Signal) []wsguard.Refusal {
				if string(s.Message) == "slow down" {
					return []wsguard.Refusal{{Hold: time.Minute}}
				}
				return nil
			},
		})
		require.NoError(t, err)
		conn, err := g.Dial(ctx, func(context.Context) (wsguard.Socket, error) { return &saying{msg: "slow down"}, nil })
		require.NoError(t, err)
		require.NoError(t, conn.Send(ctx, []byte("hello")))
		_, err = conn.Read(ctx)
		require.NoError(t, err)
		require.NoError(t, conn.Close(1000, ""))

		body, samples := scrape(t, srv.URL)
		// The Transport's and the Handler's decisions are quota decisions too
		// (spot: 2 allowed, 1 denied by the 429's hold; ban: 1 allowed; api: 1
		// allowed, 1 denied), as is the guard's dial (1 allowed), and the market runs on
		// the cache (its two OrFetch calls are GetOrLoad calls, one loading).
		want := []series{
			{"redquota_limiter_decisions_total", map[string]string{"redquota_kind": "quota", "redquota_result": "allowed"}, 2 + 3 + 1 + 1},
			{"redquota_limiter_decisions_total", map[string]string{"redquota_kind": "quota", "redquota_result": "denied"}, 1 + 1 + 1},
			{"redquota_limiter_decisions_total", map[string]string{"redquota_kind": "single", "redquota_result": "allowed"}, 2},
			{"redquota_limiter_wait_seconds_count", map[string]string{"redquota_kind": "single"}, 1},
			{"redquota_limiter_breaker_state", nil, 0},
			// Usage: orders 2 of 2 and api 1 of 1 used (their denials saw them full).
			{"redquota_limiter_usage_ratio", map[string]string{"redquota_quota": "orders", "redquota_limit": "orders"}, 1},
			{"redquota_limiter_usage_ratio", map[string]string{"redquota_quota": "api", "redquota_limit": "rps"}, 1},

			{"redquota_middleware_requests_total", map[string]string{"redquota_quota": "spot", "redquota_status_class": "2xx"}, 1},
			{"redquota_middleware_requests_total", map[string]string{"redquota_quota": "spot", "redquota_status_class": "4xx"}, 1},
			{"redquota_middleware_requests_total", map[string]string{"redquota_quota": "spot", "redquota_status_class": "not_sent"}, 1},
			{"redquota_middleware_requests_total", map[string]string{"redquota_quota": "ban", "redquota_status_class": "4xx"}, 1},
			{"redquota_middleware_limited_total", map[string]string{"redquota_quota": "spot", "http_response_status_code": "429"}, 1},
			{"redquota_middleware_limited_total", map[string]string{"redquota_quota": "ban", "http_response_status_code": "418"}, 1},
			{"redquota_middleware_header_syncs_total", map[string]string{"redquota_quota": "spot", "redquota_result": "raised"}, 1},
			{"redquota_middleware_wait_seconds_count", map[string]string{"redquota_quota": "spot"}, 3},
			{"redquota_middleware_wait_seconds_count", map[string]string{"redquota_quota": "ban"}, 1},
			{"redquota_middleware_server_decisions_total", map[string]string{"redquota_quota": "api", "redquota_result": "allowed"}, 1},
			{"redquota_middleware_server_decisions_total", map[string]string{"redquota_quota": "api", "redquota_result": "denied"}, 1},

			{"redquota_cache_requests_total", map[string]string{"redquota_op": "get", "redquota_result": "hit"}, 1},
			{"redquota_cache_requests_total", map[string]string{"redquota_op": "get", "redquota_result": "miss"}, 2},
			{"redquota_cache_requests_total", map[string]string{"redquota_op": "set", "redquota_result": "ok"}, 1},
			{"redquota_cache_requests_total", map[string]string{"redquota_op": "get_or_load", "redquota_result": "miss"}, 1 + 1},
			{"redquota_cache_requests_total", map[string]string{"redquota_op": "get_or_load", "redquota_result": "hit"}, 1},
			{"redquota_cache_load_duration_seconds_count", map[string]string{"redquota_result": "ok"}, 1 + 1},
			{"redquota_cache_breaker_state", nil, 0},

			{"redquota_market_requests_total", map[string]string{"redquota_market_kind": "ticker", "redquota_op": "get_or_fetch", "redquota_result": "fetched"}, 1},
			{"redquota_market_requests_total", map[string]string{"redquota_market_kind": "ticker", "redquota_op": "get_or_fetch", "redquota_result": "hit"}, 1},
			{"redquota_market_api_calls_total", map[string]string{"redquota_market_exchange": "binance"}, 2},

			{"redquota_cache_near_events_total", map[string]string{"redquota_event": "hit"}, 0},
			{"redquota_cache_near_bytes", nil, 0},

			{"redquota_wsguard_operations_total", map[string]string{"redquota_guard": "wsguard", "redquota_op": "dial", "redquota_result": "ok"}, 1},
			{"redquota_wsguard_operations_total", map[string]string{"redquota_guard": "wsguard", "redquota_op": "send", "redquota_result": "ok"}, 1},
			{"redquota_wsguard_wait_seconds_count", map[string]string{"redquota_guard": "wsguard", "redquota_op": "dial"}, 1},
			{"redquota_wsguard_holds_total", map[string]string{"redquota_guard": "wsguard", "redquota_quota": "wsconn"}, 1},
		}
		for _, s := range want {
			got, ok := find(t, samples, s)
			if !ok {
				t.Errorf("%v: not in the scrape", s)
				continue
			}
			require.Equal(t, s.value, got, "%v", s)
		}
		// spot's weight, the highest seen: the usage header raised the count to
		// 7, and the 429's request took the 8th of 1200.
		u, ok := find(t, samples, series{name: "redquota_limiter_usage_ratio",
			labels: map[string]string{"redquota_quota": "spot", "redquota_limit": "weight"}})
		require.True(t, ok, "spot's usage")
		require.InDelta(t, 8.0/1200, u, 1e-9)
		// The 429's 60 s hold denied the third spot request: its time left, at
		// most 60 s, and more than 50 s (this test takes well under 10 s).
		hold, ok := find(t, samples, series{name: "redquota_limiter_hold_seconds", labels: map[string]string{"redquota_quota": "spot"}})
		require.True(t, ok, "spot's hold")
		require.InDelta(t, 55, hold, 5)
		// Redis commands, in seconds: how many depends on the backend (a first
		// EVALSHA answered NOSCRIPT and sent again as EVAL, which redisotel
		// counts as an error; cluster redirections), so only their presence is
		// checked, and that each was bucketed.
		n, ok := find(t, samples, series{name: "db_client_connections_use_time_seconds_count",
			labels: map[string]string{"status": "ok", "type": "command"}})
		require.True(t, ok, "redisotel command histogram")
		require.Positive(t, n)
		inf, _ := find(t, samples, series{name: "db_client_connections_use_time_seconds_bucket",
			labels: map[string]string{"status": "ok", "type": "command", "le": "+Inf"}})
		require.Equal(t, n, inf)

		// Every name TELEMETRY_NAMES.md gives in its Prometheus table is
		// served, and every name served is in it (a histogram by its _bucket).
		served := names(samples)
		documented := documentedNames(t)
		for _, name := range documented {
			if !slices.Contains(served, name) {
				t.Errorf("TELEMETRY_NAMES.md documents %s; the scrape has no such series", name)
			}
		}
		for _, name := range served {
			base := name
			for _, suffix := range []string{"_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suffix); ok && slices.Contains(served, b+"_bucket") {
					base = b + "_bucket"
				}
			}
			if !slices.Contains(documented, base) {
				t.Errorf("the scrape has %s; TELEMETRY_NAMES.md's Prometheus table does not list it", name)
			}
		}
		promtoolCheck(t, body)
	})
}

// ownClient returns a new client to b's Redis.
func ownClient(t *testing.T, b redistest.Backend) redis.UniversalClient {
	t.Helper()
	switch {
	case b.Mini != nil:
		return redis.NewClient(&redis.Options{Addr: b.Mini.Addr()})
	case b.Server != nil:
		return redis.NewClient(redistest.ClientOptions(b.Server.Addr()))
	case b.ClusterNodes != nil:
		return redis.NewClusterClient(redistest.ClusterOptions(b.ClusterNodes))
	}
	t.Fatalf("backend %s: no address", b.Kind)
	return nil
}

// scrape GETs url and returns its body and samples (a histogram's as its
// _bucket, _sum and _count samples).
func scrape(t *testing.T, url string) (string, model.Vector) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	dec := expfmt.SampleDecoder{
		Dec:  expfmt.NewDecoder(bytes.NewReader(raw), expfmt.NewFormat(expfmt.TypeTextPlain)),
		Opts: &expfmt.DecodeOptions{Timestamp: model.Now()},
	}
	var all model.Vector
	for {
		var v model.Vector
		if err := dec.Decode(&v); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decoding the scrape: %v\n%s", err, raw)
		}
		all = append(all, v...)
	}
	return string(raw), all
}

// find returns the value of the one sample named s.name whose labels include
// s.labels; it fails the test when several match.
func find(t *testing.T, samples model.Vector, s series) (float64, bool) {
	t.Helper()
	var found []float64
	for _, smp := range samples {
		if string(smp.Metric[model.MetricNameLabel]) != s.name {
			continue
		}
		match := true
		for l, v := range s.labels {
			if string(smp.Metric[model.LabelName(l)]) != v {
				match = false
				break
			}
		}
		if match {
			found = append(found, float64(smp.Value))
		}
	}
	require.LessOrEqual(t, len(found), 1, "%v matches several samples", s)
	if len(found) == 0 {
		return 0, false
	}
	return found[0], true
}

// names returns the sample names of samples, a family's and its histogram
// parts', sorted.
func names(samples model.Vector) []string {
	var out []string
	for _, smp := range samples {
		out = append(out, string(smp.Metric[model.MetricNameLabel]))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// documentedNames reads the Prometheus names of TELEMETRY_NAMES.md's
// "Prometheus names" table (the one headed OpenTelemetry | Prometheus |
// labels): its second column's code spans.
func documentedNames(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "TELEMETRY_NAMES.md"))
	require.NoError(t, err)
	_, table, ok := strings.Cut(string(doc), "\n| OpenTelemetry | Prometheus | labels |\n|---|---|---|\n")
	require.True(t, ok, "TELEMETRY_NAMES.md has no Prometheus names table")
	table, _, _ = strings.Cut(table, "\n\n")
	code := regexp.MustCompile("`([a-z][a-z0-9_:]*)`")
	var names []string
	for line := range strings.SplitSeq(table, "\n") {
		cols := strings.Split(line, "|")
		require.Len(t, cols, 5, "row %q", line)
		for _, m := range code.FindAllStringSubmatch(cols[2], -1) {
			names = append(names, m[1])
		}
	}
	require.NotEmpty(t, names, "no names in TELEMETRY_NAMES.md's Prometheus table")
	return names
}

// promtoolCheck runs promtool check metrics on the scrape when promtool is
// installed (Debian's prometheus package); REDQUOTA_REQUIRE_PROMTOOL=1 makes
// its absence a failure, as CI sets it.
func promtoolCheck(t *testing.T, body string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("REDQUOTA_REQUIRE_PROMTOOL") == "1" {
			t.Fatal("promtool not found: apt-get install -y prometheus")
		}
		t.Log("promtool not found (apt-get install -y prometheus): scrape not linted")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool check metrics:\n%s", out)
}

// The dashboard's and the rules' queries use only series and labels
// TELEMETRY_NAMES.md documents (a histogram's _sum and _count beside its
// documented _bucket), so that a renamed metric cannot leave a panel or an
// alert silently empty.
func TestMonitoringUsesDocumentedNames(t *testing.T) {
	documented := documentedNames(t)
	labels := documentedLabels(t)
	known := func(name string) bool {
		for _, suffix := range []string{"_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && slices.Contains(documented, base+"_bucket") {
				return true
			}
		}
		return slices.Contains(documented, name) || slices.Contains(labels, name)
	}

	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	src, err := os.ReadFile("../../monitoring/grafana/dashboards/redquota.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(src, &dash))
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	rules, err := os.ReadFile("../../monitoring/prometheus/rules.yml")
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(rules), "\n") {
		if l := strings.TrimSpace(line); !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "summary:") && !strings.HasPrefix(l, "description:") {
			exprs = append(exprs, l)
		}
	}
	name := regexp.MustCompile(`\b(?:redquota|db_client|http)_[a-z0-9_]+\b`)
	seen := 0
	for _, e := range exprs {
		for _, n := range name.FindAllString(e, -1) {
			seen++
			if !known(n) {
				t.Errorf("%q: %s is neither a series nor a label TELEMETRY_NAMES.md documents", e, n)
			}
		}
	}
	require.Greater(t, seen, 20)
}

// documentedLabels reads the labels column of TELEMETRY_NAMES.md's
// Prometheus names table.
func documentedLabels(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "TELEMETRY_NAMES.md"))
	require.NoError(t, err)
	_, table, _ := strings.Cut(string(doc), "\n| OpenTelemetry | Prometheus | labels |\n|---|---|---|\n")
	table, _, _ = strings.Cut(table, "\n\n")
	code := regexp.MustCompile("`([a-z][a-z0-9_]*)`")
	var out []string
	for line := range strings.SplitSeq(table, "\n") {
		if cols := strings.Split(line, "|"); len(cols) == 5 {
			for _, m := range code.FindAllStringSubmatch(cols[3], -1) {
				out = append(out, m[1])
			}
		}
	}
	return out
}

// A histogram declared in milliseconds (as redisotel's are) is served in
// seconds, on the seconds buckets; one in seconds keeps its values.
func TestMillisecondsServedAsSeconds(t *testing.T) {
	h, providers, err := prom.New()
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	m := providers.MeterProvider.Meter("test")
	ms, err := m.Float64Histogram("test.ms", metric.WithUnit("ms"))
	require.NoError(t, err)
	ms.Record(t.Context(), 250)
	s, err := m.Float64Histogram("test.s", metric.WithUnit("s"))
	require.NoError(t, err)
	s.Record(t.Context(), 0.003)

	_, samples := scrape(t, srv.URL)
	for _, c := range []series{
		{"test_ms_seconds_sum", nil, 0.25},
		{"test_ms_seconds_count", nil, 1},
		{"test_ms_seconds_bucket", map[string]string{"le": "0.1"}, 0},
		{"test_ms_seconds_bucket", map[string]string{"le": "0.25"}, 1},
		{"test_s_seconds_sum", nil, 0.003},
		{"test_s_seconds_bucket", map[string]string{"le": "0.0025"}, 0},
		{"test_s_seconds_bucket", map[string]string{"le": "0.005"}, 1},
	} {
		got, ok := find(t, samples, c)
		require.True(t, ok, "%v not in the scrape", c)
		require.Equal(t, c.value, got, "%v", c)
	}
	for _, smp := range samples {
		require.NotContains(t, string(smp.Metric[model.MetricNameLabel]), "milliseconds")
	}
}

// saying is a wsguard.Socket whose peer says msg once and then waits for
// the connection to close.
type saying struct {
	msg  string
	said bool
}

func (s *saying) Read(ctx context.Context) ([]byte, error) {
	if !s.said {
		s.said = true
		return []byte(s.msg), nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *saying) Write(context.Context, []byte) error { return nil }

func (s *saying) Close(int, string) error { return nil }
