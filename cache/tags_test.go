package cache_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// tagKey is the Redis key of a tag set (documented in the package comment).
func tagKey(b redistest.Backend, group, tag string) string {
	return b.Prefix + ":{" + group + "}:t:" + tag
}

func TestSetTaggedOneScript(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		if err := script.Load(ctx, b.Client); err != nil {
			t.Fatal(err)
		}
		g := e.c.Group("binance")
		before := e.hk.calls()
		if err := g.Set(ctx, "ticker:BTC", ticker{Symbol: "BTC"}, 10*time.Second, "all", "sym:BTC"); err != nil {
			t.Fatal(err)
		}
		if d := e.hk.calls() - before; d != 1 {
			t.Fatalf("tagged Set made %d calls, want 1 script call", d)
		}
		k := e.key(g, "ticker:BTC")
		for _, tag := range []string{"all", "sym:BTC"} {
			tk := tagKey(b, "binance", "sym%3ABTC")
			if tag == "all" {
				tk = tagKey(b, "binance", "all")
			}
			members, err := b.Client.ZRange(ctx, tk, 0, -1).Result()
			if err != nil || len(members) != 1 || members[0] != k {
				t.Fatalf("tag %s members %v %v, want [%s]", tag, members, err, k)
			}
			tt, _ := b.Client.PTTL(ctx, tk).Result() // first: time only shortens PTTLs
			vt, _ := b.Client.PTTL(ctx, k).Result()
			if vt <= 9*time.Second || tt < vt || tt > 10*time.Second+time.Millisecond {
				t.Fatalf("value PTTL %v, tag PTTL %v: tag must cover the value and no more", vt, tt)
			}
		}
		var got ticker
		if found, err := g.Get(ctx, "ticker:BTC", &got); err != nil || !found || got.Symbol != "BTC" {
			t.Fatalf("Get of tagged value: %v %v %+v", found, err, got)
		}
	})
}

// A tag set's TTL covers its latest member, and does not grow for a shorter one.
func TestTagSetTTLCoversLatest(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		g := e.c.Group("g")
		tk := tagKey(b, "g", "t")
		pttl := func() time.Duration {
			d, err := b.Client.PTTL(ctx, tk).Result()
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		must(t, g.Set(ctx, "a", 1, 10*time.Second, "t"))
		const ms = time.Millisecond // the set ends 1 ms after its last member's expiry
		if d := pttl(); d <= 9*time.Second || d > 10*time.Second+ms {
			t.Fatalf("after 10 s member: %v", d)
		}
		must(t, g.Set(ctx, "b", 1, time.Minute, "t"))
		if d := pttl(); d <= 59*time.Second || d > time.Minute+ms {
			t.Fatalf("after 60 s member: %v", d)
		}
		must(t, g.Set(ctx, "c", 1, time.Second, "t"))
		if d := pttl(); d <= 59*time.Second {
			t.Fatalf("a 1 s member shortened the tag set to %v", d)
		}
		// b set again with a shorter TTL: the set now ends with a.
		must(t, g.Set(ctx, "b", 1, 2*time.Second, "t"))
		if d := pttl(); d <= 9*time.Second-200*time.Millisecond || d > 10*time.Second+ms {
			t.Fatalf("after b shortened: %v, want about 10 s", d)
		}
		// A member without expiry makes the set persistent.
		must(t, g.Set(ctx, "forever", 1, cache.NoExpiry, "t"))
		if d := pttl(); d != -1 {
			t.Fatalf("with a NoExpiry member: PTTL %v, want -1", d)
		}
		if n, err := g.InvalidateTags(ctx, "t"); err != nil || n != 4 {
			t.Fatalf("InvalidateTags = %d, %v", n, err)
		}
	})
}

// Expired members are pruned on the next write, and an idle tag set expires
// with its last member.
func TestTagPruning(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		g := e.c.Group("g")
		tk := tagKey(b, "g", "t")
		ttl := 10 * time.Second
		if b.Mini == nil {
			ttl = 150 * time.Millisecond
		}
		for i := 0; i < 20; i++ {
			must(t, g.Set(ctx, fmt.Sprint("old", i), i, ttl, "t"))
		}
		if b.Mini != nil {
			e.advance(ttl + time.Millisecond)
		} else {
			e.waitGone(e.key(g, "old19"))
		}
		must(t, g.Set(ctx, "new", 1, time.Hour, "t"))
		if n, err := b.Client.ZCard(ctx, tk).Result(); err != nil || n != 1 {
			t.Fatalf("tag set holds %d members after pruning (%v), want 1", n, err)
		}
		// The set alone, left idle, expires with its member.
		must(t, g.Set(ctx, "short", 1, ttl, "idle"))
		itk := tagKey(b, "g", "idle")
		if b.Mini != nil {
			e.advance(ttl)
			if !e.exists(itk) {
				t.Fatal("tag set expired before its member")
			}
			e.advance(time.Millisecond)
			if e.exists(itk) {
				t.Fatal("tag set outlived its last member")
			}
		} else {
			t.Logf("idle tag set gone after %v", e.waitGone(itk))
		}
	})
}

