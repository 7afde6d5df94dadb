package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/redquota/redquota/examples/internal/exampletest"
	"github.com/redquota/redquota/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// No window sees more attempts than the limit, through the initial connects
// and the reconnect storm, and none comes during the ban.
func TestWSGuard(t *testing.T) {
	backends := []exampletest.Backend{exampletest.Mini, exampletest.Real}
	exampletest.Each(t, backends, run, []string{"-processes", "3", "-conns", "10"}, func(t *testing.T, out string) {
		windows := 0
		for l := range strings.Lines(out) {
			var hms string
			var n, limit int
			if _, err := fmt.Sscanf(strings.TrimSpace(l), "window %s attempts %d/%d", &hms, &n, &limit); err == nil {
				windows++
				if n > limit {
					t.Errorf("window %s: %d attempts > %d", hms, n, limit)
				}
			}
		}
		if windows < 2 {
			t.Errorf("%d windows: the 60 attempts must spread over several", windows)
		}
		if !strings.Contains(out, "attempts during the ban: 0") {
			t.Error("an attempt came during the ban")
		}
	})
}

// Flags that leave nothing to guard are refused with the rule, before any
// Redis is used: -processes -1 used to panic (makechan: size out of range)
// and 0 to report "0 connections open" as a success.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-processes", "-1"}, {"-processes", "0"}, {"-conns", "0"}, {"-conns", "-3"},
	} {
		var out strings.Builder
		err := run(t.Context(), args, &out)
		if err == nil || !strings.Contains(err.Error(), "need -processes ≥ 1 and -conns ≥ 1") {
			t.Errorf("%v: err = %v, want the flags' rule", args, err)
		}
		if out.Len() != 0 {
			t.Errorf("%v: printed %q before refusing", args, out.String())
		}
	}
}
