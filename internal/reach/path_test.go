package reach

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// The path's breaker opens after Trip calls in a row that found Redis down,
// then answers ErrOpen (keeping the cause) without calling; calls whose
// caller gave up, and replies about the command itself, never open it.
func TestPathBreaker(t *testing.T) {
	ctx := context.Background()
	p := NewPath(nil, PathOptions{Trip: 3, CoolDown: time.Minute})
	calls := 0
	fail := func(err error) func(context.Context) error {
		return func(context.Context) error { calls++; return err }
	}
	// Not down: a script error, and a caller whose context ended.
	done, cancel := context.WithCancel(ctx)
	cancel()
	for range 5 {
		_ = p.Do(ctx, fail(errors.New("ERR script error")))
		_ = p.Do(done, fail(io.EOF))
	}
	if p.State() != Closed {
		t.Fatalf("state %d after errors that say nothing of Redis", p.State())
	}
	// Shared calls' failures (a batch that failed whole) are Redis down to
	// their callers, and not counted.
	for range 5 {
		if err := p.Do(ctx, fail(Shared(io.EOF))); !errors.Is(err, io.EOF) || !Down(err) {
			t.Fatalf("shared: %v (Down %v)", err, Down(err))
		}
	}
	if p.State() != Closed {
		t.Fatalf("state %d after 5 shared failures", p.State())
	}
	for range 3 {
		if err := p.Do(ctx, fail(io.EOF)); !errors.Is(err, io.EOF) {
			t.Fatalf("Do: %v", err)
		}
	}
	if p.State() != Open {
		t.Fatalf("state %d after 3 failures", p.State())
	}
	n := calls
	err := p.Do(ctx, fail(nil))
	if !errors.Is(err, ErrOpen) || !errors.Is(err, io.EOF) || !Down(err) || calls != n {
		t.Fatalf("open: %v (Down %v), %d calls made", err, Down(err), calls-n)
	}
	// Without a breaker nothing opens.
	q := NewPath(nil, PathOptions{})
	for range 10 {
		_ = q.Do(ctx, fail(io.EOF))
	}
	if err := q.Do(ctx, fail(nil)); err != nil || q.State() != Closed {
		t.Fatalf("no breaker: %v %d", err, q.State())
	}
}
