package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/redquota/redquota/internal/keys"
)

// defaultNearMaxTTL is the longest a value is kept near when
// Options.NearMaxTTL is 0.
const defaultNearMaxTTL = time.Minute

const (
	// nearStripes is the number of invalidation counters keys are spread over.
	nearStripes = 4096
	// nearEntryOverhead is the bytes counted per entry besides its key and value.
	nearEntryOverhead = 96
)

// nearKey names a value near: its view's start of Redis key (valPre) and its
// key as the caller gave it, so that Get builds it without allocating.
type nearKey struct{ pre, key string }

// nearEntry is a value held near.
type nearEntry struct {
	val      string
	deadline int64  // near.now() past which the value is not served
	epoch    uint64 // near.epoch when the read that brought it began
	// dec is val decoded into the zero value of a type that holds no
	// references (see shareable), kept after a hit decoded it: a later hit
	// into a zero value of that type is a copy, not a decode.
	dec atomic.Pointer[decoded]
}

// decoded is a nearEntry's value decoded as typ.
type decoded struct {
	typ reflect.Type
	val reflect.Value
}

// near is a core's near cache.
type near struct {
	c      *core
	store  *otter.Cache[nearKey, *nearEntry]
	maxTTL time.Duration
	base   time.Time
	seed   maphash.Seed
	root   string // "<prefix>:v:{": what every value key starts with, the pre of one outside any group

	// epoch changes whenever a tracking connection is lost or made, or Redis
	// flushes: an entry is served only while epoch equals its own. Bit 0 is
	// set while every node has a live tracking connection.
	epoch atomic.Uint64
	// stripes count invalidations by hash of key: a read installs its value
	// only if its key's stripe did not move while it was in flight.
	stripes [nearStripes]atomic.Uint64

	trk *tracking

	hits, invalidations, evictions atomic.Int64

	// beforeInstall, set by tests, runs between a read's reply and its install.
	beforeInstall atomic.Pointer[func()]
	// clock, set by tests, replaces time.Since(base).
	clock atomic.Pointer[func() int64]
}

// newNear returns c's near cache, of at most maxBytes, keeping a value at
// most maxTTL (0: defaultNearMaxTTL).
func newNear(c *core, maxBytes int64, maxTTL time.Duration) *near {
	n := &near{c: c, maxTTL: maxTTL, base: time.Now(), seed: maphash.MakeSeed(), root: c.prefix + ":v:{"}
	if n.maxTTL <= 0 {
		n.maxTTL = defaultNearMaxTTL
	}
	n.store = otter.Must(&otter.Options[nearKey, *nearEntry]{
		MaximumWeight: uint64(maxBytes),
		Weigher: func(k nearKey, e *nearEntry) uint32 {
			return uint32(min(len(k.pre)+len(k.key)+len(e.val)+nearEntryOverhead, 1<<31))
		},
		// The store refuses an entry past its deadline on its own monotonic
		// clock, read before this runs: its expiry is then no later than
		// the deadline. A lifetime of 0 or less would mean none at all.
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[nearKey, *nearEntry]) time.Duration {
			return max(time.Duration(e.Value.deadline-n.now()), 1)
		}),
		OnDeletion: func(e otter.DeletionEvent[nearKey, *nearEntry]) {
			if e.Cause == otter.CauseOverflow {
				n.evictions.Add(1)
			}
		},
	})
	n.trk = newTracking(n)
	return n
}

// now is monotonic time in ns since the near cache was made.
func (n *near) now() int64 {
	if f := n.clock.Load(); f != nil {
		return (*f)()
	}
	return int64(time.Since(n.base))
}

func (n *near) stripe(k nearKey) *atomic.Uint64 {
	return &n.stripes[maphash.Comparable(n.seed, k)%nearStripes]
}

// lookup returns the value held near for k, if it may be served. The store
// returns no entry past its deadline (see newNear's ExpiryCalculator), so a
// hit reads the clock once, in the store; a clock set by a test is checked
// here.
func (n *near) lookup(k nearKey) (*nearEntry, bool) {
	e, ok := n.store.GetIfPresent(k)
	if !ok || e.epoch != n.epoch.Load() {
		return nil, false
	}
	if f := n.clock.Load(); f != nil && (*f)() >= e.deadline {
		return nil, false
	}
	n.hits.Add(1)
	return e, true
}

