package cache_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// tagModel is the reference: what each key holds and exactly which tags it
// carries. A key absent from it holds nothing.
type tagModel map[string]tagEntry

type tagEntry struct {
	val  int
	tags map[string]bool
}

// carrying returns the keys that carry any of tags, sorted.
func (m tagModel) carrying(tags ...string) []string {
	var out []string
	for k, e := range m {
		for _, t := range tags {
			if e.tags[t] {
				out = append(out, k)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// Tags are exact: over random sequences of Set with and without tags, SetMany, Delete,
// expiry and InvalidateTags on a few keys and tags, every InvalidateTags
// deletes exactly the values that carry one of its tags at that moment (the
// count it reports, and what Get sees after), whatever happened to them since
// they were tagged; and each tag set lists exactly the live values that carry
// its tag (only expired members may linger until pruned).
func TestTagsModel(t *testing.T) {
	keys := []string{"a", "b", "c", "d", "e"}
	tags := []string{"x", "y", "z"}
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		require.NoError(t, script.Load(ctx, b.Client))
		g := e.c.Group("g")
		steps, seeds := 300, 4
		if b.Kind != redistest.Mini {
			steps = 150 // each expiry waits for real Redis's clock
		}
		for seed := range seeds {
			rng := rand.New(rand.NewPCG(uint64(seed), 20))
			model := tagModel{}
			for _, k := range keys { // a clean slate for this sequence
				require.NoError(t, g.Delete(ctx, k))
			}
			var log []string
			step := func(format string, args ...any) { log = append(log, fmt.Sprintf(format, args...)) }
			pickTags := func() []string {
				var out []string
				for _, tg := range tags {
					if rng.IntN(2) == 0 {
						out = append(out, tg)
					}
				}
				return out
			}
			set := func(k string, v int, tg []string) {
				m := map[string]bool{}
				for _, x := range tg {
					m[x] = true
				}
				model[k] = tagEntry{val: v, tags: m}
			}
			for i := range steps {
				k := keys[rng.IntN(len(keys))]
				v := rng.IntN(1000)
				switch op := rng.IntN(10); {
				case op < 3:
					tg := pickTags()
					ttl := time.Hour
					if rng.IntN(4) == 0 {
						ttl = cache.NoExpiry
					}
					step("Set(%s, %d, %v, tags %v)", k, v, ttl, tg)
					require.NoError(t, g.Set(ctx, k, v, ttl, tg...))
					set(k, v, tg)
				case op < 5:
					step("Set(%s, %d)", k, v)
					require.NoError(t, g.Set(ctx, k, v, time.Hour))
					set(k, v, nil)
				case op < 6:
					k2 := keys[rng.IntN(len(keys))]
					step("SetMany(%s, %s = %d)", k, k2, v)
					require.NoError(t, g.SetMany(ctx, map[string]any{k: v, k2: v}, time.Hour))
					set(k, v, nil)
					set(k2, v, nil)
				case op < 7:
					step("Delete(%s)", k)
					require.NoError(t, g.Delete(ctx, k))
					delete(model, k)
				case op < 8:
					tg := pickTags()
					step("Set(%s, %d, 30ms, tags %v) and let it expire", k, v, tg)
					require.NoError(t, g.Set(ctx, k, v, 30*time.Millisecond, tg...))
					if b.Mini != nil {
						e.advance(31 * time.Millisecond)
					} else {
						e.waitGone(e.key(g, k))
					}
					delete(model, k)
				default:
					inv := []string{tags[rng.IntN(len(tags))]}
					if rng.IntN(3) == 0 {
						inv = append(inv, tags[rng.IntN(len(tags))])
					}
					want := model.carrying(inv...)
					step("InvalidateTags(%v) want %v", inv, want)
					n, err := g.InvalidateTags(ctx, inv...)
					require.NoError(t, err)
					require.Equal(t, len(want), n, "seed %d step %d: deleted count\n%s", seed, i, steps2s(log))
					for _, k := range want {
						delete(model, k)
					}
				}
				checkTagModel(t, e, g, b, model, keys, tags, fmt.Sprintf("seed %d step %d\n%s", seed, i, steps2s(log)))
			}
		}
	})
}

func steps2s(log []string) string {
	if len(log) > 12 {
		log = log[len(log)-12:]
	}
	out := ""
	for _, s := range log {
		out += "  " + s + "\n"
	}
	return out
}

// checkTagModel compares Redis with the model: every key's value, and every
// tag set's live members.
func checkTagModel(t *testing.T, e *env, g *cache.Cache, b redistest.Backend, model tagModel, keys, tags []string, where string) {
	t.Helper()
	ctx := context.Background()
	for _, k := range keys {
		var got int
		found, err := g.Get(ctx, k, &got)
		require.NoError(t, err)
		want, ok := model[k]
		require.Equal(t, ok, found, "%s: %s found", where, k)
		if ok {
			require.Equal(t, want.val, got, "%s: %s value", where, k)
		}
	}
	tm, err := b.Client.Time(ctx).Result()
	require.NoError(t, err)
	for _, tg := range tags {
		live, err := b.Client.ZRangeByScore(ctx, tagKey(b, "g", tg), &redis.ZRangeBy{
			Min: fmt.Sprint("(", tm.UnixMilli()), Max: "+inf"}).Result()
		require.NoError(t, err)
		slices.Sort(live)
		if live == nil {
			live = []string{}
		}
		want := []string{}
		for _, k := range model.carrying(tg) {
			want = append(want, e.key(g, k))
		}
		require.Equal(t, want, live, "%s: live members of tag %s", where, tg)
	}
}

// The cases of issue 20, each on its own: a value re-set without its tag, or
// deleted and set again, is not deleted by invalidating the old tag.
func TestInvalidateSkipsValuesThatLostTheTag(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		g := e.c.Group("g")
		for _, resetVia := range []string{"set", "delete+set", "retag"} {
			require.NoError(t, g.Set(ctx, "k1", 1, time.Hour, "coinbase", "all"))
			n, err := g.InvalidateTags(ctx, "all")
			require.NoError(t, err)
			require.Equal(t, 1, n)
			switch resetVia {
			case "set":
				require.NoError(t, g.Set(ctx, "k1", 2, time.Hour))
			case "delete+set":
				require.NoError(t, g.Set(ctx, "k1", 1, time.Hour, "coinbase"))
				require.NoError(t, g.Delete(ctx, "k1"))
				require.NoError(t, g.Set(ctx, "k1", 2, time.Hour))
			case "retag":
				require.NoError(t, g.Set(ctx, "k1", 1, time.Hour, "coinbase"))
				require.NoError(t, g.Set(ctx, "k1", 2, time.Hour, "kraken"))
			}
			n, err = g.InvalidateTags(ctx, "coinbase")
			require.NoError(t, err)
			require.Equal(t, 0, n, "%s: the value no longer carries coinbase", resetVia)
			var v int
			found, err := g.Get(ctx, "k1", &v)
			require.NoError(t, err)
			require.True(t, found, resetVia)
			require.Equal(t, 2, v)
			require.False(t, e.exists(tagKey(b, "g", "coinbase")), "%s: the emptied tag set is gone", resetVia)
			require.NoError(t, g.Delete(ctx, "k1"))
			_, err = g.InvalidateTags(ctx, "kraken")
			require.NoError(t, err)
		}
	})
}
