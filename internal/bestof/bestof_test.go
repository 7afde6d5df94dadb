package bestof

import "testing"

// A run that falls short is run again, up to Runs times; the first that does
// not ends it, and the test passes.
func TestRunAgainUntilNotShort(t *testing.T) {
	runs := 0
	Run(t, func(t *testing.T, use *Usage) {
		runs++
		if runs < Runs {
			use.Errorf("short on run %d", runs)
		}
	})
	if runs != Runs {
		t.Fatalf("%d runs, want %d", runs, Runs)
	}
	runs = 0
	Run(t, func(t *testing.T, use *Usage) { runs++ })
	if runs != 1 {
		t.Fatalf("a run with no shortfall ran %d times", runs)
	}
}
