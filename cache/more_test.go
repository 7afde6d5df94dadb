package cache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
)

// DeletePattern deletes what matches, only within the cache (or group), with
// SCAN and never KEYS.
func TestDeletePattern(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		g := e.c.Group("ex")
		names := []string{"ticker:binance:BTC", "ticker:binance:ETH", "ticker:kraken:BTC", "other", "ticker:binance"}
		for _, c := range []*cache.Cache{e.c, g} {
			for _, k := range names {
				must(t, c.SetMany(ctx, map[string]any{k: 1}, time.Minute))
			}
		}
		// A value in another prefix that the pattern would match.
		foreign := cache.New(b.Client, cache.Options{Prefix: b.Prefix + "x"})
		must(t, foreign.Set(ctx, "ticker:binance:BTC", 1, time.Minute))
		var keysBefore int64
		if b.Mini == nil {
			keysBefore = commandCalls(t, b, "keys")
		}
		for _, c := range []*cache.Cache{e.c, g} {
			n, err := c.DeletePattern(ctx, "ticker:binance:*")
			if err != nil || n != 2 {
				t.Fatalf("group %q: DeletePattern = %d, %v; want 2", c.GroupName(), n, err)
			}
			for _, k := range names {
				want := k != "ticker:binance:BTC" && k != "ticker:binance:ETH"
				if ok, _ := c.Exists(ctx, k); ok != want {
					t.Fatalf("group %q: %s exists = %v, want %v", c.GroupName(), k, ok, want)
				}
			}
		}
		if ok, _ := foreign.Exists(ctx, "ticker:binance:BTC"); !ok {
			t.Fatal("DeletePattern reached another prefix")
		}
		if n, err := g.DeletePattern(ctx, "*"); err != nil || n != 3 {
			t.Fatalf("group DeletePattern(*) = %d, %v; want 3", n, err)
		}
		if ok, _ := e.c.Exists(ctx, "other"); !ok {
			t.Fatal("group pattern reached the ungrouped cache")
		}
		if b.Mini == nil && commandCalls(t, b, "keys") != keysBefore {
			t.Fatal("KEYS was called")
		}
	})
}

// 100 concurrent callers of a missing key run load once; later callers hit.
func TestGetOrLoadSingleflight(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		// No per-call timeout: this test counts loads, and 100 callers under
		// -race on a loaded machine can hold a reply past the default 1 s,
		// which makes that caller's read an error; by design it then loads
		// on its own, skipping the write (seen at load 28 under -race: 2
		// and 7 loads, 14 timed-out reads).
		e := newEnv(t, b, cache.Options{Timeout: -1})
		ctx := context.Background()
		var loads atomic.Int64
		release := make(chan struct{})
		load := func(context.Context) (ticker, error) {
			loads.Add(1)
			<-release
			return ticker{Symbol: "BTC", Price: 45000.5}, nil
		}
		var wg sync.WaitGroup
		var bad atomic.Int64
		start := make(chan struct{})
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				v, err := cache.GetOrLoad(ctx, e.c, "btc", time.Minute, load)
				if err != nil || v.Price != 45000.5 {
					bad.Add(1)
				}
			}()
		}
		close(start)
		// Let load finish once the first caller is in it; the others either
		// wait on that load or, arriving later, find the stored value.
		for loads.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		close(release)
		wg.Wait()
		if n := loads.Load(); n != 1 {
			t.Fatalf("load ran %d times, want 1", n)
		}
		if bad.Load() != 0 {
			t.Fatalf("%d callers got a wrong value or an error", bad.Load())
		}
		// load runs in singleflight's goroutine: it must not call t.Fatal,
		// whose Goexit there would leave this caller waiting for ever.
		errLoadOnHit := errors.New("load called on a hit")
		v, err := cache.GetOrLoad(ctx, e.c, "btc", time.Minute, func(context.Context) (ticker, error) {
			return ticker{}, errLoadOnHit
		})
		if err != nil || v.Symbol != "BTC" {
			st, _ := e.c.Stats(ctx)
			t.Fatalf("hit: %+v %v (Redis errors counted: %d)", v, err, st.Errors)
		}
		// A load error is returned and nothing is stored.
		boom := errors.New("exchange down")
		if _, err := cache.GetOrLoad(ctx, e.c, "eth", time.Minute, func(context.Context) (int, error) { return 0, boom }); !errors.Is(err, boom) {
			t.Fatalf("load error: %v", err)
		}
		if ok, _ := e.c.Exists(ctx, "eth"); ok {
			t.Fatal("failed load was cached")
		}
		st, _ := e.c.Stats(ctx)
		if st.Loads != 2 {
			t.Fatalf("Stats.Loads = %d, want 2", st.Loads)
		}
	})
}

