package bench

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// TailResult is one contender's fixed-rate run. Latencies are in µs.
type TailResult struct {
	Lib      string  `json:"lib"`
	Rate     int     `json:"rate"`     // decisions per second asked for
	Seconds  float64 `json:"seconds"`  // how long the schedule ran
	Achieved float64 `json:"achieved"` // decisions per second completed
	N        int     `json:"n"`
	Errors   int64   `json:"errors"`
	// Dropped counts scheduled decisions never made: the run is cut off at
	// twice its duration (plus a second) when a contender falls that far behind.
	Dropped int `json:"dropped"`
	// The call: from when a worker started the decision to when it returned.
	P50, P99, P999, Max float64
	// From the decision's scheduled instant to its return: adds the wait for a
	// free worker (and the dispatcher's timer slack), so it shows a backlog
	// when the contender cannot keep up with the rate.
	SchedP50, SchedP99, SchedP999 float64
}

// FixedRate runs c open loop: decisions are scheduled at rate per second for
// d, handed to workers goroutines, whatever the previous ones took.
func FixedRate(ctx context.Context, c Contender, key string, rate int, d time.Duration, workers int) TailResult {
	total := int(float64(rate) * d.Seconds())
	jobs := make(chan time.Time, rate) // up to 1 s of backlog before the dispatcher blocks
	call := make([][]time.Duration, workers)
	sched := make([][]time.Duration, workers)
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(2*d + time.Second)
	for w := range workers {
		call[w] = make([]time.Duration, 0, total/workers*2)
		sched[w] = make([]time.Duration, 0, total/workers*2)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range jobs {
				t0 := time.Now()
				if t0.After(stop) {
					continue
				}
				if err := c.Decide(ctx, key); err != nil {
					errs.Add(1)
				}
				t1 := time.Now()
				call[w] = append(call[w], t1.Sub(t0))
				sched[w] = append(sched[w], t1.Sub(s))
			}
		}()
	}
	interval := time.Second / time.Duration(rate)
	for issued := 0; issued < total && time.Now().Before(stop); {
		due := min(total, int(time.Since(start)/interval)+1)
		for ; issued < due; issued++ {
			jobs <- start.Add(time.Duration(issued) * interval)
		}
		time.Sleep(100 * time.Microsecond)
	}
	close(jobs)
	wg.Wait()
	el := time.Since(start)
	all, allS := slices.Concat(call...), slices.Concat(sched...)
	slices.Sort(all)
	slices.Sort(allS)
	return TailResult{
		Lib: c.Name, Rate: rate, Seconds: d.Seconds(), N: len(all),
		Achieved: float64(len(all)) / el.Seconds(), Errors: errs.Load(), Dropped: total - len(all),
		P50: q(all, 0.5), P99: q(all, 0.99), P999: q(all, 0.999), Max: q(all, 1),
		SchedP50: q(allS, 0.5), SchedP99: q(allS, 0.99), SchedP999: q(allS, 0.999),
	}
}

// q is the p-quantile of sorted, in µs (nearest rank).
func q(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, max(0, int(p*float64(len(sorted))+0.5)-1))
	return float64(sorted[i]) / float64(time.Microsecond)
}
