package limiter

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// Redis restarted without persistence in the middle of a window forgets every
// count: without RestartSpent each limit grants its whole maximum again at
// once. With RestartSpent 1 the limiter sees the run_id change after it
// reconnects and charges every limit it has used as spent, before it answers
// the decision that reconnected (made again after the charge): nothing is
// granted again in the window.
func TestRestartSpent(t *testing.T) {
	ctx := context.Background()
	for _, a := range []Algorithm{GCRA, FixedWindow, SlidingWindow} {
		for _, spent := range []float64{0, 1, 0.5} {
			t.Run(fmt.Sprintf("%v/spent=%v", a, spent), func(t *testing.T) {
				srv := redistest.Private(t)
				c := srv.Client()
				t.Cleanup(func() { _ = c.Close() })
				// A long Timeout: this test counts grants, and a loaded machine
				// (race detector, parallel packages) can stretch a call past
				// the 250 ms default.
				lim := New(c, Options{RestartSpent: spent, Timeout: 5 * time.Second})
				// Per hour: a fixed window is aligned to the clock, and one that
				// turned during the test (a minute's could) would grant again
				// whatever the restart did. Start well clear of the hour's end.
				limit := Limit{Rate: 100, Period: time.Hour, Burst: 100, Algorithm: a}
				if a == FixedWindow {
					if left := time.Until(time.Now().Truncate(time.Hour).Add(time.Hour)); left < time.Minute {
						time.Sleep(left + time.Second)
					}
				}
				q := Quota{Name: "q", Limits: []NamedLimit{{"weight", limit}}}
				for range 100 {
					r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
					require.NoError(t, err)
					require.True(t, r.Allowed)
				}
				srv.Stop()
				require.NoError(t, srv.Start())
				// The first decision after the restart reconnects (a failed
				// attempt on the dead connection may answer under the policy).
				granted := 0
				for {
					r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
					if err == nil {
						if r.Allowed {
							granted++
						}
						break
					}
				}
				if spent > 0 {
					// The check ran before the first decision answered.
					require.EqualValues(t, 1, lim.Stats().Restarts)
				}
				for range 150 {
					r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
					require.NoError(t, err)
					if r.Allowed {
						granted++
					}
				}
				t.Logf("%v RestartSpent=%v: %d of 100 granted again in the window after the restart", a, spent, granted)
				switch spent {
				case 0:
					require.Equal(t, 100, granted, "the restart forgot the window")
				case 1:
					require.Equal(t, 0, granted, "granted on the empty state")
				default:
					require.Equal(t, 50, granted, "half the limit left")
				}
			})
		}
	}
}