// decodeHit decodes e, a value held near, into dst (checked by checkDst).
// Into the zero value of a shareable type it decodes once per entry and
// copies afterwards: the result is the same, since decoding into a zero
// value depends on nothing but the bytes.
func (n *near) decodeHit(key string, e *nearEntry, dst any) error {
	switch dst.(type) {
	case *string, *[]byte:
		return n.c.decode(key, e.val, dst)
	}
	rv := reflect.ValueOf(dst).Elem()
	zero := rv.IsZero()
	if d := e.dec.Load(); d != nil && zero && d.typ == rv.Type() {
		rv.Set(d.val)
		return nil
	}
	if err := n.c.decode(key, e.val, dst); err != nil {
		return err
	}
	if zero && shareable(rv.Type()) {
		v := reflect.New(rv.Type()).Elem()
		v.Set(rv)
		e.dec.Store(&decoded{typ: rv.Type(), val: v})
	}
	return nil
}

var (
	shareableTypes sync.Map // reflect.Type → bool
	timeType       = reflect.TypeFor[time.Time]()
)

// shareable reports whether a value of t can be copied to many callers
// without sharing anything one of them could change: no pointers, slices,
// maps, interfaces, channels or funcs, but for time.Time's *Location, which
// is never changed.
func shareable(t reflect.Type) bool {
	if v, ok := shareableTypes.Load(t); ok {
		return v.(bool)
	}
	ok := true
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.String:
	case reflect.Array:
		ok = shareable(t.Elem())
	case reflect.Struct:
		if t != timeType {
			for i := range t.NumField() {
				ok = ok && shareable(t.Field(i).Type)
			}
		}
	default:
		ok = false
	}
	shareableTypes.Store(t, ok)
	return ok
}

// parse returns the nearKey of a Redis value key k ("<prefix>:v:{<esc>}" or
// "<prefix>:v:{<group>}:<esc>"), false for any other key.
func (n *near) parse(k string) (nearKey, bool) {
	if !strings.HasPrefix(k, n.root) {
		return nearKey{}, false
	}
	j := strings.IndexByte(k[len(n.root):], '}')
	if j < 0 {
		return nearKey{}, false
	}
	j += len(n.root)
	var nk nearKey
	switch rest := k[j+1:]; {
	case rest == "":
		nk = nearKey{pre: n.root, key: k[len(n.root):j]}
	case rest[0] == ':':
		nk = nearKey{pre: k[:j+2], key: k[j+2:]}
	default:
		return nearKey{}, false
	}
	key, err := keys.Unescape(nk.key)
	nk.key = key
	return nk, err == nil
}

// invalidate drops the Redis key k: Redis reported it changed, or this
// process wrote it.
func (n *near) invalidate(k string) {
	nk, ok := n.parse(k)
	if !ok {
		return
	}
	n.stripe(nk).Add(1)
	if _, ok := n.store.Invalidate(nk); ok {
		n.invalidations.Add(1)
	}
}

// wrote drops the Redis keys ks after this process wrote them.
func (n *near) wrote(ks ...string) {
	if n == nil {
		return
	}
	for _, k := range ks {
		n.invalidate(k)
	}
}

// dropView drops every value of the view whose Redis keys start with pre,
// after a call that deleted some of them in Redis (InvalidateTags,
// DeletePattern). Reads of them in flight install nothing.
func (n *near) dropView(pre string) {
	if n == nil {
		return
	}
	for i := range n.stripes {
		n.stripes[i].Add(1)
	}
	for k := range n.store.Keys() {
		if k.pre == pre {
			if _, ok := n.store.Invalidate(k); ok {
				n.invalidations.Add(1)
			}
		}
	}
}

// bump moves the epoch, with ready telling whether every node is tracked,
// and drops everything held: nothing read before is served again.
func (n *near) bump(ready bool) {
	for {
		old := n.epoch.Load()
		next := (old | 1) + 1 // the next even number
		if ready {
			next |= 1
		}
		if n.epoch.CompareAndSwap(old, next) {
			break
		}
	}
	n.store.InvalidateAll()
}

