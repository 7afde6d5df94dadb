package cache

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// SetMany stores every value of items under its key, all with ttl and tags
// (see Set), in one round trip. Every value is encoded and checked before
// anything is written. Outside a group it is one pipeline of SET … PX, which
// a cluster client splits into one pipeline per master, sent concurrently;
// the writes are not atomic: after an error some may have been applied. In a
// group each batch of Options.Batch values (1000 by default) is one atomic
// script call.
func (c *Cache) SetMany(ctx context.Context, items map[string]any, ttl time.Duration, tags ...string) error {
	o := opSetMany
	if len(tags) > 0 {
		o = opSetTagged
	}
	ctx, span := c.core.start(ctx, o)
	if span.IsRecording() {
		span.SetAttributes(attrKeys.Int(len(items)))
		if o == opSetTagged {
			span.SetAttributes(attrTags.Int(len(tags)))
		}
	}
	var err error
	if o == opSetTagged {
		err = c.setManyTagged(ctx, items, ttl, tags)
	} else {
		err = c.setMany(ctx, items, ttl)
	}
	c.core.finish(ctx, span, o, resultOf(err), err)
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
		// In a group a write drops the values' old tags (see Set).
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

// GetMany returns the values of keys that c holds, decoded as T, keyed by key;
// keys without a value are left out. It costs one MGET per hash slot (one in
// all on a single node or for a group view), sent in one pipeline. A Redis
// error counts every key as a miss and is returned with an empty map; a value
// that cannot be decoded is left out and its error returned after the others
// are decoded.
func GetMany[T any](ctx context.Context, c *Cache, keys []string) (map[string]T, error) {
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
