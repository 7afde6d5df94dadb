package cache

import (
	"context"
	"fmt"
	"time"

	"github.com/redquota/redquota/scripts"
)

// SetTagged stores value under key for ttl and lists key in the tag set of each
// tag, in one script call (scripts.SetTagged): the value is written with PX, each
// tag set is pruned of members that have expired, gets key, and is given a TTL
// that ends when its last member's does. InvalidateTags later deletes every value
// a tag lists. It needs a group view (ErrNoGroup otherwise): a value and its tag
// sets share the group's slot.
//
// Tags accumulate: a key set again with other tags stays listed under the old
// ones until they are pruned, so invalidating an old tag may delete it too.
func (c *Cache) SetTagged(ctx context.Context, key string, value any, ttl time.Duration, tags ...string) error {
	return c.SetManyTagged(ctx, map[string]any{key: value}, ttl, tags...)
}

// SetManyTagged is SetTagged for many values that share a TTL and tags. Every
// value is encoded and checked before anything is written; then each batch of
// Options.Batch values (1000 by default) is one atomic script call, so up to a
// batch is one round trip.
func (c *Cache) SetManyTagged(ctx context.Context, items map[string]any, ttl time.Duration, tags ...string) error {
	ctx, span := c.core.start(ctx, opSetTagged)
	if span.IsRecording() {
		span.SetAttributes(attrKeys.Int(len(items)), attrTags.Int(len(tags)))
	}
	err := c.setManyTagged(ctx, items, ttl, tags)
	c.core.finish(ctx, span, opSetTagged, resultOf(err), err)
	return err
}

func (c *Cache) setManyTagged(ctx context.Context, items map[string]any, ttl time.Duration, tags []string) error {
	if _, _, err := ttlArg(ttl); err != nil {
		return err
	}
	ks, vals, err := c.encodeItems(items)
	if err != nil {
		return err
	}
	return c.setTagged(ctx, ks, vals, ttl, tags)
}

// setTagged writes encoded values under the Redis keys ks with their tags.
func (c *Cache) setTagged(ctx context.Context, ks []string, vals []any, ttl time.Duration, tags []string) error {
	tks := make([]string, len(tags))
	for i, t := range tags {
		k, err := c.tagKey(t)
		if err != nil {
			return err
		}
		tks[i] = k
	}
	if c.err != nil {
		return c.err
	}
	if c.head == "" {
		return fmt.Errorf("cache: %w", ErrNoGroup)
	}
	_, ms, err := ttlArg(ttl)
	if err != nil {
		return err
	}
	for lo := 0; lo < len(ks); lo += c.core.batch {
		hi := min(lo+c.core.batch, len(ks))
		keys := make([]string, 0, hi-lo+len(tks))
		keys = append(append(keys, ks[lo:hi]...), tks...)
		args := make([]any, 0, 2+hi-lo)
		args = append(append(args, hi-lo, ms), vals[lo:hi]...)
		err := c.core.do(ctx, func(ctx context.Context) error {
			return scripts.SetTagged.Run(ctx, c.core.client, keys, args...).Err()
		})
		c.core.near.wrote(ks[lo:hi]...)
		if err != nil {
			return fmt.Errorf("cache: set tagged: %w", err)
		}
	}
	return nil
}

// InvalidateTags deletes every value listed in the tag sets of tags, and the tag
// sets, and returns how many values it deleted (values that had already expired
// are not counted). Each script call (scripts.InvalidateTag) deletes at most
// Options.Batch members, so a tag of 10 000 keys is ten short calls and never
// blocks Redis for long. Values tagged while it runs may or may not be deleted.
// It needs a group view.
func (c *Cache) InvalidateTags(ctx context.Context, tags ...string) (int, error) {
	ctx, span := c.core.start(ctx, opInvalidate)
	n, err := c.invalidateTags(ctx, tags)
	c.core.near.dropView(c.valPre)
	if span.IsRecording() {
		span.SetAttributes(attrTags.Int(len(tags)), attrDeleted.Int(n))
	}
	c.core.finish(ctx, span, opInvalidate, resultOf(err), err)
	return n, err
}

func (c *Cache) invalidateTags(ctx context.Context, tags []string) (int, error) {
	tks := make([]string, len(tags))
	for i, t := range tags {
		k, err := c.tagKey(t)
		if err != nil {
			return 0, err
		}
		tks[i] = k
	}
	deleted := 0
	for i, tk := range tks {
		for {
			var reply []int64
			err := c.core.do(ctx, func(ctx context.Context) error {
				var err error
				reply, err = scripts.InvalidateTag.Run(ctx, c.core.client, []string{tk}, c.core.batch).Int64Slice()
				return err
			})
			if err != nil {
				return deleted, fmt.Errorf("cache: invalidate tag %q: %w", tags[i], err)
			}
			if len(reply) != 2 {
				return deleted, fmt.Errorf("cache: invalidate tag %q: cache_invalidate_tag.lua replied %v", tags[i], reply)
			}
			deleted += int(reply[0])
			if reply[1] == 0 {
				break
			}
		}
	}
	return deleted, nil
}
