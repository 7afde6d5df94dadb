package cache

import (
	"context"
	"fmt"
	"time"

	"github.com/redquota/redquota/internal/keys"
	"github.com/redquota/redquota/internal/script"
)

// rememberSpan is cacheops.Remember: one script call (script.IndexAdd).
func (c *Cache) rememberSpan(ctx context.Context, index string, ttl time.Duration, names []string) error {
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
		return invalid(fmt.Sprintf("index TTL %v", ttl), errBadTTL)
	}
	if len(names) == 0 {
		return nil
	}
	args := make([]any, 0, 1+len(names))
	args = append(args, ttl.Milliseconds())
	for _, n := range names {
		if n == "" {
			return invalid(fmt.Sprintf("index %q: name", trunc(index)), keys.ErrEmpty)
		}
		args = append(args, n)
	}
	err = c.core.do(ctx, func(ctx context.Context) error {
		return c.core.script(ctx, script.IndexAdd, []string{k}, args...).Err()
	})
	if err != nil {
		return fmt.Errorf("cache: remember: %w", err)
	}
	return nil
}

// recallSpan is cacheops.Recall.
func (c *Cache) recallSpan(ctx context.Context, index string) ([]string, error) {
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
		names, err = c.core.script(ctx, script.IndexList, []string{k}).StringSlice()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cache: recall: %w", err)
	}
	return names, nil
}
