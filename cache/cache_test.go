package cache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
)

type ticker struct {
	Symbol string  `json:"symbol" msgpack:"symbol"`
	Price  float64 `json:"price" msgpack:"price"`
	Volume int64   `json:"volume" msgpack:"volume"`
}

func TestSetGetDeleteExists(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		for _, c := range []*cache.Cache{e.c, e.c.Group("binance")} {
			in := ticker{"BTC-USDT", 45000.50, math.MaxInt64}
			if err := c.Set(ctx, "btc:price", in, time.Minute); err != nil {
				t.Fatal(err)
			}
			var out ticker
			found, err := c.Get(ctx, "btc:price", &out)
			if err != nil || !found || out != in {
				t.Fatalf("Get = %v, %v, %+v; want %+v", found, err, out, in)
			}
			if ok, err := c.Exists(ctx, "btc:price"); err != nil || !ok {
				t.Fatalf("Exists = %v, %v", ok, err)
			}
			if err := c.Delete(ctx, "btc:price", "never-set"); err != nil {
				t.Fatal(err)
			}
			found, err = c.Get(ctx, "btc:price", &out)
			if err != nil || found {
				t.Fatalf("Get after Delete = %v, %v", found, err)
			}
			if ok, err := c.Exists(ctx, "btc:price"); err != nil || ok {
				t.Fatalf("Exists after Delete = %v, %v", ok, err)
			}
		}
		st, err := e.c.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Hits != 2 || st.Misses != 2 || st.HitRate != 0.5 {
			t.Fatalf("stats %+v: want 2 hits, 2 misses", st)
		}
	})
}

// Keys with '{', '}' or ':' stay in their own slot and never collide.
func TestKeyEscaping(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		ks := []string{"a:b", "a}:{b", "{a}", "a%3Ab", "a", "a:v"}
		for i, k := range ks {
			if err := e.c.Set(ctx, k, i, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		for i, k := range ks {
			var v int
			if found, err := e.c.Get(ctx, k, &v); err != nil || !found || v != i {
				t.Fatalf("%q: %v %v %d, want %d", k, found, err, v, i)
			}
			if rk := e.key(e.c, k); strings.Count(rk, "{") != 1 || strings.Count(rk, "}") != 1 {
				t.Fatalf("%q became %q: more than one hash tag", k, rk)
			}
		}
	})
}

func TestCodecs(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		for _, codec := range []cache.Codec{cache.JSON, cache.Msgpack} {
			e := newEnv(t, b, cache.Options{Codec: codec})
			// Typed destinations: exact.
			if err := e.c.Set(ctx, "f", 45000.50, time.Minute); err != nil {
				t.Fatal(err)
			}
			var f float64
			if _, err := e.c.Get(ctx, "f", &f); err != nil || f != 45000.50 {
				t.Fatalf("%T float: %v %v", codec, f, err)
			}
			if err := e.c.Set(ctx, "i", int64(math.MaxInt64), time.Minute); err != nil {
				t.Fatal(err)
			}
			var i int64
			if _, err := e.c.Get(ctx, "i", &i); err != nil || i != math.MaxInt64 {
				t.Fatalf("%T int64: %v %v", codec, i, err)
			}
			// Into any: still exact.
			var a any
			if _, err := e.c.Get(ctx, "i", &a); err != nil {
				t.Fatal(err)
			}
			switch x := a.(type) {
			case json.Number:
				if n, err := x.Int64(); err != nil || n != math.MaxInt64 {
					t.Fatalf("json any: %v %v", x, err)
				}
			case int64:
				if x != math.MaxInt64 {
					t.Fatalf("msgpack any: %v", x)
				}
			default:
				t.Fatalf("%T into any gave %T %v", codec, a, a)
			}
			var m map[string]any
			if err := e.c.Set(ctx, "m", map[string]any{"price": 45000.50}, time.Minute); err != nil {
				t.Fatal(err)
			}
			if _, err := e.c.Get(ctx, "m", &m); err != nil {
				t.Fatal(err)
			}
			if n, ok := m["price"].(json.Number); ok {
				if n.String() != "45000.5" {
					t.Fatalf("json map number %q", n)
				}
			} else if m["price"] != 45000.50 {
				t.Fatalf("%T map: %#v", codec, m)
			}
			// Raw bytes and strings pass through untouched.
			if err := e.c.Set(ctx, "raw", []byte("\xc1\xffnot json"), time.Minute); err != nil {
				t.Fatal(err)
			}
			var raw []byte
			if _, err := e.c.Get(ctx, "raw", &raw); err != nil || string(raw) != "\xc1\xffnot json" {
				t.Fatalf("raw: %q %v", raw, err)
			}
			got, err := b.Client.Get(ctx, e.key(e.c, "raw")).Result()
			if err != nil || got != "\xc1\xffnot json" {
				t.Fatalf("raw stored as %q", got)
			}
			if err := e.c.Set(ctx, "s", "hello", time.Minute); err != nil {
				t.Fatal(err)
			}
			var s string
			if _, err := e.c.Get(ctx, "s", &s); err != nil || s != "hello" {
				t.Fatalf("string: %q %v", s, err)
			}
			// A value that is not valid for the destination is a decode error.
			if found, err := e.c.Get(ctx, "raw", &f); found || !errors.Is(err, cache.ErrCodec) {
				t.Fatalf("decode of raw into float: %v %v", found, err)
			}
		}
	})
}

