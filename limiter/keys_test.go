package limiter

import (
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// A single key's state entry is found by its name alone (keyCache.singles)
// and is keyFor's own entry, one per key and algorithm (coalescing groups
// decisions by it); the singles go when the cache starts over.
func TestSingleKeyEntries(t *testing.T) {
	_, c := redistest.NewMini(t)
	lim := New(c, Options{Prefix: "keys"})
	e := lim.singleFor("user", GCRA)
	require.Same(t, e, lim.keyFor(keyID{quota: "user", algo: GCRA}))
	require.Same(t, e, lim.singleFor("user", GCRA))
	require.Equal(t, "keys:{user}:gcra", e.key)
	w := lim.singleFor("user", FixedWindow)
	require.NotSame(t, e, w)
	require.Equal(t, "keys:{user}:fixed", w.key)

	entries := func(m *sync.Map) (n int) {
		m.Range(func(any, any) bool { n++; return true })
		return n
	}
	for i := range keyCacheMax {
		lim.singleFor("k"+strconv.Itoa(i), GCRA)
	}
	require.Less(t, entries(&lim.keys.singles[GCRA]), 10, "cleared with the cache")
	require.Zero(t, entries(&lim.keys.singles[FixedWindow]))
	require.NotSame(t, e, lim.singleFor("user", GCRA), "built again after the clear")
}
