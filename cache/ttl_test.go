package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
)

// Millisecond TTLs: a 500 ms value is there at 499 ms and gone at 500 ms; a
// 200 ms one likewise, with PTTL showing the TTL in ms, not rounded to seconds.
func TestMillisecondTTL(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		for _, ttl := range []time.Duration{500 * time.Millisecond, 200 * time.Millisecond} {
			if err := e.c.Set(ctx, "book", "v", ttl); err != nil {
				t.Fatal(err)
			}
			k := e.key(e.c, "book")
			pttl, err := b.Client.PTTL(ctx, k).Result()
			if err != nil || pttl <= ttl-100*time.Millisecond || pttl > ttl {
				t.Fatalf("PTTL = %v, %v; want just under %v", pttl, err, ttl)
			}
			if b.Mini == nil {
				t.Logf("%v value gone after %v of polling", ttl, e.waitGone(k))
				continue
			}
			e.advance(ttl - time.Millisecond)
			var s string
			if found, _ := e.c.Get(ctx, "book", &s); !found {
				t.Fatalf("%v value gone at %v", ttl, ttl-time.Millisecond)
			}
			e.advance(time.Millisecond)
			if found, _ := e.c.Get(ctx, "book", &s); found {
				t.Fatalf("%v value still there at %v", ttl, ttl)
			}
		}
	})
}
