package cache

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// checkDst returns an ErrInvalid error unless dst is a non-nil pointer.
func checkDst(dst any) error {
	switch d := dst.(type) {
	case nil:
		return invalid("", errBadDst)
	case *[]byte:
		if d != nil {
			return nil
		}
	case *string:
		if d != nil {
			return nil
		}
	}
	if rv := reflect.ValueOf(dst); rv.Kind() != reflect.Pointer || rv.IsNil() {
		return invalid(fmt.Sprintf("%T", dst), errBadDst)
	}
	return nil
}

// Set stores value under key for ttl (at least 1 ms, or NoExpiry), replacing any
// value and TTL the key had, carrying exactly tags afterwards.
//
// Tags need a group view (ErrInvalid otherwise): a value and its tag sets
// share the group's slot. In a group, Set is one script call: the value
// leaves the tag sets of its previous write, is written with PX, and joins
// the tag set of each tag; each tag set is pruned of members that have
// expired and is given a TTL that ends when its last member's does.
// InvalidateTags later deletes the values that carry a tag at that moment.
//
// Tags are exact: a value set again (with other tags, or none), deleted, or
// expired no longer carries its old tags, and invalidating one of them leaves
// it alone. In a group every write keeps this up: Set, SetMany and GetOrLoad
// write through the same script and Delete through another, still one round
// trip; Get is untouched. Each tagged value has a small tag list key beside
// it (kind "l"), expiring with it. Writes made around the cache
// (DeletePattern, other clients) do not update tags.
func (c *Cache) Set(ctx context.Context, key string, value any, ttl time.Duration, tags ...string) error {
	o := opSet
	if len(tags) > 0 {
		o = opSetTagged
	}
	ctx, span := c.core.start(ctx, o)
	if o == opSetTagged && span.IsRecording() {
		span.SetAttributes(attrKeys.Int(1), attrTags.Int(len(tags)))
	}
	err := c.setOne(ctx, key, value, ttl, tags)
	c.core.finish(ctx, span, o, resultOf(err), err)
	return err
}

func (c *Cache) setOne(ctx context.Context, key string, value any, ttl time.Duration, tags []string) error {
	k, err := c.valueKey(key)
	if err != nil {
		return err
	}
	exp, _, err := ttlArg(ttl)
	if err != nil {
		return err
	}
	data, err := c.core.encode(key, value)
	if err != nil {
		return err
	}
	if c.head != "" || len(tags) > 0 {
		// In a group a write drops the value's old tags (see Set).
		return c.setTagged(ctx, []string{k}, []any{data}, ttl, tags)
	}
	return c.core.set(ctx, k, data, exp)
}

func (c *core) set(ctx context.Context, k string, data []byte, exp time.Duration) error {
	err := c.do(ctx, func(ctx context.Context) error { return c.client.Set(ctx, k, data, exp).Err() })
	c.near.wrote(k)
	if err != nil {
		return fmt.Errorf("cache: set: %w", err)
	}
	return nil
}

// Get decodes the value of key into dst, a non-nil pointer, and reports whether
// it was found. A miss is (false, nil). A Redis error is counted as a miss and an
// error and returned as (false, err); callers that degrade treat it as a miss.
func (c *Cache) Get(ctx context.Context, key string, dst any) (bool, error) {
	ctx, span := c.core.start(ctx, opGet)
	found, err := c.getOne(ctx, key, dst)
	r := resultMiss
	switch {
	case err != nil:
		r = resultError
	case found:
		r = resultHit
	}
	if span.IsRecording() {
		span.SetAttributes(attrHit.Bool(found))
	}
	c.core.finish(ctx, span, opGet, r, err)
	return found, err
}

func (c *Cache) getOne(ctx context.Context, key string, dst any) (bool, error) {
	if err := checkDst(dst); err != nil {
		return false, err
	}
	if c.core.near != nil {
		if found, err, done := c.getFast(key, dst); done {
			return found, err
		}
	}
	k, err := c.valueKey(key)
	if err != nil {
		return false, err
	}
	return c.core.get(ctx, key, k, dst, true)
}

