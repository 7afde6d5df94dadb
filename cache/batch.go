package cache

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/redis/go-redis/v9"
)

// SetMany stores every value of items under its key, all with ttl, in one round
// trip: one pipeline of SET … PX, which a cluster client splits into one
// pipeline per master, sent concurrently. Every value is encoded and checked
// before anything is written. The writes are not atomic: after an error some
// may have been applied.
func (c *Cache) SetMany(ctx context.Context, items map[string]any, ttl time.Duration) error {
	ctx, span := c.core.start(ctx, opSetMany)
	if span.IsRecording() {
		span.SetAttributes(attrKeys.Int(len(items)))
	}
	err := c.setMany(ctx, items, ttl)
	c.core.finish(ctx, span, opSetMany, resultOf(err), err)
	return err
}

// encodeItems checks every key and encodes every value of items, before
// anything is written: their Redis keys, and the encoded values ([]byte) in
// the same order.
func (c *Cache) encodeItems(items map[string]any) ([]string, []any, error) {
	ks := make([]string, 0, len(items))
	vals := make([]any, 0, len(items))
	for key, v := range items {
		k, err := c.valueKey(key)
		if err != nil {
			return nil, nil, err
		}
		data, err := c.core.encode(key, v)
		if err != nil {
			return nil, nil, err
		}
		ks, vals = append(ks, k), append(vals, data)
	}
	return ks, vals, nil
}

func (c *Cache) setMany(ctx context.Context, items map[string]any, ttl time.Duration) error {
	if len(items) == 0 {
		return c.err
	}
	exp, _, err := ttlArg(ttl)
	if err != nil {
		return err
	}
	ks, vals, err := c.encodeItems(items)
	if err != nil {
		return err
	}
	if c.head != "" {
		// In a group a write drops the values' old tags (see SetTagged).
		return c.setTagged(ctx, ks, vals, ttl, nil)
	}
	if len(ks) == 1 {
		return c.core.set(ctx, ks[0], vals[0].([]byte), exp)
	}
	err = c.core.do(ctx, func(ctx context.Context) error {
		p := c.core.client.Pipeline()
		for i, k := range ks {
			p.Set(ctx, k, vals[i], exp)
		}
		_, err := p.Exec(ctx)
		return err
	})
	c.core.near.wrote(ks...)
	if err != nil {
		return fmt.Errorf("cache: set many: %w", err)
	}
	return nil
}

// GetMany decodes the values of keys into dst, a non-nil map[string]T or a
// pointer to one (a nil map there is made), and returns how many were found.
// Keys without a value are left out of dst. It costs one MGET per hash slot (one
// in all on a single node or for a group view), sent in one pipeline. A Redis
// error counts every key as a miss and is returned with 0; a value that cannot
// be decoded is left out and its error returned after the others are decoded.
func (c *Cache) GetMany(ctx context.Context, keys []string, dst any) (int, error) {
	m := reflect.ValueOf(dst)
	if m.Kind() == reflect.Pointer && !m.IsNil() && m.Elem().Kind() == reflect.Map {
		if m.Elem().IsNil() {
			m.Elem().Set(reflect.MakeMap(m.Elem().Type()))
		}
		m = m.Elem()
	}
	if m.Kind() != reflect.Map || m.IsNil() || m.Type().Key().Kind() != reflect.String {
		return 0, fmt.Errorf("cache: GetMany into %T: %w", dst, ErrInvalidDst)
	}
	// Every value is decoded into v, zeroed first, and copied into the map with
	// the key set in k: no allocation per value but the decoder's own.
	v, k := reflect.New(m.Type().Elem()), reflect.New(m.Type().Key()).Elem()
	into := v.Interface()
	return c.getMany(ctx, keys, func(i int, data string) error {
		v.Elem().SetZero()
		if err := c.core.decode(keys[i], data, into); err != nil {
			return err
		}
		k.SetString(keys[i])
		m.SetMapIndex(k, v.Elem())
		return nil
	})
}

