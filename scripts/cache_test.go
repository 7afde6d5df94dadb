package scripts_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// The cache scripts, called directly with chosen arguments. Times come from
// Redis TIME, so on miniredis the clock is pinned with SetTime.

func TestCacheSetTaggedScript(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		if b.Mini != nil {
			b.Mini.SetTime(time.UnixMilli(1_736_942_400_000))
		}
		h := b.Prefix + ":{g}"
		v1, v2, tag := h+":v:a", h+":v:b", h+":t:x"
		l1, l2 := h+":l:a", h+":l:b"
		n, err := script.SetTagged.Run(ctx, b.Client, []string{v1, v2, l1, l2, tag}, 2, 1500, "A", "B").Int()
		if err != nil || n != 2 {
			t.Fatalf("reply %d, %v", n, err)
		}
		for k, want := range map[string]string{v1: "A", v2: "B"} {
			if got, _ := b.Client.Get(ctx, k).Result(); got != want {
				t.Fatalf("%s = %q", k, got)
			}
			if pttl, _ := b.Client.PTTL(ctx, k).Result(); pttl <= time.Second || pttl > 1500*time.Millisecond {
				t.Fatalf("%s PTTL %v", k, pttl)
			}
		}
		zs, err := b.Client.ZRangeWithScores(ctx, tag, 0, -1).Result()
		if err != nil || len(zs) != 2 {
			t.Fatalf("tag set %v %v", zs, err)
		}
		tm, _ := b.Client.Time(ctx).Result()
		for _, z := range zs {
			// Score: the first ms the value is gone, about now + 1500 ms.
			if d := int64(z.Score) - tm.UnixMilli(); d < 1400 || d > 1501 {
				t.Fatalf("member %v scored %v ms ahead", z.Member, d)
			}
		}
		// An older member past its score is pruned on the next write.
		if err := b.Client.ZAdd(ctx, tag, redisZ(1, "stale")).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := script.SetTagged.Run(ctx, b.Client, []string{v1, l1, tag}, 1, -1, "A2").Result(); err != nil {
			t.Fatal(err)
		}
		if ok, _ := b.Client.ZScore(ctx, tag, "stale").Result(); ok != 0 {
			t.Fatalf("stale member kept, score %v", ok)
		}
		// -1: the value and, while it is a member, the set never expire.
		if pttl, _ := b.Client.PTTL(ctx, v1).Result(); pttl != -1 {
			t.Fatalf("no-expiry value PTTL %v", pttl)
		}
		if pttl, _ := b.Client.PTTL(ctx, tag).Result(); pttl != -1 {
			t.Fatalf("tag set with a no-expiry member PTTL %v", pttl)
		}
		// Each value's tag list names its tag set and expires with it.
		if m, _ := b.Client.SMembers(ctx, l2).Result(); len(m) != 1 || m[0] != tag {
			t.Fatalf("tag list %v", m)
		}
		if pttl, _ := b.Client.PTTL(ctx, l2).Result(); pttl <= time.Second || pttl > 1500*time.Millisecond {
			t.Fatalf("tag list PTTL %v", pttl)
		}
		// Written again with no tags, v2 leaves the tag set and has no list.
		if _, err := script.SetTagged.Run(ctx, b.Client, []string{v2, l2}, 1, 1500, "B2").Result(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Client.ZScore(ctx, tag, v2).Result(); err != redis.Nil {
			t.Fatalf("untagged value still in the tag set: %v", err)
		}
		if n, _ := b.Client.Exists(ctx, l2).Result(); n != 0 {
			t.Fatal("tag list kept for an untagged value")
		}
		// Deleted, v1 leaves it too, and the emptied set is gone.
		if n, err := script.Delete.Run(ctx, b.Client, []string{v1, l1}).Int(); err != nil || n != 1 {
			t.Fatalf("delete %d %v", n, err)
		}
		if n, _ := b.Client.Exists(ctx, v1, l1, tag).Result(); n != 0 {
			t.Fatalf("%d of value, list, emptied tag set left", n)
		}
		b.Client.Del(ctx, v1, v2, l1, l2, tag)
	})
}

