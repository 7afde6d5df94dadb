package limiter

import (
	"sync"
	"sync/atomic"
)

// argCacheMax bounds argCache (about 200 bytes an entry). Limits built on the
// fly (a rate per user or per plan) would otherwise grow it for as long as the
// process lives; past it the cache starts over, as the key cache does.
const argCacheMax = 1 << 12

// argCache holds each Limit's script arguments (with a guard), boxed once.
var (
	argCache sync.Map // argID → *[5]any
	argCount atomic.Int64
)

type argID struct {
	l       Limit
	guardUS int64
}

// argsFor returns l's algorithm, period, max units, interval and guard (µs, 0
// unless l is a FixedWindow limit), as decide.lua takes them.
func argsFor(l Limit, guardUS int64) *[5]any {
	if l.Algorithm != FixedWindow {
		guardUS = 0
	}
	id := argID{l, guardUS}
	if v, ok := argCache.Load(id); ok {
		return v.(*[5]any)
	}
	a := &[5]any{l.Algorithm.script(), l.periodUS(), l.most(), l.intervalUS(), guardUS}
	if argCount.Add(1) > argCacheMax {
		argCache.Clear()
		argCount.Store(1)
	}
	v, loaded := argCache.LoadOrStore(id, a)
	if loaded {
		argCount.Add(-1)
	}
	return v.(*[5]any)
}