// GetManyOf returns the values of keys that c holds, decoded as T, keyed by key:
// GetMany without reflection. Errors are as for GetMany; the map holds what was
// decoded.
func GetManyOf[T any](ctx context.Context, c *Cache, keys []string) (map[string]T, error) {
	out := make(map[string]T, len(keys))
	var zero T
	v := new(T) // every value is decoded here, zeroed first, and copied into out
	_, err := c.getMany(ctx, keys, func(i int, data string) error {
		*v = zero
		if err := c.core.decode(keys[i], data, v); err != nil {
			return err
		}
		out[keys[i]] = *v
		return nil
	})
	return out, err
}

// getMany reads keys and calls found with the index and bytes of each value found.
// It counts each key as a hit, a miss or an error (a Redis error, or a value
// found that could not be decoded).
func (c *Cache) getMany(ctx context.Context, keys []string, found func(i int, data string) error) (int, error) {
	ctx, span := c.core.start(ctx, opGetMany)
	n, bad, err := c.readMany(ctx, keys, found)
	if err != nil && n == 0 && bad == 0 {
		bad = len(keys) // a Redis error or bad input: every key failed
	}
	c.core.count(ctx, opGetMany, resultHit, int64(n))
	c.core.count(ctx, opGetMany, resultMiss, int64(len(keys)-n-bad))
	c.core.count(ctx, opGetMany, resultError, int64(bad))
	if span.IsRecording() {
		span.SetAttributes(attrKeys.Int(len(keys)), attrFound.Int(n))
	}
	r := resultOK
	switch {
	case err != nil:
		r = resultError
	case n > 0:
		r = resultHit
	case len(keys) > 0:
		r = resultMiss
	}
	end(span, r, err, "")
	return n, err
}

// readMany is getMany without telemetry; it also returns how many values
// found could not be decoded.
func (c *Cache) readMany(ctx context.Context, keys []string, found func(i int, data string) error) (n, bad int, err error) {
	if len(keys) == 0 {
		return 0, 0, c.err
	}
	if c.core.near != nil {
		return c.core.near.readMany(ctx, c, keys, found)
	}
	ks, err := c.valueKeys(keys)
	if err != nil {
		return 0, 0, err
	}
	var groups [][]int // nil: one MGET of every key, in order
	if c.core.masters != nil || c.core.shards != nil {
		if groups = c.core.bySlot(ks); len(groups) == 1 {
			groups = nil // one slot: the group is every key, in order
		}
	}
	var one []any       // the reply of the single MGET
	var results [][]any // or of each group's
	err = c.core.do(ctx, func(ctx context.Context) error {
		if groups == nil {
			var err error
			one, err = c.core.client.MGet(ctx, ks...).Result()
			return err
		}
		p := c.core.client.Pipeline()
		for _, g := range groups {
			p.MGet(ctx, pick(ks, g)...)
		}
		cmds, err := p.Exec(ctx)
		if err != nil {
			return err
		}
		results = make([][]any, len(cmds))
		for i, cmd := range cmds {
			sc, ok := cmd.(*redis.SliceCmd)
			if !ok {
				return fmt.Errorf("unexpected reply %T to MGET", cmd)
			}
			results[i] = sc.Val()
		}
		return nil
	})
	if err == nil && groups != nil && len(results) != len(groups) {
		err = fmt.Errorf("%d replies to %d MGETs", len(results), len(groups))
	}
	if err != nil {
		c.core.misses.Add(int64(len(keys)))
		return 0, 0, fmt.Errorf("cache: get many: %w", err)
	}
	if groups == nil {
		results = [][]any{one}
	}
	var first error
	for gi, vals := range results {
		want := len(ks)
		if groups != nil {
			want = len(groups[gi])
		}
		if len(vals) != want {
			c.core.misses.Add(int64(len(keys)))
			return 0, 0, fmt.Errorf("cache: get many: MGET replied %d values for %d keys", len(vals), want)
		}
		for j, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue
			}
			i := j
			if groups != nil {
				i = groups[gi][j]
			}
			if err := found(i, s); err != nil {
				if first == nil {
					first = err
				}
				bad++
				continue
			}
			n++
		}
	}
	c.core.hits.Add(int64(n))
	c.core.misses.Add(int64(len(keys) - n))
	return n, bad, first
}
