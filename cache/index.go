package cache

import (
	"context"
	"fmt"
	"time"

	"github.com/redquota/redquota/scripts"
)

// Remember adds names to the index name for at least ttl (a name's time only
// moves later), in one script call (scripts.IndexAdd). An index is a small set
// of names with a TTL each, such as the exchanges a market cache has seen;
// names past their time are pruned, and the index expires with its last name.
// ttl must be at least 1 ms.
func (c *Cache) Remember(ctx context.Context, index string, ttl time.Duration, names ...string) error {
	ctx, span := c.core.start(ctx, opRemember)
	if span.IsRecording() {
		span.SetAttributes(attrNames.Int(len(names)))
	}
	err := c.remember(ctx, index, ttl, names)
	c.core.finish(ctx, span, opRemember, resultOf(err), err)
	return err
}

func (c *Cache) remember(ctx context.Context, index string, ttl time.Duration, names []string) error {
	k, err := c.indexKey(index)
	if err != nil {
		return err
	}
	if ttl == NoExpiry || ttl < time.Millisecond {
		return fmt.Errorf("cache: index TTL %v: %w", ttl, ErrBadTTL)
	}
	if len(names) == 0 {
		return nil
	}
	args := make([]any, 0, 1+len(names))
	args = append(args, ttl.Milliseconds())
	for _, n := range names {
		if n == "" {
			return fmt.Errorf("cache: index %q: name: %w", trunc(index), ErrEmptyKey)
		}
		args = append(args, n)
	}
	err = c.core.do(ctx, func(ctx context.Context) error {
		return scripts.IndexAdd.Run(ctx, c.core.client, []string{k}, args...).Err()
	})
	if err != nil {
		return fmt.Errorf("cache: remember: %w", err)
	}
	return nil
}

// Recall returns the names the index name still remembers, oldest time first.
func (c *Cache) Recall(ctx context.Context, index string) ([]string, error) {
	ctx, span := c.core.start(ctx, opRecall)
	names, err := c.recall(ctx, index)
	if span.IsRecording() {
		span.SetAttributes(attrNames.Int(len(names)))
	}
	c.core.finish(ctx, span, opRecall, resultOf(err), err)
	return names, err
}

func (c *Cache) recall(ctx context.Context, index string) ([]string, error) {
	k, err := c.indexKey(index)
	if err != nil {
		return nil, err
	}
	var names []string
	err = c.core.do(ctx, func(ctx context.Context) error {
		var err error
		names, err = scripts.IndexList.Run(ctx, c.core.client, []string{k}).StringSlice()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cache: recall: %w", err)
	}
	return names, nil
}
