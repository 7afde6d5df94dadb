package main

import (
	"strings"
	"testing"

	"github.com/redquota/redquota/examples/internal/exampletest"
	"github.com/redquota/redquota/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestQuickstart(t *testing.T) {
	// The cluster runs in the demo's and marketcache's tests: each test binary
	// starting its own would cost seconds.
	backends := []exampletest.Backend{exampletest.Mini, exampletest.Real}
	exampletest.Each(t, backends, run, []string{"-rate", "5"}, func(t *testing.T, out string) {
		// A burst of 5, then refusals: 7 calls take far less than the 200 ms
		// one token takes to come back.
		if n := strings.Count(out, "allowed=true"); n != 5 {
			t.Errorf("%d calls allowed, want the burst of 5", n)
		}
		if n := strings.Count(out, "allowed=false"); n != 2 {
			t.Errorf("%d calls refused, want 2", n)
		}
		for _, want := range []string{"wait #3: went after", "refused at once: true"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})
}

func TestQuickstartBadFlag(t *testing.T) {
	if err := run(t.Context(), []string{"-rate", "0"}, &strings.Builder{}); err == nil {
		t.Error("-rate 0 accepted")
	}
}