// get reads the Redis key k into dst, counting a hit or a miss when count is set.
func (c *core) get(ctx context.Context, key, k string, dst any, count bool) (bool, error) {
	if c.near != nil {
		return c.near.get(ctx, key, k, dst, count)
	}
	var data string
	err := c.do(ctx, func(ctx context.Context) error {
		var err error
		data, err = c.client.Get(ctx, k).Result()
		return err
	})
	if err != nil {
		if count {
			c.misses.Add(1)
		}
		if err == redis.Nil {
			return false, nil
		}
		return false, fmt.Errorf("cache: get: %w", err)
	}
	if err := c.decode(key, data, dst); err != nil {
		if count {
			c.misses.Add(1)
		}
		return false, err
	}
	if count {
		c.hits.Add(1)
	}
	return true, nil
}

// Exists reports whether key holds a value.
func (c *Cache) Exists(ctx context.Context, key string) (bool, error) {
	ctx, span := c.core.start(ctx, opExists)
	found, err := c.exists(ctx, key)
	if span.IsRecording() {
		span.SetAttributes(attrExists.Bool(found))
	}
	c.core.finish(ctx, span, opExists, resultOf(err), err)
	return found, err
}

func (c *Cache) exists(ctx context.Context, key string) (bool, error) {
	k, err := c.valueKey(key)
	if err != nil {
		return false, err
	}
	var n int64
	err = c.core.do(ctx, func(ctx context.Context) error {
		var err error
		n, err = c.core.client.Exists(ctx, k).Result()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("cache: exists: %w", err)
	}
	return n > 0, nil
}

// Delete removes the values of keys (UNLINK: memory is freed off the main
// thread). Keys that hold nothing are ignored. On a cluster it sends one UNLINK
// per slot, in one pipeline. In a group it is one script call per
// Options.Batch keys that also takes the values out of their tag sets.
func (c *Cache) Delete(ctx context.Context, keys ...string) error {
	ctx, span := c.core.start(ctx, opDelete)
	if span.IsRecording() {
		span.SetAttributes(attrKeys.Int(len(keys)))
	}
	err := c.delete(ctx, keys)
	c.core.finish(ctx, span, opDelete, resultOf(err), err)
	return err
}

func (c *Cache) delete(ctx context.Context, keys []string) error {
	ks, err := c.valueKeys(keys)
	if err != nil || len(ks) == 0 {
		return err
	}
	if c.head != "" {
		return c.deleteGrouped(ctx, ks)
	}
	groups := c.core.bySlot(ks)
	err = c.core.do(ctx, func(ctx context.Context) error {
		if len(groups) == 1 {
			return c.core.client.Unlink(ctx, ks...).Err()
		}
		p := c.core.client.Pipeline()
		for _, g := range groups {
			p.Unlink(ctx, pick(ks, g)...)
		}
		_, err := p.Exec(ctx)
		return err
	})
	c.core.near.wrote(ks...)
	if err != nil {
		return fmt.Errorf("cache: delete: %w", err)
	}
	return nil
}

// valueKeys validates keys and returns their Redis keys, as valueKey does. The
// keys are cut from one string, so a batch costs two allocations, not one per
// key.
func (c *Cache) valueKeys(keys []string) ([]string, error) {
	out := make([]string, len(keys))
	size := 0
	for i, key := range keys {
		esc, err := c.escapeKey(key)
		if err != nil {
			return nil, err
		}
		out[i] = esc
		size += len(c.valPre) + len(esc) + len(c.valSuf)
	}
	var b strings.Builder
	b.Grow(size)
	for _, esc := range out {
		b.WriteString(c.valPre)
		b.WriteString(esc)
		b.WriteString(c.valSuf)
	}
	all := b.String()
	for i, esc := range out {
		n := len(c.valPre) + len(esc) + len(c.valSuf)
		out[i], all = all[:n], all[n:]
	}
	return out, nil
}

// pick returns ks[i] for each i in idx.
func pick(ks []string, idx []int) []string {
	out := make([]string, len(idx))
	for j, i := range idx {
		out[j] = ks[i]
	}
	return out
}