// read reads the Redis key k and its PTTL in one round trip and, when the
// near cache may hold it, installs it. A missing key is redis.Nil.
func (n *near) read(ctx context.Context, k string) (string, error) {
	nk, ok := n.parse(k)
	if !ok {
		return "", errors.New("not a value key") // cannot happen: k is a valueKey
	}
	st := n.stripe(nk)
	s0, e0, start := st.Load(), n.epoch.Load(), n.now()
	var get *redis.StringCmd
	var pttl *redis.DurationCmd
	err := n.c.do(ctx, func(ctx context.Context) error {
		p := n.c.client.Pipeline()
		get, pttl = p.Get(ctx, k), p.PTTL(ctx, k)
		_, err := p.Exec(ctx)
		if err == redis.Nil {
			err = nil
		}
		return err
	})
	if err != nil {
		return "", err
	}
	val, err := get.Result()
	if err != nil {
		return "", err
	}
	n.install(ctx, nk, k, val, start, pttl.Val(), s0, e0, st)
	return val, nil
}

// install keeps val near when it was read while every node was tracked, and
// nothing invalidated its key or moved the epoch since the read began.
func (n *near) install(ctx context.Context, nk nearKey, k, val string, start int64, pttl time.Duration, s0, e0 uint64, st *atomic.Uint64) {
	if e0&1 == 0 || pttl == -2 {
		return // not tracked, or the key went between GET and PTTL
	}
	ttl := n.maxTTL
	if pttl >= 0 && pttl < ttl {
		ttl = pttl // -1: no expiry
	}
	if ttl <= 0 || !n.trk.covers(ctx, k) {
		return
	}
	if f := n.beforeInstall.Load(); f != nil {
		(*f)()
	}
	// Redis's clock started the PTTL after start: the value lives at least
	// until start+ttl there.
	e := &nearEntry{val: val, deadline: start + int64(ttl), epoch: e0}
	n.store.Compute(nk, func(old *nearEntry, found bool) (*nearEntry, otter.ComputeOp) {
		// An invalidation that moved the stripe before this check is refused
		// here; one after it drops the entry with store.Invalidate, which
		// waits for this compute to finish.
		if st.Load() != s0 || n.epoch.Load() != e0 {
			return old, otter.CancelOp
		}
		return e, otter.WriteOp
	})
}

// get is core.get with the near cache: the value held near, or a read of
// Redis that installs what it read.
func (n *near) get(ctx context.Context, key, k string, dst any, count bool) (bool, error) {
	nk, _ := n.parse(k)
	var err error
	if e, ok := n.lookup(nk); ok {
		err = n.decodeHit(key, e, dst)
	} else {
		var data string
		if data, err = n.read(ctx, k); err != nil {
			if count {
				n.c.misses.Add(1)
			}
			if err == redis.Nil {
				return false, nil
			}
			return false, fmt.Errorf("cache: get: %w", err)
		}
		err = n.c.decode(key, data, dst)
	}
	if err != nil {
		if count {
			n.c.misses.Add(1)
		}
		return false, err
	}
	if count {
		n.c.hits.Add(1)
	}
	return true, nil
}

// getFast answers Get from the near cache without building the Redis key: no
// allocation for a *string or with a codec that allocates none.
func (c *Cache) getFast(key string, dst any) (found bool, err error, done bool) {
	if c.err != nil || keys.Check(key) != nil {
		_, err := c.escapeKey(key) // the error, as the other paths return it
		return false, err, true
	}
	e, ok := c.core.near.lookup(nearKey{pre: c.valPre, key: key})
	if !ok {
		return false, nil, false
	}
	if err := c.core.near.decodeHit(key, e, dst); err != nil {
		c.core.misses.Add(1)
		return false, err, true
	}
	c.core.hits.Add(1)
	return true, nil, true
}