// Bad input returns a typed error and sends nothing to Redis.
func TestBadInput(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{MaxValueSize: 16})
		g := e.c.Group("g")
		ctx := context.Background()
		long := strings.Repeat("k", cache.MaxKeyLen+1)
		var dst int
		var nilPtr *int
		cases := []struct {
			name string
			err  error
			call func() error
		}{
			{"empty key", cache.ErrInvalid, func() error { return e.c.Set(ctx, "", 1, time.Second) }},
			{"long key", cache.ErrInvalid, func() error { return e.c.Set(ctx, long, 1, time.Second) }},
			{"empty key get", cache.ErrInvalid, func() error { _, err := e.c.Get(ctx, "", &dst); return err }},
			{"nil dst", cache.ErrInvalid, func() error { _, err := e.c.Get(ctx, "k", nil); return err }},
			{"nil pointer dst", cache.ErrInvalid, func() error { _, err := e.c.Get(ctx, "k", nilPtr); return err }},
			{"non-pointer dst", cache.ErrInvalid, func() error { _, err := e.c.Get(ctx, "k", dst); return err }},
			{"too large", cache.ErrInvalid, func() error { return e.c.Set(ctx, "k", strings.Repeat("x", 17), time.Second) }},
			{"zero ttl", cache.ErrInvalid, func() error { return e.c.Set(ctx, "k", 1, 0) }},
			{"negative ttl", cache.ErrInvalid, func() error { return e.c.Set(ctx, "k", 1, -time.Second) }},
			{"sub-ms ttl", cache.ErrInvalid, func() error { return e.c.Set(ctx, "k", 1, time.Microsecond) }},
			{"encode", cache.ErrCodec, func() error { return e.c.Set(ctx, "k", make(chan int), time.Second) }},
			{"encode NaN", cache.ErrCodec, func() error { return e.c.Set(ctx, "k", math.NaN(), time.Second) }},
			{"empty tag", cache.ErrInvalid, func() error { return g.Set(ctx, "k", 1, time.Second, "a", "") }},
			{"long tag", cache.ErrInvalid, func() error { return g.Set(ctx, "k", 1, time.Second, long) }},
			{"tag without group", cache.ErrInvalid, func() error { return e.c.Set(ctx, "k", 1, time.Second, "a") }},
			{"invalidate without group", cache.ErrInvalid, func() error { _, err := e.c.InvalidateTags(ctx, "a"); return err }},
			{"empty group", cache.ErrInvalid, func() error { return e.c.Group("").Set(ctx, "k", 1, time.Second) }},
			{"SetMany one bad", cache.ErrInvalid, func() error {
				return e.c.SetMany(ctx, map[string]any{"a": 1, "b": strings.Repeat("x", 17)}, time.Second)
			}},
			{"tagged SetMany one bad", cache.ErrCodec, func() error {
				return g.SetMany(ctx, map[string]any{"a": 1, "b": make(chan int)}, time.Second, "t")
			}},
			{"empty pattern", cache.ErrInvalid, func() error { _, err := e.c.DeletePattern(ctx, ""); return err }},
			{"GetOrLoad bad ttl", cache.ErrInvalid, func() error {
				_, err := cache.GetOrLoad(ctx, e.c, "k", 0, func(context.Context) (int, error) { return 1, nil })
				return err
			}},
			{"incr bad window", cache.ErrInvalid, func() error { _, _, err := e.c.Incr(ctx, "k", 1, 0); return err }},
		}
		for _, tc := range cases {
			before := e.hk.calls()
			err := tc.call()
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: err = %v, want %v", tc.name, err, tc.err)
			}
			if n := e.hk.calls() - before; n != 0 {
				t.Errorf("%s: sent %d calls to Redis", tc.name, n)
			}
		}
	})
}

