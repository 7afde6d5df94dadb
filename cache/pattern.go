package cache

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/keys"
)

// scanCount is the COUNT hint of each SCAN call in DeletePattern.
const scanCount = 1000

// DeletePattern deletes every value whose key matches pattern, a Redis glob
// ('*', '?', '[…]', '\' escapes) over the cache's keys (within the group, for a
// group view), and returns how many it deleted. It walks the keyspace of every
// master with SCAN and deletes each page with UNLINK, never KEYS, so it costs
// time in proportion to the whole keyspace but never blocks Redis for long. Keys
// written while it runs may or may not be deleted. Tag sets are left to expire.
func (c *Cache) DeletePattern(ctx context.Context, pattern string) (int, error) {
	ctx, span := c.core.start(ctx, opDeletePattern)
	n, err := c.deletePattern(ctx, pattern)
	c.core.near.dropView(c.valPre)
	if span.IsRecording() {
		span.SetAttributes(attrDeleted.Int(n))
	}
	c.core.finish(ctx, span, opDeletePattern, resultOf(err), err)
	return n, err
}

func (c *Cache) deletePattern(ctx context.Context, pattern string) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if err := keys.Check(pattern); err != nil {
		return 0, invalid(fmt.Sprintf("pattern %q", trunc(pattern)), err)
	}
	var match string
	if c.head != "" {
		match = globEscape(c.valPre) + keys.Escape(pattern)
	} else {
		match = globEscape(c.valPre) + keys.Escape(pattern) + "}"
	}
	var (
		mu    sync.Mutex
		total int
	)
	visit := func(ctx context.Context, node redis.Cmdable) error {
		n, err := deletePattern(ctx, node, match)
		mu.Lock()
		total += n
		mu.Unlock()
		return err
	}
	// A scan of every key takes as long as it takes: it is bounded by the
	// caller's context, not by Options.Timeout.
	err := c.core.do(ctx, func(context.Context) error {
		switch {
		case c.core.masters != nil:
			return c.core.masters.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return visit(ctx, node) })
		case c.core.shards != nil:
			return c.core.shards.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error { return visit(ctx, node) })
		}
		node, ok := c.core.client.(redis.Cmdable)
		if !ok {
			return fmt.Errorf("client %T cannot pipeline commands", c.core.client)
		}
		return visit(ctx, node)
	})
	if err != nil {
		return total, fmt.Errorf("cache: delete pattern: %w", err)
	}
	return total, nil
}

// deletePattern scans one node and unlinks what matches, one pipeline of
// single-key UNLINKs per page (a cluster node refuses a multi-key UNLINK that
// spans slots).
func deletePattern(ctx context.Context, node redis.Cmdable, match string) (int, error) {
	var cursor uint64
	total := 0
	for {
		page, next, err := node.Scan(ctx, cursor, match, scanCount).Result()
		if err != nil {
			return total, err
		}
		if len(page) > 0 {
			p := node.Pipeline()
			cmds := make([]*redis.IntCmd, len(page))
			for i, k := range page {
				cmds[i] = p.Unlink(ctx, k)
			}
			if _, err := p.Exec(ctx); err != nil {
				return total, err
			}
			for _, cmd := range cmds {
				total += int(cmd.Val())
			}
		}
		if next == 0 {
			return total, nil
		}
		cursor = next
	}
}

// globEscape escapes the characters a Redis glob gives a meaning to.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
