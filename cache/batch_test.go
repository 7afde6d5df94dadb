package cache_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// SetMany is one pipeline (one round trip per node), and one script call for a
// group view (which keeps tags exact); GetMany is one MGET per slot in one
// pipeline, and a single MGET for a group view, even on a cluster.
func TestBatchRoundTrips(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		if err := script.Load(ctx, b.Client); err != nil { // EVALSHA finds them: one call
			t.Fatal(err)
		}
		_, cluster := b.Client.(*redis.ClusterClient)
		const n = 50
		items := map[string]any{}
		var keys []string
		slots := map[int]bool{}
		for i := 0; i < n; i++ {
			k := fmt.Sprintf("sym%d", i)
			items[k] = ticker{Symbol: k, Price: float64(i) + 0.25}
			keys = append(keys, k)
			slots[redistest.Slot(e.key(e.c, k))] = true
		}
		for _, c := range []*cache.Cache{e.c, e.c.Group("binance")} {
			grouped := c.GroupName() != ""
			sets, mgets := int64(0), int64(0)
			if b.Mini == nil {
				sets, mgets = commandCalls(t, b, "set"), commandCalls(t, b, "mget")
			}
			cmds, pipes := e.hk.cmds.Load(), e.hk.pipes.Load()
			if err := c.SetMany(ctx, items, time.Minute); err != nil {
				t.Fatal(err)
			}
			if grouped {
				if d := e.hk.cmds.Load() - cmds; d != 1 || e.hk.pipes.Load() != pipes {
					t.Fatalf("group SetMany: %d commands, %d pipelines; want 1 script call", d, e.hk.pipes.Load()-pipes)
				}
			} else if d := e.hk.pipes.Load() - pipes; d != 1 || e.hk.cmds.Load() != cmds {
				t.Fatalf("SetMany: %d pipelines, %d commands; want 1 pipeline", d, e.hk.cmds.Load()-cmds)
			}
			if b.Mini == nil {
				if d := commandCalls(t, b, "set") - sets; d != n {
					t.Fatalf("SetMany ran %d SETs on the server, want %d", d, n)
				}
			}
			if b.Mini == nil {
				mgets = commandCalls(t, b, "mget")
			}
			cmds, pipes = e.hk.cmds.Load(), e.hk.pipes.Load()
			got, err := cache.GetMany[ticker](ctx, c, append(keys, "missing"))
			if err != nil || len(got) != n {
				t.Fatalf("GetMany: %d found, %v", len(got), err)
			}
			for k, v := range items {
				if got[k] != v {
					t.Fatalf("%s: got %+v, want %+v", k, got[k], v)
				}
			}
			if _, ok := got["missing"]; ok {
				t.Fatal("missing key in map")
			}
			wantMGets := int64(1)
			if cluster && !grouped {
				wantMGets = int64(len(slots) + 1) // "missing" adds a slot
				if slots[redistest.Slot(e.key(e.c, "missing"))] {
					wantMGets--
				}
				if d := e.hk.pipes.Load() - pipes; d != 1 {
					t.Fatalf("cluster GetMany: %d pipelines, want 1", d)
				}
			} else if d := e.hk.cmds.Load() - cmds; d != 1 || e.hk.pipes.Load() != pipes {
				t.Fatalf("GetMany: %d commands, %d pipelines; want 1 MGET", d, e.hk.pipes.Load()-pipes)
			}
			if b.Mini == nil {
				if d := commandCalls(t, b, "mget") - mgets; d != wantMGets {
					t.Fatalf("GetMany ran %d MGETs on the server, want %d", d, wantMGets)
				}
			}
			if err := c.Delete(ctx, keys...); err != nil {
				t.Fatal(err)
			}
			if found, err := cache.GetMany[ticker](ctx, c, keys); err != nil || len(found) != 0 {
				t.Fatalf("after Delete: %d found, %v", len(found), err)
			}
		}
	})
}

// SetMany applies one TTL to every value.
func TestSetManyTTL(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		if err := e.c.SetMany(ctx, map[string]any{"a": 1, "b": 2}, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"a", "b"} {
			// A second of slack for a loaded machine's pause between the
			// write and this read (100 ms, as before, left it little room).
			pttl, err := b.Client.PTTL(ctx, e.key(e.c, k)).Result()
			if err != nil || pttl <= 4*time.Second || pttl > 5*time.Second {
				t.Fatalf("%s PTTL %v %v", k, pttl, err)
			}
		}
		if b.Mini != nil {
			e.advance(5 * time.Second)
			if m, _ := cache.GetMany[int](ctx, e.c, []string{"a", "b"}); len(m) != 0 {
				t.Fatalf("%d values outlived their 5 s", len(m))
			}
		}
	})
}