func TestCacheInvalidateTagScript(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		h := b.Prefix + ":{g}"
		tag := h + ":t:x"
		other := h + ":t:y"
		keys := []string{h + ":v:1", h + ":v:2", h + ":v:3", h + ":l:1", h + ":l:2", h + ":l:3", tag, other}
		if _, err := script.SetTagged.Run(ctx, b.Client, keys, 3, 60000, "1", "2", "3").Result(); err != nil {
			t.Fatal(err)
		}
		b.Client.Del(ctx, h+":v:2") // gone already (around the scripts): removed, not counted
		vpre, lpre := h+":v:", h+":l:"
		r, err := script.InvalidateTag.Run(ctx, b.Client, []string{tag}, 2, vpre, lpre).Int64Slice()
		if err != nil || len(r) != 2 || r[0]+r[1] != 2 || r[1] != 1 {
			t.Fatalf("first batch %v %v: want 2 members handled, 1 left", r, err)
		}
		r, err = script.InvalidateTag.Run(ctx, b.Client, []string{tag}, 2, vpre, lpre).Int64Slice()
		if err != nil || r[1] != 0 {
			t.Fatalf("second batch %v %v", r, err)
		}
		// The deleted values left their other tag set (emptied, so gone) and their lists.
		if n, _ := b.Client.Exists(ctx, keys...).Result(); n != 0 {
			t.Fatalf("%d keys left", n)
		}
	})
}

func TestCacheIndexScripts(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		idx := b.Prefix + ":{m}:i:ex"
		n, err := script.IndexAdd.Run(ctx, b.Client, []string{idx}, 60000, "binance", "kraken").Int()
		if err != nil || n != 2 {
			t.Fatalf("add %d %v", n, err)
		}
		// A shorter TTL never moves a name earlier.
		s1, _ := b.Client.ZScore(ctx, idx, "kraken").Result()
		if _, err := script.IndexAdd.Run(ctx, b.Client, []string{idx}, 10, "kraken").Result(); err != nil {
			t.Fatal(err)
		}
		if s2, _ := b.Client.ZScore(ctx, idx, "kraken").Result(); s2 != s1 {
			t.Fatalf("score moved from %v to %v", s1, s2)
		}
		if pttl, _ := b.Client.PTTL(ctx, idx).Result(); pttl <= 59*time.Second || pttl > time.Minute {
			t.Fatalf("index PTTL %v", pttl)
		}
		names, err := script.IndexList.Run(ctx, b.Client, []string{idx}).StringSlice()
		if err != nil || len(names) != 2 {
			t.Fatalf("list %v %v", names, err)
		}
		b.Client.Del(ctx, idx)
	})
}

func TestCacheIncrScript(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		k := b.Prefix + ":{ex}:v:calls"
		r, err := script.Incr.Run(ctx, b.Client, []string{k}, 3, 60000).Int64Slice()
		if err != nil || r[0] != 3 || r[1] != 60000 {
			t.Fatalf("first %v %v", r, err)
		}
		r, err = script.Incr.Run(ctx, b.Client, []string{k}, 2, 1000).Int64Slice()
		if err != nil || r[0] != 5 || r[1] <= 59000 {
			t.Fatalf("second %v %v: the window is kept, not restarted", r, err)
		}
		// A counter left without a TTL gets one.
		b.Client.Persist(ctx, k)
		r, err = script.Incr.Run(ctx, b.Client, []string{k}, 1, 500).Int64Slice()
		if err != nil || r[0] != 6 || r[1] != 500 {
			t.Fatalf("persisted counter %v %v", r, err)
		}
		b.Client.Del(ctx, k)
	})
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }
