package wsguard_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/wsguard"
)

// A Send whose turn under the connection's local message limit would come
// after ctx's deadline fails, unsent, with an error wrapping
// limiter.ErrWouldExceedDeadline, as Send documents (and as a turn the
// fleet's quotas refuse does); ctx itself has not ended. One message per
// 1000 s with a burst of 1: the second message's turn is ~1000 s away, far
// past the 10 s deadline however slow the machine.
func TestSendLocalLimitPastDeadline(t *testing.T) {
	g, _ := newMiniGuard(t, wsguard.Options{MessageRate: 0.001})
	s := newFakeSocket()
	c, err := g.Dial(context.Background(), dialer(s))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(context.Background(), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Send(ctx, []byte("{}"))
	if !errors.Is(err, limiter.ErrWouldExceedDeadline) {
		t.Fatalf("second Send: %v, want an error wrapping limiter.ErrWouldExceedDeadline", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Send waited for the deadline: %v", ctx.Err())
	}
	if out, _ := s.written(); len(out) != 1 {
		t.Fatalf("sent %d messages, want 1", len(out))
	}
}
