package cache

import (
	"context"
	"fmt"
	"time"

	"github.com/redquota/redquota/scripts"
)

// SetTagged stores value under key for ttl carrying exactly tags, in one
// script call (scripts.SetTagged): the value leaves the tag sets of its previous
// write, is written with PX, and joins the tag set of each tag; each tag set is
// pruned of members that have expired and is given a TTL that ends when its
// last member's does. InvalidateTags later deletes the values that carry a tag
// at that moment. It needs a group view (ErrNoGroup otherwise): a value and its
// tag sets share the group's slot.
//
// Tags are exact: a value set again (with other tags, or none, by Set),
// deleted, or expired no longer carries its old tags, and invalidating one of
// them leaves it alone. In a group every write keeps this up: Set, SetMany and
// GetOrLoad write through the same script (with no tags) and Delete through
// scripts.Delete, still one round trip; Get is untouched. Each tagged value has
// a small tag list key beside it (kind "l"), expiring with it. Writes made
// around the cache (DeletePattern, Incr, other clients) do not update tags.
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
		keys := make([]string, 0, 2*(hi-lo)+len(tks))
		keys = append(keys, ks[lo:hi]...)
		for _, k := range ks[lo:hi] {
			keys = append(keys, c.listKey(k))
		}
		keys = append(keys, tks...)
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

// InvalidateTags deletes every value that carries one of tags (see SetTagged),
// and the tag sets, and returns how many values it deleted (values that had
// already expired are not counted). A deleted value also leaves its other tag
// sets. Each script call (scripts.InvalidateTag) deletes at most
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
				reply, err = scripts.InvalidateTag.Run(ctx, c.core.client, []string{tk}, c.core.batch, c.valPre, c.head+":l:").Int64Slice()
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

// listKey returns the key of the tag list of the value at k, a value key of
// this group view: the set of tag set keys the value carries.
func (c *Cache) listKey(k string) string { return c.head + ":l:" + k[len(c.valPre):] }

// deleteGrouped deletes the values at ks, value keys of this group view, and
// takes them out of their tag sets (scripts.Delete), a batch per call.
func (c *Cache) deleteGrouped(ctx context.Context, ks []string) error {
	for lo := 0; lo < len(ks); lo += c.core.batch {
		hi := min(lo+c.core.batch, len(ks))
		keys := make([]string, 0, 2*(hi-lo))
		keys = append(keys, ks[lo:hi]...)
		for _, k := range ks[lo:hi] {
			keys = append(keys, c.listKey(k))
		}
		err := c.core.do(ctx, func(ctx context.Context) error {
			n, err := scripts.Delete.Run(ctx, c.core.client, keys).Int64()
			if err == nil && (n < 0 || n > int64(hi-lo)) {
				err = fmt.Errorf("cache_delete.lua replied %d for %d keys", n, hi-lo)
			}
			return err
		})
		c.core.near.wrote(ks[lo:hi]...)
		if err != nil {
			return fmt.Errorf("cache: delete: %w", err)
		}
	}
	return nil
}