// NoExpiry stores a value without a TTL.
func TestNoExpiry(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		if err := e.c.Set(ctx, "forever", 1, cache.NoExpiry); err != nil {
			t.Fatal(err)
		}
		ttl, err := b.Client.PTTL(ctx, e.key(e.c, "forever")).Result()
		if err != nil || ttl != -1 {
			t.Fatalf("PTTL = %v, %v; want -1 (no expiry)", ttl, err)
		}
		_ = e.c.Delete(ctx, "forever")
	})
}

// strictJSON wraps JSON to override Unmarshal: the cache must call it, not
// JSON's in-place decoding.
type strictJSON struct{ cache.Codec }

var errStrict = errors.New("strict codec")

func (strictJSON) Unmarshal(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", errStrict, err)
	}
	return nil
}

func TestCodecEmbeddingJSON(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		for _, codec := range []cache.Codec{strictJSON{cache.JSON}, &strictJSON{cache.JSON}} {
			e := newEnv(t, b, cache.Options{Codec: codec})
			if err := e.c.Set(ctx, "k", map[string]any{"price": 1, "unknown": 2}, time.Minute); err != nil {
				t.Fatal(err)
			}
			var v struct{ Price float64 }
			if found, err := e.c.Get(ctx, "k", &v); found || !errors.Is(err, errStrict) || !errors.Is(err, cache.ErrCodec) {
				t.Fatalf("%T: Get: %v %v, want the codec's own error", codec, found, err)
			}
			m, err := cache.GetMany[struct{ Price float64 }](ctx, e.c, []string{"k"})
			if len(m) != 0 || !errors.Is(err, errStrict) {
				t.Fatalf("%T: GetMany: %v %v, want the codec's own error", codec, m, err)
			}
		}
	})
}

// The default JSON codec decodes a reply in place: its strings cost no
// allocation, where Options.CopyStrings makes one per string.
func TestDecodeInPlaceAllocs(t *testing.T) {
	type names struct{ A, B, C string }
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		allocs := map[bool]float64{}
		for _, copyStrings := range []bool{false, true} {
			for _, codec := range []cache.Codec{nil, cache.JSON} { // the default, and JSON named
				e := newEnv(t, b, cache.Options{Codec: codec, CopyStrings: copyStrings})
				if err := e.c.Set(ctx, "k", names{"alpha", "beta", "gamma"}, time.Minute); err != nil {
					t.Fatal(err)
				}
				var v names
				// AllocsPerRun counts every allocation in the process, and a
				// client that ignores context deadlines has each call finish
				// in a goroutine of its own (internal/reach), whose allocations
				// can land in the next measurement: the fewest of three is the
				// call's own count.
				n := math.Inf(1)
				for range 3 {
					n = min(n, testing.AllocsPerRun(200, func() {
						if found, err := e.c.Get(ctx, "k", &v); !found || err != nil {
							t.Fatal(found, err)
						}
					}))
				}
				if v != (names{"alpha", "beta", "gamma"}) {
					t.Fatalf("decoded %+v", v)
				}
				if old, ok := allocs[copyStrings]; ok && old != n {
					t.Fatalf("CopyStrings=%v: %T makes %v allocations, the other form %v", copyStrings, codec, n, old)
				}
				allocs[copyStrings] = n
			}
		}
		if d := allocs[true] - allocs[false]; d != 3 {
			t.Fatalf("copying 3 strings costs %v more allocations than decoding in place (%v against %v), want 3",
				d, allocs[true], allocs[false])
		}
	})
}