// Redis stopped: reads are misses with errors counted, GetOrLoad still returns
// the loaded value, the breaker opens after 3 failures and then makes no Redis
// calls; Redis started again: the breaker closes after its cool-down.
func TestDegradationAndBreaker(t *testing.T) {
	if !redistest.Available() && !redistest.Required() {
		t.Skip("redis-server not installed")
	}
	srv, err := redistest.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client := srv.Client()
	defer client.Close()
	b := redistest.Backend{Kind: redistest.Real, Client: client, Server: srv, Prefix: redistest.NewPrefix(t)}
	const coolDown = 300 * time.Millisecond
	e := newEnv(t, b, cache.Options{BreakerFailures: 3, BreakerCoolDown: coolDown})
	ctx := context.Background()
	must(t, e.c.Set(ctx, "k", 1, time.Minute))

	srv.Stop()
	stopped := time.Now()
	var v int
	for i := 0; i < 3; i++ {
		found, err := e.c.Get(ctx, "k", &v)
		if found || err == nil || errors.Is(err, cache.ErrCircuitOpen) {
			t.Fatalf("read %d with Redis down: %v, %v; want a Redis error", i, found, err)
		}
	}
	st, _ := e.c.Stats(ctx)
	if st.Errors != 3 || st.Breaker != "open" || st.Connected {
		t.Fatalf("after 3 failures: %+v", st)
	}
	calls := e.hk.calls()
	if _, err := e.c.Get(ctx, "k", &v); !errors.Is(err, cache.ErrCircuitOpen) {
		t.Fatalf("open breaker: %v", err)
	}
	got, err := cache.GetOrLoad(ctx, e.c, "k2", time.Minute, func(context.Context) (string, error) { return "loaded", nil })
	if err != nil || got != "loaded" {
		t.Fatalf("GetOrLoad with Redis down: %q, %v", got, err)
	}
	if n := e.hk.calls() - calls; n != 0 {
		t.Fatalf("open breaker let %d calls reach Redis", n)
	}
	st, _ = e.c.Stats(ctx)
	// Two rejected: the Get and GetOrLoad's read; after that failed read the
	// load neither looks again nor writes.
	if st.Rejected != 2 || st.Loads != 1 {
		t.Fatalf("rejections not counted: %+v", st)
	}
	if err := e.c.HealthCheck(ctx); err == nil {
		t.Fatal("HealthCheck passed with Redis down")
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	// The breaker runs on the wall clock (gobreaker has no clock to inject), so
	// wait for it: poll every 10 ms, for at most 5 s, far beyond the cool-down.
	for {
		if _, err := e.c.Get(ctx, "k", &v); err == nil {
			break
		}
		if time.Since(restarted) > 5*time.Second {
			t.Fatal("breaker still open 5 s after Redis came back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("breaker open for %v after Redis stopped; closed %v after Redis restarted (cool-down %v)",
		time.Since(stopped).Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond), coolDown)
	st, err = e.c.Stats(ctx)
	if err != nil || st.Breaker != "closed" || !st.Connected {
		t.Fatalf("after restart: %+v %v", st, err)
	}
	// The restarted server lost its data (no persistence): writes work again.
	must(t, e.c.Set(ctx, "k", 2, time.Minute))
	if found, err := e.c.Get(ctx, "k", &v); !found || err != nil || v != 2 {
		t.Fatalf("after restart: %v %v %d", found, err, v)
	}
}

func TestStatsAndHealth(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		must(t, e.c.SetMany(ctx, map[string]any{"a": 1, "b": 2, "c": 3}, time.Minute))
		var v int
		_, _ = e.c.Get(ctx, "a", &v)
		_, _ = e.c.Get(ctx, "nope", &v)
		st, err := e.c.Stats(ctx)
		if err != nil || !st.Connected {
			t.Fatal(st, err)
		}
		if st.Hits != 1 || st.Misses != 1 || st.HitRate != 0.5 || st.Errors != 0 || st.Breaker != "closed" {
			t.Fatalf("counters %+v", st)
		}
		if st.Keys < 3 || st.ConnectedClients < 1 {
			t.Fatalf("redis figures %+v", st)
		}
		wantNodes := 1
		if b.Kind == redistest.Cluster {
			wantNodes = 3
		}
		if st.Nodes != wantNodes {
			t.Fatalf("Nodes = %d, want %d", st.Nodes, wantNodes)
		}
		if b.Mini == nil && (st.UsedMemory <= 0 || st.UptimeSeconds < 0) {
			t.Fatalf("memory/uptime %+v", st)
		}
		if err := e.c.HealthCheck(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCounter(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		window := time.Minute
		if b.Mini == nil {
			window = 300 * time.Millisecond
		}
		for i := int64(1); i <= 3; i++ {
			n, left, err := e.c.Incr(ctx, "calls", 1, window)
			if err != nil || n != i || left <= 0 || left > window {
				t.Fatalf("Incr %d = %d, %v, %v", i, n, left, err)
			}
		}
		if n, err := e.c.Count(ctx, "calls"); err != nil || n != 3 {
			t.Fatalf("Count = %d, %v", n, err)
		}
		if b.Mini != nil {
			e.advance(window)
		} else {
			e.waitGone(e.key(e.c, "calls"))
		}
		if n, err := e.c.Count(ctx, "calls"); err != nil || n != 0 {
			t.Fatalf("Count after window = %d, %v", n, err)
		}
		if n, _, err := e.c.Incr(ctx, "calls", 5, window); err != nil || n != 5 {
			t.Fatalf("new window: %d %v", n, err)
		}
	})
}

func TestIndex(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		g := e.c.Group("market")
		must(t, g.Remember(ctx, "exchanges", time.Hour, "binance", "kraken"))
		must(t, g.Remember(ctx, "exchanges", time.Minute, "coinbase", "kraken")) // kraken keeps its hour
		got, err := g.Recall(ctx, "exchanges")
		if err != nil || fmt.Sprint(got) != "[coinbase binance kraken]" {
			t.Fatalf("Recall = %v, %v", got, err)
		}
		if b.Mini == nil {
			return
		}
		e.advance(time.Minute + time.Millisecond)
		if got, _ := g.Recall(ctx, "exchanges"); fmt.Sprint(got) != "[binance kraken]" {
			t.Fatalf("after a minute: %v", got)
		}
		e.advance(time.Hour)
		if got, _ := g.Recall(ctx, "exchanges"); len(got) != 0 {
			t.Fatalf("after an hour: %v", got)
		}
		if e.exists(b.Prefix + ":{market}:i:exchanges") {
			t.Fatal("index outlived its names")
		}
	})
}

