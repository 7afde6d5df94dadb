package exchanges

import "time"

// SetClock makes the package read the time from now until the returned
// function restores time.Now.
func SetClock(now func() time.Time) (restore func()) {
	clock = now
	return func() { clock = time.Now }
}
