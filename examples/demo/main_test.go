package main

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redquota/redquota/examples/internal/exampletest"
	"github.com/redquota/redquota/examples/internal/fakeexchange"
	"github.com/redquota/redquota/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// The demo's promise: a fleet sharing one limit through Redis never draws a
// 429 or 418 from the exchange, with or without the cache, the cache answers
// most requests, and on a real Redis the near cache answers reads without it.
func TestDemo(t *testing.T) {
	backends := []exampletest.Backend{exampletest.Mini, exampletest.Cluster}
	args := []string{"-duration", "3s", "-workers", "4"}
	exampletest.Each(t, backends, run, args, func(t *testing.T, out string) {
		for _, want := range []string{"no cache", "market cache", "+ near cache", "done", "go run ./cmd/redquota watch --prefix rqex:demo:"} {
			if !strings.Contains(out, want) {
				t.Errorf("no progress line with %q", want)
			}
		}
		for _, row := range []string{"429s", "418s", "errors"} {
			if cells := cells(t, out, row); len(cells) == 3 && (cells[0] != "0" || cells[1] != "0" || cells[2] != "0") {
				t.Errorf("%s: %v, want 0 in every phase", row, cells)
			}
		}
		req := cells(t, out, "requests")
		calls := cells(t, out, "exchange calls")
		if len(req) == 3 && len(calls) == 3 {
			if atoi(t, req[0]) == 0 || atoi(t, req[1]) == 0 || atoi(t, req[2]) == 0 {
				t.Errorf("requests %v: a phase answered none", req)
			}
			for _, i := range []int{1, 2} {
				if atoi(t, calls[i]) >= atoi(t, req[i]) {
					t.Errorf("with the cache, %s exchange calls for %s requests: the cache saved nothing", calls[i], req[i])
				}
			}
		}
		if hit := cells(t, out, "cache hit rate"); len(hit) == 3 && (hit[0] != "-" || !strings.HasSuffix(hit[1], "%") || !strings.HasSuffix(hit[2], "%")) {
			t.Errorf("cache hit rate %v, want - and two percentages", hit)
		}
		// The near cache: off on miniredis (no CLIENT TRACKING), saving Redis
		// reads on the cluster.
		line, _ := exampletest.Line(out, "Redis reads saved (near)  ")
		saved := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "Redis reads saved (near)"))
		switch {
		case len(saved) < 3 || saved[0] != "-" || saved[1] != "-":
			t.Errorf("Redis reads saved (near): %q, want -, - and the near phase's", saved)
		case strings.HasSuffix(t.Name(), string(exampletest.Mini)):
			if saved[2] != "off*" {
				t.Errorf("near cache on miniredis: %q, want off*", saved[2])
			}
		case saved[2] == "off*" || atoi(t, saved[2]) == 0:
			t.Errorf("near cache saved %q Redis reads, want some", saved[2])
		}
	})
}

func TestDemoBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-duration", "1s"}, {"-workers", "0"}, {"-limit", "1"}, {"-nope"}} {
		if err := run(t.Context(), args, &strings.Builder{}); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// cells returns the cells of the table row labelled label: one per phase.
func cells(t *testing.T, out, label string) []string {
	t.Helper()
	line, ok := exampletest.Line(out, label+"  ")
	if !ok {
		t.Errorf("no %q row in the closing table", label)
		return nil
	}
	c := strings.Fields(strings.TrimSpace(strings.TrimPrefix(line, label)))
	if len(c) != 3 {
		t.Errorf("row %q has cells %q, want 3", label, c)
		return nil
	}
	return c
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Errorf("%q: %v", s, err)
	}
	return n
}

// With -metrics, the fleet's metrics are served while the demo runs: a scrape
// during the run finds the Transports', the cache's and the limiters' series.
func TestDemoMetrics(t *testing.T) {
	exampletest.Scrape(t, run, []string{"-duration", "3s", "-workers", "2"},
		"redquota_middleware_requests_total{", "redquota_cache_requests_total{", "redquota_limiter_decisions_total{",
		"db_client_connections_use_time_seconds_bucket{")
}

// Redis gone in the middle of a run against a real Redis (REDIS_URL): the
// cached phases answer nothing, every request an error. The demo used to
// exit 0, blame the embedded miniredis for the near cache being off, and
// close on "the 0 requests … would have cost 0 weight, 0.0 times …".
func TestDemoRedisGone(t *testing.T) {
	ex := fakeexchange.New(fakeexchange.Options{Limit: 240, Window: time.Second})
	defer ex.Close()
	start := time.Now().Truncate(time.Second)
	boom := errors.New("limiter: redis unavailable (fail closed)")
	rs := []phaseResult{
		{name: "no cache", start: start, elapsed: time.Second, requests: 80, weight: 240},
		{name: "market cache", start: start, elapsed: time.Second, errs: 700, firstErr: boom},
		{name: "+ near cache", start: start, elapsed: time.Second, errs: 700, firstErr: boom, near: true},
	}
	var out strings.Builder
	printTable(&out, ex, rs, false)
	if strings.Contains(out.String(), "miniredis") {
		t.Errorf("on a real Redis the footnote blames miniredis:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "*: the near cache was off: it needs a CLIENT TRACKING connection") {
		t.Errorf("no footnote for the near cache being off:\n%s", out.String())
	}
	if strings.Contains(out.String(), "Without the cache") {
		t.Errorf("a closing line about 0 requests:\n%s", out.String())
	}
	err := verdict(rs)
	if err == nil || !strings.Contains(err.Error(), `phase "market cache" answered no request: 700 errors`) {
		t.Errorf("verdict = %v, want the failed phase", err)
	}
	out.Reset()
	printTable(&out, ex, rs, true)
	if !strings.Contains(out.String(), "miniredis has none") {
		t.Errorf("on the embedded miniredis the footnote says why:\n%s", out.String())
	}
	// A phase with requests answered (and a few errors) is no failure.
	rs[1].requests, rs[2].requests = 500, 500
	if err := verdict(rs); err != nil {
		t.Errorf("verdict = %v for phases that answered", err)
	}
}
