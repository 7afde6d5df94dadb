package scripts_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func flushScripts(ctx context.Context, t *testing.T, b redistest.Backend) {
	t.Helper()
	if cc, ok := b.Client.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.ScriptFlush(ctx).Err() })
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := b.Client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}

// A script still runs after SCRIPT FLUSH: Run falls back to EVAL on NOSCRIPT.
func TestRunSurvivesScriptFlush(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		key := b.Prefix + ":{flush}:hold"
		if err := script.Load(ctx, b.Client); err != nil {
			t.Fatal(err)
		}
		got, err := script.Hold.Run(ctx, b.Client, []string{key}, 1_000_000).Int64()
		if err != nil || got != 1_000_000 {
			t.Fatalf("first run: %d, %v", got, err)
		}
		flushScripts(ctx, t, b)
		exists, err := script.Hold.Exists(ctx, b.Client).Result()
		if err != nil || exists[0] {
			t.Fatalf("script still loaded after flush: %v %v", exists, err)
		}
		got, err = script.Hold.Run(ctx, b.Client, []string{key}, 2_000_000).Int64()
		if err != nil || got != 2_000_000 {
			t.Fatalf("run after SCRIPT FLUSH: %d, %v", got, err)
		}
	})
}

// Load preloads every script on every master, so EVALSHA finds them all.
func TestLoadOnEveryMaster(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		flushScripts(ctx, t, b)
		if err := script.Load(ctx, b.Client); err != nil {
			t.Fatal(err)
		}
		check := func(c redis.Scripter) {
			for name, s := range script.All() {
				ok, err := s.Exists(ctx, c).Result()
				if err != nil || !ok[0] {
					t.Fatalf("%s not loaded: %v %v", name, ok, err)
				}
			}
		}
		if cc, ok := b.Client.(*redis.ClusterClient); ok {
			var n atomic.Int32 // ForEachMaster calls fn concurrently
			_ = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { check(c); n.Add(1); return nil })
			if n.Load() != 3 {
				t.Fatalf("expected 3 masters, saw %d", n.Load())
			}
			return
		}
		check(b.Client)
	})
}

// A script whose keys span two slots is refused, by the test helper's hook on a
// single node and by Redis itself (CROSSSLOT) on the cluster.
func TestCrossSlotRefused(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		keys := []string{b.Prefix + ":{a}:tok", b.Prefix + ":{a}:hold", b.Prefix + ":{b}:x"}
		if redistest.Slot(keys[0]) == redistest.Slot(keys[2]) {
			t.Fatal("test keys share a slot")
		}
		err := script.Decide.Run(ctx, b.Client, keys, "0", 1, 0, 1, 1_000_000, 10, 100_000, 1, 0, 0).Err()
		if err == nil {
			t.Fatal("cross-slot script call succeeded")
		}
		if b.Kind == redistest.Cluster {
			if !strings.Contains(err.Error(), "CROSSSLOT") {
				t.Fatalf("cluster refused with %v, want CROSSSLOT", err)
			}
			return
		}
		if !errors.Is(err, redistest.ErrCrossSlot) {
			t.Fatalf("got %v, want ErrCrossSlot", err)
		}
		if n, _ := b.Client.Exists(ctx, keys[2]).Result(); n != 0 {
			t.Fatal("refused call still wrote a key")
		}
	})
}

// Large µs values survive the Lua number → string conversion (Lua 5.1 uses
// %.14g, which would turn a 16-digit time into 1.7e+15).
func TestScriptsKeepMicrosecondPrecision(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		key := b.Prefix + ":{prec}:hold"
		dur := int64(3*time.Second/time.Microsecond) + 7
		if _, err := script.Hold.Run(ctx, b.Client, []string{key}, dur).Int64(); err != nil {
			t.Fatal(err)
		}
		v, err := b.Client.Get(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(v, "e.") || len(v) < 16 {
			t.Fatalf("hold stored as %q: precision lost", v)
		}
		ttl, _ := b.Client.PTTL(ctx, key).Result()
		if ttl <= 0 || ttl > 3100*time.Millisecond {
			t.Fatalf("hold key TTL %v, want about 3s", ttl)
		}
	})
}