// GetMany decodes every value afresh: nothing of one value (a field the next
// one lacks, a slice, a map, a pointer, a value that failed half-way) shows in
// another.
func TestGetManyValuesApart(t *testing.T) {
	type book struct {
		Name string         `json:"name,omitempty"`
		Bids []float64      `json:"bids,omitempty"`
		Meta map[string]int `json:"meta,omitempty"`
		Next *book          `json:"next,omitempty"`
	}
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newEnv(t, b, cache.Options{})
		ctx := context.Background()
		// Strings are stored as they are: these are the JSON values.
		err := e.c.SetMany(ctx, map[string]any{
			"a":   `{"name":"a","bids":[1,2],"meta":{"x":1},"next":{"name":"n"}}`,
			"b":   `{"bids":[3]}`,
			"bad": `{"name":"bad","bids":[4],"meta":"not a map"}`,
			"c":   `{}`,
		}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		keys := []string{"a", "b", "bad", "c"}
		want := map[string]book{
			"a": {Name: "a", Bids: []float64{1, 2}, Meta: map[string]int{"x": 1}, Next: &book{Name: "n"}},
			"b": {Bids: []float64{3}},
			"c": {},
		}
		check := func(name string, got map[string]book, found int, err error) {
			t.Helper()
			if !errors.Is(err, cache.ErrCodec) || found != 3 || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: %d found, %v\ngot  %+v\nwant %+v", name, found, err, got, want)
			}
			got["a"].Bids[0] = 99 // shares no memory with another value
			if got["b"].Bids[0] != 3 {
				t.Fatalf("%s: values share a slice", name)
			}
		}

		got, err := cache.GetMany[book](ctx, e.c, keys)
		check("GetMany", got, len(got), err)

		pm, err := cache.GetMany[*book](ctx, e.c, keys)
		got = map[string]book{}
		for k, v := range pm {
			got[k] = *v
		}
		check("GetMany of pointers", got, len(pm), err)
	})
}

// Values are decoded from the bytes Redis replied, without a copy first:
// decoded strings refer to the reply (unless Options.CopyStrings), a *[]byte gets
// a copy of its own, and nothing decoded changes when later reads reuse the
// client's buffers.
func TestDecodeFromReply(t *testing.T) {
	type tick struct {
		Symbol string `json:"symbol"`
		Note   string `json:"note"`
		Price  float64
	}
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		for _, o := range []cache.Options{{Codec: cache.JSON}, {Codec: cache.JSON, CopyStrings: true}, {Codec: cache.Msgpack}} {
			codec := o.Codec
			e := newEnv(t, b, o)
			want := map[string]tick{}
			items := map[string]any{}
			var keys []string
			for i := range 20 {
				k := fmt.Sprint("s", i)
				want[k] = tick{Symbol: strings.Repeat(k, 10), Note: "caf\u00e9 \"" + k + "\"", Price: float64(i) + .5}
				items[k], keys = want[k], append(keys, k)
			}
			if err := e.c.SetMany(ctx, items, time.Minute); err != nil {
				t.Fatal(err)
			}
			var one tick
			if found, err := e.c.Get(ctx, "s0", &one); !found || err != nil {
				t.Fatal(found, err)
			}
			many, err := cache.GetMany[tick](ctx, e.c, keys[:10])
			if err != nil {
				t.Fatal(err)
			}
			viaMap, err := cache.GetMany[tick](ctx, e.c, keys[10:])
			if err != nil {
				t.Fatal(err)
			}
			// Read everything again, many times, through the same connections.
			for range 20 {
				if _, err := cache.GetMany[tick](ctx, e.c, keys); err != nil {
					t.Fatal(err)
				}
			}
			if one != want["s0"] {
				t.Fatalf("%T: Get gave %+v, want %+v", codec, one, want["s0"])
			}
			for k, v := range many {
				if v != want[k] {
					t.Fatalf("%T: GetMany[%s] = %+v, want %+v", codec, k, v, want[k])
				}
			}
			for k, v := range viaMap {
				if v != want[k] {
					t.Fatalf("%T: GetMany[%s] = %+v, want %+v", codec, k, v, want[k])
				}
			}
			if len(many)+len(viaMap) != 20 {
				t.Fatalf("%T: %d + %d values", codec, len(many), len(viaMap))
			}
		}

		// A *[]byte is the caller's to change: the next read is unchanged.
		e := newEnv(t, b, cache.Options{})
		if err := e.c.Set(ctx, "raw", []byte("abc"), time.Minute); err != nil {
			t.Fatal(err)
		}
		for round := range 2 {
			var raw []byte
			if _, err := e.c.Get(ctx, "raw", &raw); err != nil || string(raw) != "abc" {
				t.Fatalf("round %d: Get raw %q %v", round, raw, err)
			}
			raw[0] = 'X'
			m, err := cache.GetMany[[]byte](ctx, e.c, []string{"raw", "raw"})
			if err != nil || string(m["raw"]) != "abc" {
				t.Fatalf("round %d: GetMany raw %q %v", round, m["raw"], err)
			}
			m["raw"][0] = 'Y'
		}
	})
}
