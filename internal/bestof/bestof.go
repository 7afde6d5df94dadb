// Package bestof runs a test's fleet run again when it falls short of the
// share of a limit it should use, and only then.
//
// Why a shortfall is run again but a 429 is not: a loaded machine only lowers
// the share of a limit a fleet uses (senders starved of CPU send less: a run
// here once used 53% of a window of Binance's weight while four other test
// suites ran beside it), never raises it, so the best of three runs measures
// what the limiter lets through, and a limiter that holds a fleet back fails
// all three. A refusal is a limit overshot: the run reports it through its
// *testing.T, which fails the test at the first run.
package bestof

import (
	"fmt"
	"strings"
	"testing"
)

// Runs is how many times Run runs a fleet at most.
const Runs = 3

// Usage collects what one run fell short of in the share of a limit it used.
type Usage struct {
	t     *testing.T
	short []string
}

// Helper marks the caller as a test helper.
func (u *Usage) Helper() { u.t.Helper() }

// Logf logs to the test.
func (u *Usage) Logf(format string, args ...any) { u.t.Helper(); u.t.Logf(format, args...) }

// Errorf records a shortfall: the test fails with it if the last run falls
// short too.
func (u *Usage) Errorf(format string, args ...any) {
	u.short = append(u.short, fmt.Sprintf(format, args...))
}

// Run runs run until it records no shortfall, at most Runs times, and fails t
// with the last run's shortfalls. A run that fails t itself ends it.
func Run(t *testing.T, run func(t *testing.T, use *Usage)) {
	t.Helper()
	for i := 1; ; i++ {
		u := &Usage{t: t}
		run(t, u)
		if t.Failed() || len(u.short) == 0 {
			return
		}
		if i == Runs {
			for _, s := range u.short {
				t.Error(s)
			}
			return
		}
		t.Logf("run %d of %d fell short (%s): again", i, Runs, strings.Join(u.short, "; "))
	}
}