func TestInvalidateTags(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		g := e.c.Group("binance")
		must(t, g.Set(ctx, "ticker:BTC", 1, time.Minute, "all", "sym:BTC"))
		must(t, g.Set(ctx, "book:BTC", 2, time.Minute, "all", "sym:BTC"))
		must(t, g.Set(ctx, "ticker:ETH", 3, time.Minute, "all", "sym:ETH"))
		must(t, g.Set(ctx, "untagged", 4, time.Minute))
		n, err := g.InvalidateTags(ctx, "sym:BTC")
		if err != nil || n != 2 {
			t.Fatalf("InvalidateTags(sym:BTC) = %d, %v; want 2", n, err)
		}
		for k, want := range map[string]bool{"ticker:BTC": false, "book:BTC": false, "ticker:ETH": true, "untagged": true} {
			if ok, _ := g.Exists(ctx, k); ok != want {
				t.Fatalf("%s exists = %v, want %v", k, ok, want)
			}
		}
		if e.exists(tagKey(b, "binance", "sym%3ABTC")) {
			t.Fatal("invalidated tag set still exists")
		}
		// "all" still lists the deleted keys: they are not counted again.
		n, err = g.InvalidateTags(ctx, "all", "nosuchtag")
		if err != nil || n != 1 {
			t.Fatalf("InvalidateTags(all) = %d, %v; want 1", n, err)
		}
		if ok, _ := g.Exists(ctx, "untagged"); !ok {
			t.Fatal("untagged value deleted")
		}
		// Another group's tag of the same name is untouched.
		other := e.c.Group("kraken")
		must(t, other.Set(ctx, "ticker:BTC", 1, time.Minute, "all"))
		if n, _ := g.InvalidateTags(ctx, "all"); n != 0 {
			t.Fatalf("invalidating binance deleted %d kraken values", n)
		}
		if ok, _ := other.Exists(ctx, "ticker:BTC"); !ok {
			t.Fatal("kraken value deleted")
		}
	})
}

// A tag of 10 000 keys is invalidated in batches of 1000 members per script call.
func TestInvalidateTenThousand(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		// miniredis's Lua runs a 1000-key batch in hundreds of ms on a loaded
		// machine: this test is about batching, not about Options.Timeout.
		e := newEnv(t, b, cache.Options{Timeout: time.Minute})
		ctx := context.Background()
		if err := script.Load(ctx, b.Client); err != nil {
			t.Fatal(err)
		}
		g := e.c.Group("g")
		const n = 10000
		items := make(map[string]any, n)
		keys := make([]string, 0, n)
		for i := 0; i < n; i++ {
			k := fmt.Sprint("k", i)
			items[k], keys = i, append(keys, k)
		}
		before := e.hk.calls()
		must(t, g.SetMany(ctx, items, time.Hour, "big"))
		if d := e.hk.calls() - before; d != n/cache.DefaultBatch {
			t.Fatalf("tagged SetMany of %d made %d calls, want %d", n, d, n/cache.DefaultBatch)
		}
		if c, _ := b.Client.ZCard(ctx, tagKey(b, "g", "big")).Result(); c != n {
			t.Fatalf("tag set holds %d", c)
		}
		before = e.hk.calls()
		deleted, err := g.InvalidateTags(ctx, "big")
		if err != nil || deleted != n {
			t.Fatalf("InvalidateTags = %d, %v; want %d", deleted, err, n)
		}
		if d := e.hk.calls() - before; d != n/cache.DefaultBatch {
			t.Fatalf("InvalidateTags made %d script calls, want %d batches", d, n/cache.DefaultBatch)
		}
		if found, err := cache.GetMany[int](ctx, g, keys); err != nil || len(found) != 0 {
			t.Fatalf("%d values survived invalidation (%v)", len(found), err)
		}
		if e.exists(tagKey(b, "g", "big")) {
			t.Fatal("tag set survived")
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
