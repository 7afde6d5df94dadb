package reach

import (
	"context"
	"sync"
	"testing"
	"time"
)

// A function may derive a context from its call's (go-redis does while it
// waits for a connection another call is setting up; so may a user's hook).
// The standard library then watches the call's context from a goroutine of
// its own, which may look at it after the call has ended and its slot was put
// back: a slot whose bound ended it is never reused, and one that is keeps
// answering Value. Calls here end by their 50 µs timeout about half the time,
// while their function's derived context is cancelled at about the same
// moment; with reused ended slots this panicked ("context: internal error:
// missing cancel error") within a few thousand calls.
func TestDerivedContextOutlivesCall(t *testing.T) {
	w := &Watch{free: make(chan *slot, maxIdleSlots)}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5000 {
				_ = w.CallInline(context.Background(), 50*time.Microsecond, func(ctx context.Context) error {
					c, cancel := context.WithCancel(ctx)
					_ = c.Value("k")
					time.Sleep(40 * time.Microsecond)
					cancel()
					return nil
				})
			}
		})
	}
	wg.Wait()
}
