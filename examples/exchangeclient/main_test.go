package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redquota/redquota/examples/internal/exampletest"
	"github.com/redquota/redquota/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestExchangeClient(t *testing.T) {
	// The cluster runs in the demo's and marketcache's tests: each test binary
	// starting its own would cost seconds.
	backends := []exampletest.Backend{exampletest.Mini, exampletest.Real}
	exampletest.Each(t, backends, run, []string{"-duration", "1s", "-processes", "2"}, func(t *testing.T, out string) {
		// No window over the exchange's limit, no 429 while the fleet ran flat out.
		windows := 0
		for l := range strings.Lines(out) {
			var hms string
			var used, limit int
			if _, err := fmt.Sscanf(strings.TrimSpace(l), "window %s weight %d/%d", &hms, &used, &limit); err == nil {
				windows++
				if used > limit {
					t.Errorf("window %s: the exchange counted %d > %d", hms, used, limit)
				}
			}
		}
		if windows == 0 {
			t.Error("no window lines")
		}
		if !strings.Contains(out, "429s: 0, 418s: 0") {
			t.Error("the exchange answered 429 or 418 while the fleet ran")
		}
		// An outside spender's 429 holds every process.
		if !strings.Contains(out, "process 1: answered 429; hold placed in Redis: true") {
			t.Error("process 1 did not place a hold after its 429")
		}
		line, ok := exampletest.Line(out, "process 2:")
		if !ok {
			t.Fatal("no line for process 2")
		}
		var ws string
		var code int
		if _, err := fmt.Sscanf(line, "process 2: waited %s for the hold to end, then answered %d", &ws, &code); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		waited, err := time.ParseDuration(ws)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		// The hold lasts Retry-After (1 s) from process 1's 429: process 2 did
		// not go out during it.
		if code != 200 || waited < 500*time.Millisecond {
			t.Errorf("process 2 waited %v and got %d; want it held back, then 200", waited, code)
		}
	})
}

// With -metrics, the processes' Transports and limiters are served while they run.
func TestExchangeClientMetrics(t *testing.T) {
	exampletest.Scrape(t, run, []string{"-duration", "2s"},
		"redquota_middleware_requests_total{", "redquota_limiter_decisions_total{")
}
