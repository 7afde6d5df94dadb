package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
)

// With auto-pipelining, decisions from many goroutines share round trips and
// stay exact; a SCRIPT FLUSH in the middle (NOSCRIPT inside a batch) costs
// callers nothing: only the affected calls are resent, as EVAL. The same holds
// for coalesced decisions (one script call for many).
func TestAutoPipelineExactAndSurvivesFlush(t *testing.T) {
	t.Run("autopipeline", func(t *testing.T) {
		exactUnderFlush(t, Options{AutoPipeline: true}, Limit{Rate: 1000, Period: time.Hour, Algorithm: FixedWindow})
	})
	t.Run("coalesce", func(t *testing.T) {
		// GCRA (what coalescing applies to), refilling one unit per 86 s.
		exactUnderFlush(t, Options{Coalesce: true}, Every(1000, 24*time.Hour))
	})
}

func exactUnderFlush(t *testing.T, opts Options, limit Limit) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		opts.Prefix = b.Prefix
		// This test is about exact counts while scripts are flushed, not
		// about timeouts: 64 goroutines re-sending the script as EVAL after
		// each flush can take a call past the default 250 ms on a loaded
		// 2-core machine under -race, and a timed-out call is not a grant.
		opts.Timeout = 10 * time.Second
		lim := New(b.Client, opts)
		if opts.AutoPipeline && !lim.AutoPipelined() {
			t.Fatal("auto-pipelining not on")
		}
		if b.Kind == redistest.Real {
			if err := b.Client.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		var granted, errs atomic.Int64
		stop := make(chan struct{})
		go func() { // flush scripts while decisions run
			for {
				select {
				case <-stop:
					return
				case <-time.After(3 * time.Millisecond):
				}
				if cc, ok := b.Client.(*redis.ClusterClient); ok {
					_ = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.ScriptFlush(ctx).Err() })
				} else {
					_ = b.Client.ScriptFlush(ctx).Err()
				}
			}
		}()
		var wg sync.WaitGroup
		for g := 0; g < 64; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 30; i++ {
					r, err := lim.Allow(ctx, "ap", limit)
					if err != nil {
						errs.Add(1)
						t.Log(err)
						continue
					}
					if r.Allowed {
						granted.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		close(stop)
		// 64 × 30 = 1920 attempts on a limit of 1000 per hour: exactly 1000 granted.
		if errs.Load() != 0 || granted.Load() != 1000 {
			t.Fatalf("granted %d (want exactly 1000), %d errors", granted.Load(), errs.Load())
		}
		if b.Kind == redistest.Real {
			// The flushes did hit batches: some calls were resent as EVAL.
			if got := commandCalls(t, b.Client.(*redis.Client))["eval"]; got == 0 {
				t.Fatal("no NOSCRIPT fallback happened; the test did not exercise it")
			}
		}
	})
}

// Auto-pipelining is ignored, and reported off, for a client that cannot do it.
func TestAutoPipelineIgnoredForOtherClients(t *testing.T) {
	_, c := redistest.NewMini(t)
	type wrapped struct{ *redis.Client }
	lim := New(wrapped{c}, Options{AutoPipeline: true})
	if lim.AutoPipelined() {
		t.Fatal("auto-pipelining claimed for a client without it")
	}
	if r, err := lim.Allow(context.Background(), "k", PerSecond(1)); err != nil || !r.Allowed {
		t.Fatalf("%+v %v", r, err)
	}
}