// readMany is Cache.readMany with the near cache: keys held near are found
// there, the others read in one round trip of one MGET per hash slot (one in
// all on a single node or in a group) and one PTTL per key, in one pipeline
// that a cluster client splits by node. PTTL is per key since Redis has no
// multi-key form; a script returning both would cost Redis more than the
// plain commands.
func (n *near) readMany(ctx context.Context, c *Cache, keys []string, found func(i int, data string) error) (hits, bad int, err error) {
	ks, err := c.valueKeys(keys)
	if err != nil {
		return 0, 0, err
	}
	var first error
	take := func(i int, data string) {
		if err := found(i, data); err != nil {
			if first == nil {
				first = err
			}
			bad++
			return
		}
		hits++
	}
	type miss struct {
		i    int
		nk   nearKey
		st   *atomic.Uint64
		s0   uint64
		pttl *redis.DurationCmd
	}
	var misses []miss
	var mks []string // the misses' Redis keys
	for i, k := range ks {
		nk, _ := n.parse(k)
		if e, ok := n.lookup(nk); ok {
			take(i, e.val)
			continue
		}
		st := n.stripe(nk)
		misses = append(misses, miss{i: i, nk: nk, st: st, s0: st.Load()})
		mks = append(mks, k)
	}
	if len(misses) > 0 {
		groups := n.c.bySlot(mks)
		mgets := make([]*redis.SliceCmd, len(groups))
		e0, start := n.epoch.Load(), n.now()
		err := n.c.do(ctx, func(ctx context.Context) error {
			p := n.c.client.Pipeline()
			for g, idx := range groups {
				mgets[g] = p.MGet(ctx, pick(mks, idx)...)
			}
			for j := range misses {
				misses[j].pttl = p.PTTL(ctx, mks[j])
			}
			_, err := p.Exec(ctx)
			return err
		})
		for g := 0; err == nil && g < len(groups); g++ {
			if got := len(mgets[g].Val()); got != len(groups[g]) {
				err = fmt.Errorf("MGET replied %d values for %d keys", got, len(groups[g]))
			}
		}
		if err != nil {
			n.c.misses.Add(int64(len(keys)))
			return 0, 0, fmt.Errorf("cache: get many: %w", err)
		}
		for g, idx := range groups {
			for j, v := range mgets[g].Val() {
				val, ok := v.(string)
				if !ok {
					continue // nil: not found
				}
				m := misses[idx[j]]
				n.install(ctx, m.nk, ks[m.i], val, start, m.pttl.Val(), m.s0, e0, m.st)
				take(m.i, val)
			}
		}
	}
	n.c.hits.Add(int64(hits))
	n.c.misses.Add(int64(len(keys) - hits))
	return hits, bad, first
}

// close stops the tracking connections; reads go to Redis after it.
func (n *near) close() {
	if n == nil {
		return
	}
	n.trk.close()
	n.bump(false)
}

// Close stops the near cache's tracking connections and drops what it
// holds; reads go to Redis after it. It does not close the client. A Cache
// without a near cache needs no Close; group views share their Cache's.
func (c *Cache) Close() error {
	c.core.near.close()
	return nil
}

// stats fills the near cache's fields of s.
func (n *near) stats(s *Stats) {
	if n == nil {
		return
	}
	s.NearHits = n.hits.Load()
	s.NearInvalidations = n.invalidations.Load()
	s.NearEvictions = n.evictions.Load()
	n.store.CleanUp() // apply pending writes and evictions to the size
	s.NearBytes = int64(n.store.WeightedSize())
	s.NearLive = n.epoch.Load()&1 == 1
}

// Near cache metrics, listed in TELEMETRY_NAMES.md.
const (
	metricNearEvents = "redquota.cache.near.events"
	metricNearBytes  = "redquota.cache.near.bytes"
	metricNearLive   = "redquota.cache.near.live"
	attrEvent        = attribute.Key("redquota.event")
)

// initTelemetry registers the near cache's observable metrics on m.
func (n *near) initTelemetry(m metric.Meter) {
	events := [3]metric.ObserveOption{
		metric.WithAttributeSet(attribute.NewSet(attrEvent.String("hit"))),
		metric.WithAttributeSet(attribute.NewSet(attrEvent.String("invalidation"))),
		metric.WithAttributeSet(attribute.NewSet(attrEvent.String("eviction"))),
	}
	// Constructors fail only on invalid names; ours are constant.
	_, _ = m.Int64ObservableCounter(metricNearEvents,
		metric.WithDescription("Near cache events: hits (reads answered without Redis), invalidations (values dropped because Redis reported a change or this process wrote), evictions (values dropped for the memory bound)."),
		metric.WithUnit("{event}"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(n.hits.Load(), events[0])
			o.Observe(n.invalidations.Load(), events[1])
			o.Observe(n.evictions.Load(), events[2])
			return nil
		}))
	_, _ = m.Int64ObservableGauge(metricNearBytes,
		metric.WithDescription("Near cache size, as Options.NearMaxBytes counts it."),
		metric.WithUnit("By"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(n.store.WeightedSize()))
			return nil
		}))
	_, _ = m.Int64ObservableGauge(metricNearLive,
		metric.WithDescription("1 while every Redis node has a live tracking connection and the near cache serves reads, else 0."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(n.epoch.Load() & 1))
			return nil
		}))
}
