package cache_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
)

// DeletePattern matches its glob against the keys as the caller wrote them,
// not against their escaped form in Redis (where ':', '{', '}' and '%' are
// three bytes, "%3A"…): "*A*" deletes no key without an 'A' (the escape of
// "a:b" has one), "*B" none that does not end in 'B' (the escape of "x{"
// does), and '?' and '[…]' match a ':' as one character.
func TestDeletePatternMatchesKeysNotEscapes(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		for _, c := range []*cache.Cache{e.c, e.c.Group("ex")} {
			for _, tc := range []struct {
				pattern string
				keys    []string
				deleted []string
			}{
				{"*A*", []string{"a:b", "aAb"}, []string{"aAb"}},
				{"*B", []string{"x{", "xB"}, []string{"xB"}},
				{"*7B", []string{"x{", "x7B"}, []string{"x7B"}},
				{"a?b", []string{"a:b", "a%b", "a:xb"}, []string{"a:b", "a%b"}},
				{"a[:]b", []string{"a:b", "a3b", "aAb"}, []string{"a:b"}},
				{"a[^:]b", []string{"a:b", "a3b"}, []string{"a3b"}},
				{`t\*:*`, []string{"t*:1", "tx:1"}, []string{"t*:1"}},
			} {
				for _, k := range tc.keys {
					must(t, c.Set(ctx, k, 1, time.Minute))
				}
				n, err := c.DeletePattern(ctx, tc.pattern)
				if err != nil {
					t.Fatal(err)
				}
				var gone []string
				for _, k := range tc.keys {
					if ok, err := c.Exists(ctx, k); err != nil {
						t.Fatal(err)
					} else if !ok {
						gone = append(gone, k)
					}
				}
				if !slices.Equal(gone, tc.deleted) || n != len(tc.deleted) {
					t.Errorf("group %q: DeletePattern(%q) = %d deleted %q of %q; want %q", c.GroupName(), tc.pattern, n, gone, tc.keys, tc.deleted)
				}
				must(t, c.Delete(ctx, tc.keys...))
			}
		}
	})
}

// DeletePattern's matcher decides as Redis's own glob (stringmatchlen) does:
// checked against SCAN MATCH on real Redis for random patterns and keys over
// an alphabet of every character a glob gives a meaning to, so that classes,
// ranges, negation, escapes and unterminated classes are all exercised.
func TestGlobMatchAsRedis(t *testing.T) {
	rdb := redistest.NewReal(t)
	ctx := context.Background()
	pfx := redistest.NewPrefix(t) + "glob."
	rng := rand.New(rand.NewPCG(10, 10))
	word := func(alpha string, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alpha[rng.IntN(len(alpha))]
		}
		return string(b)
	}
	var ks []string
	for range 60 {
		k := word(`ab-^]\[*?:`, 1+rng.IntN(4))
		ks = append(ks, k)
		if err := rdb.Set(ctx, pfx+k, 1, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for range 600 {
		pat := word(`ab-^]\[*?`, 1+rng.IntN(6))
		var redis []string
		var cursor uint64
		for {
			page, next, err := rdb.Scan(ctx, cursor, pfx+pat, 1000).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range page {
				redis = append(redis, strings.TrimPrefix(k, pfx))
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		var ours []string
		for _, k := range ks {
			if cache.GlobMatch(pat, k) {
				ours = append(ours, k)
			}
		}
		slices.Sort(redis)
		slices.Sort(ours)
		redis, ours = slices.Compact(redis), slices.Compact(ours)
		if !slices.Equal(redis, ours) {
			t.Fatalf("pattern %q: Redis matches %q, GlobMatch %q", pat, redis, ours)
		}
	}
}
