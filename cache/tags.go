package cache

import (
	"context"
	"fmt"
	"time"

	"github.com/redquota/redquota/internal/script"
)

// setManyTagged is SetMany with tags.
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
		return invalid("", errNoGroup)
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
			return c.core.script(ctx, script.SetTagged, keys, args...).Err()
		})
		c.core.near.wrote(ks[lo:hi]...)
		if err != nil {
			return fmt.Errorf("cache: set tagged: %w", err)
		}
	}
	return nil
}

// InvalidateTags deletes every value that carries one of tags (see Set),
// and the tag sets, and returns how many values it deleted (values that had
// already expired are not counted). A deleted value also leaves its other tag
// sets. Each script call (script.InvalidateTag) deletes at most
// Options.Batch members, so a tag of 10 000 keys is ten short calls and never
// blocks Redis for long. Values tagged while it runs may or may not be deleted.
// It needs a group view (ErrInvalid otherwise).
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
				reply, err = c.core.script(ctx, script.InvalidateTag, []string{tk}, c.core.batch, c.valPre, c.head+":l:").Int64Slice()
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
// takes them out of their tag sets (script.Delete), a batch per call.
func (c *Cache) deleteGrouped(ctx context.Context, ks []string) error {
	for lo := 0; lo < len(ks); lo += c.core.batch {
		hi := min(lo+c.core.batch, len(ks))
		keys := make([]string, 0, 2*(hi-lo))
		keys = append(keys, ks[lo:hi]...)
		for _, k := range ks[lo:hi] {
			keys = append(keys, c.listKey(k))
		}
		err := c.core.do(ctx, func(ctx context.Context) error {
			n, err := c.core.script(ctx, script.Delete, keys).Int64()
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