// A caller whose deadline has passed starts no load and makes no Redis call,
// so such callers neither spend an exchange call nor open the breaker for the
// healthy callers after them.
func TestGetOrLoadExpiredCallers(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		if err := e.c.Set(ctx, "btc", ticker{Symbol: "BTC"}, time.Minute); err != nil {
			t.Fatal(err)
		}
		expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
		defer cancel()
		var loads atomic.Int64
		load := func(context.Context) (ticker, error) { loads.Add(1); return ticker{Symbol: "loaded"}, nil }
		calls := e.hk.calls()
		for i := 0; i < 2*cache.DefaultBreakerFailures; i++ {
			if _, err := cache.GetOrLoad(expired, e.c, "eth", time.Minute, load); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("expired caller: %v", err)
			}
			var v ticker
			if _, err := e.c.Get(expired, "btc", &v); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("expired Get: %v", err)
			}
		}
		if n := loads.Load(); n != 0 {
			t.Fatalf("expired callers ran load %d times", n)
		}
		if n := e.hk.calls() - calls; n != 0 {
			t.Fatalf("expired callers made %d Redis calls", n)
		}
		v, err := cache.GetOrLoad(ctx, e.c, "btc", time.Minute, load)
		if err != nil || v.Symbol != "BTC" || loads.Load() != 0 {
			t.Fatalf("healthy caller after them: %+v %v, %d loads (breaker opened?)", v, err, loads.Load())
		}
	})
}

// A load nobody waits for any more is cancelled: a hung exchange call does not
// hold the key's flight, and the next caller's load runs.
func TestGetOrLoadHungLoad(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		stopped := make(chan error, 1)
		hung := func(ctx context.Context) (ticker, error) {
			<-ctx.Done() // an exchange call that never answers
			stopped <- ctx.Err()
			return ticker{}, ctx.Err()
		}
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if _, err := cache.GetOrLoad(short, e.c, "btc", time.Minute, hung); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("caller of the hung load: %v", err)
		}
		select {
		case err := <-stopped:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("hung load ended with %v, want its context cancelled", err)
			}
		case <-time.After(5 * time.Second): // far past the 20 ms the caller waited: generous for a loaded machine
			t.Fatal("the hung load was not cancelled after its only caller left")
		}
		v, err := cache.GetOrLoad(ctx, e.c, "btc", time.Minute, func(context.Context) (ticker, error) {
			return ticker{Symbol: "BTC"}, nil
		})
		if err != nil || v.Symbol != "BTC" {
			t.Fatalf("next caller: %+v %v", v, err)
		}
	})
}

// A panic in load reaches the caller's own goroutine, where it can be
// recovered; the key is not left jammed.
func TestGetOrLoadPanic(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		boom := errors.New("boom")
		recovered := func() (p any) {
			defer func() { p = recover() }()
			_, _ = cache.GetOrLoad(ctx, e.c, "btc", time.Minute, func(context.Context) (ticker, error) { panic(boom) })
			return nil
		}()
		err, ok := recovered.(error)
		if !ok || !errors.Is(err, boom) || !strings.Contains(err.Error(), "panicked") {
			t.Fatalf("recovered %v, want an error wrapping the load's panic", recovered)
		}
		v, err := cache.GetOrLoad(ctx, e.c, "btc", time.Minute, func(context.Context) (ticker, error) {
			return ticker{Symbol: "BTC"}, nil
		})
		if err != nil || v.Symbol != "BTC" {
			t.Fatalf("after the panic: %+v %v", v, err)
		}
		// A nil interface value is a value like any other.
		var none any
		got, err := cache.GetOrLoad(ctx, e.c, "none", time.Minute, func(context.Context) (any, error) { return none, nil })
		if err != nil || got != nil {
			t.Fatalf("nil interface value: %v %v", got, err)
		}
	})
}
