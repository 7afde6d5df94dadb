package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/redquota/redquota/examples/internal/exampletest"
	"github.com/redquota/redquota/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestMarketCache(t *testing.T) {
	all := []exampletest.Backend{exampletest.Mini, exampletest.Real, exampletest.Cluster}
	exampletest.Each(t, all, run, []string{"-duration", "700ms", "-readers", "3"}, func(t *testing.T, out string) {
		line, ok := exampletest.Line(out, "reads ")
		if !ok {
			t.Fatal("no reads line")
		}
		var reads, calls int
		var rate float64
		if _, err := fmt.Sscanf(line, "reads %d, API calls %d, cache hit rate %f%%", &reads, &calls, &rate); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if reads == 0 || calls == 0 || calls >= reads {
			t.Errorf("%d reads made %d API calls: want some, and fewer than reads", reads, calls)
		}
		for _, want := range []string{
			"asked 3, found 2",
			"reading its ticker called the API 1 time(s)",
			"InvalidateExchange(coinbase) deleted 2 values",
			"found true, BUY",
			"InvalidateSignals(momentum) deleted 1",
			"calls this minute: 3",
			"errors 0, breaker closed",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})
}

// With -metrics, the market's and its cache's metrics are served while it runs.
func TestMarketCacheMetrics(t *testing.T) {
	exampletest.Scrape(t, run, []string{"-duration", "2s"},
		"redquota_market_requests_total{", "redquota_cache_requests_total{")
}
