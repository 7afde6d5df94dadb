package exchanges_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/exchanges"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
	"github.com/redquota/redquota/middleware"
)

// fleetSize is how many independent processes each fleet test runs.
const fleetSize = 8

// proc is one simulated process: its own go-redis client, Limiter and client.
type proc struct {
	id     int
	lim    *limiter.Limiter
	client *http.Client
}

// testTimeout is the Timeout of the limiters tests build for one preset
// behaviour (costs, holds, headers): under -race on a loaded machine a
// decision has taken past the default 250 ms and failed closed.
const testTimeout = 10 * time.Second

// newFleet makes fleetSize processes on the package's shared real Redis, each
// with its own go-redis client, Limiter and http.Client from preset, sharing
// one key prefix (the fleet's state).
func newFleet(t *testing.T, p exchanges.Preset) []*proc {
	t.Helper()
	return newFleetOn(t, p, redistest.Shared(t).Addr(), limiter.Options{})
}

// newFleetOn is newFleet on the Redis at addr, with limiter options opts
// (Prefix and Timeout set here).
func newFleetOn(t *testing.T, p exchanges.Preset, addr string, opts limiter.Options) []*proc {
	t.Helper()
	ps := make([]exchanges.Preset, fleetSize)
	for i := range ps {
		ps[i] = p
	}
	return fleetOf(t, addr, opts, ps...)
}

// newFleetOf is newFleet with a preset per process (process i uses ps[i]).
func newFleetOf(t *testing.T, ps ...exchanges.Preset) []*proc {
	t.Helper()
	return fleetOf(t, redistest.Shared(t).Addr(), limiter.Options{}, ps...)
}

// fleetOf makes a process per preset of ps on the Redis at addr.
func fleetOf(t *testing.T, addr string, opts limiter.Options, ps ...exchanges.Preset) []*proc {
	t.Helper()
	prefix := redistest.NewPrefix(t)
	var fleet []*proc
	for i, p := range ps {
		// Longer socket timeouts than the harness's 2 s: eight clients and
		// dozens of senders under -race on a loaded two-core machine were seen
		// to stall a write past 2 s. A stall delays turns; it cannot let a
		// limit overshoot.
		o := redistest.ClientOptions(addr)
		o.ReadTimeout, o.WriteTimeout = 5*time.Second, 5*time.Second
		rdb := redis.NewClient(o)
		t.Cleanup(func() { _ = rdb.Close() })
		opts.Prefix, opts.Timeout = prefix, 5*time.Second
		lim := limiter.New(rdb, opts)
		base := &http.Transport{MaxIdleConnsPerHost: 64}
		t.Cleanup(base.CloseIdleConnections)
		c, err := p.Client(lim, &http.Client{Transport: base})
		if err != nil {
			t.Fatal(err)
		}
		fleet = append(fleet, &proc{id: i, lim: lim, client: c})
	}
	return fleet
}

// do sends req as p and returns the status and body.
func (p *proc) do(req *http.Request) (int, []byte, error) {
	req.Header.Set("X-Proc", fmt.Sprint(p.id))
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// drive runs senders goroutines per process until stop, each calling send
// with its process, its index and the run's context, and fails the test on
// any error other than the run's end.
func drive(t *testing.T, fleet []*proc, senders int, stop time.Time, send func(ctx context.Context, p *proc, g int) error) {
	t.Helper()
	ctx, cancel := context.WithDeadline(context.Background(), stop)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(fleet)*senders)
	for _, p := range fleet {
		for g := range senders {
			wg.Go(func() {
				for ctx.Err() == nil {
					if err := send(ctx, p, g); err != nil {
						if !expectedStop(err) {
							errs <- err
						}
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("unexpected error: %v", err)
	}
}

// expectedStop reports the errors a sender may meet as the run ends: its turn
// would come after the deadline, or the context ended while it waited or was
// being answered.
func expectedStop(err error) bool {
	return errors.Is(err, middleware.ErrRateLimited) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled)
}

// warm opens n connections per process to url at once, then resets the
// preset's quotas, so that the run starts with warm connections and full
// budgets. A cold connection under -race can take over 100 ms to carry its
// first request, more than a token bucket's reserve absorbs (see
// CoinbaseOptions.BurstReserve). The simulator must not count url.
func warm(t *testing.T, fleet []*proc, p exchanges.Preset, url string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, pr := range fleet {
		for range n {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				if _, _, err := pr.do(req); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	for _, q := range p.Quotas {
		if err := fleet[0].lim.Reset(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
}

// startAfterBoundary sleeps until just after the next multiple of period on
// this machine's clock (which is Redis's too: the server runs here).
func startAfterBoundary(period time.Duration) time.Time {
	now := time.Now()
	time.Sleep(now.Truncate(period).Add(period + 5*time.Millisecond).Sub(now))
	return time.Now()
}

// newMiniLimiterClient is an embedded miniredis and a client of it.
func newMiniLimiterClient(t *testing.T) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	return redistest.NewMini(t)
}
