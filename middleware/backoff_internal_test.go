package middleware

import (
	"testing"
	"time"
)

// The backoff never wraps: RetryBackoff shifted past int64 is the cap, not
// what the shift left of it (2^34+1 ns << 30 wraps to 2^30 ns, about 1 s,
// under a cap of a minute), for every attempt a Transport may make.
func TestBackoffNeverWraps(t *testing.T) {
	base, most := time.Duration(1<<34+1), time.Minute
	tr := newTransport(nil, nil, Options{RetryBackoff: base, MaxRetryBackoff: most})
	for attempt := range 70 {
		hi := most // from attempt 2 on: 4·base is past the cap
		if attempt < 2 {
			hi = base << attempt
		}
		for range 20 {
			if d := tr.backoff(attempt); d < hi/2 || d > hi {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, hi/2, hi)
			}
		}
	}
}
