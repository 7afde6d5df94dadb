package wsguard_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/holdtest"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/wsguard"
)

// newLimiter is one simulated process on backend b: a go-redis client of its
// own and a Limiter, sharing b's key prefix (the fleet's state).
func newLimiter(t *testing.T, b redistest.Backend) *limiter.Limiter {
	t.Helper()
	var c limiter.Client
	timeout := 5 * time.Second
	switch b.Kind {
	case redistest.Mini:
		// No per-call timeout: miniredis runs one script at a time, each
		// taking tens of milliseconds under -race on a loaded machine, and
		// 200 callers queue for seconds. A late reply delays a turn; it
		// cannot let a limit overshoot.
		o := redistest.ClientOptions(b.Mini.Addr())
		o.ReadTimeout, o.WriteTimeout = 60*time.Second, 60*time.Second
		rdb := redis.NewClient(o)
		t.Cleanup(func() { _ = rdb.Close() })
		c, timeout = rdb, -1
	case redistest.Real:
		o := redistest.ClientOptions(b.Server.Addr())
		o.ReadTimeout, o.WriteTimeout = 5*time.Second, 5*time.Second
		rdb := redis.NewClient(o)
		t.Cleanup(func() { _ = rdb.Close() })
		c = rdb
	default:
		rdb := redis.NewClusterClient(redistest.ClusterOptions(b.ClusterNodes))
		t.Cleanup(func() { _ = rdb.Close() })
		c = rdb
	}
	return limiter.New(c, limiter.Options{Prefix: b.Prefix, Timeout: timeout})
}

// fakeSocket is an in-memory connection: Read returns what the test pushes,
// or the close it is given.
type fakeSocket struct {
	in     chan []byte
	closed chan *wsguard.CloseError
	mu     sync.Mutex
	out    [][]byte
	sent   []time.Time
}

func newFakeSocket() *fakeSocket {
	return &fakeSocket{in: make(chan []byte, 16), closed: make(chan *wsguard.CloseError, 1)}
}

func (s *fakeSocket) Read(ctx context.Context) ([]byte, error) {
	select {
	case m := <-s.in:
		return m, nil
	case ce := <-s.closed:
		return nil, ce
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *fakeSocket) Write(_ context.Context, msg []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.out = append(s.out, msg)
	s.sent = append(s.sent, time.Now())
	return nil
}

func (s *fakeSocket) Close(int, string) error { return nil }

func (s *fakeSocket) written() ([][]byte, []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.out...), append([]time.Time(nil), s.sent...)
}

// isHeld reports whether q's instance for key ("" for none) is held now.
func isHeld(t *testing.T, lim *limiter.Limiter, q limiter.Quota, key string) bool {
	t.Helper()
	d, err := holdtest.Left(context.Background(), lim, q.Name, key)
	if err != nil {
		t.Fatal(err)
	}
	return d > 0
}
