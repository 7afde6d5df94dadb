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
	// In Redis a key's ':', '{', '}' and '%' are escaped to three bytes
	// each, which a glob over the Redis keys cannot match as the one
	// character they are in the caller's key. SCAN finds a superset (see
	// scanGlob); each key found is matched against pattern as the caller
	// wrote it, and only those that match are deleted.
	match := globEscape(c.valPre) + scanGlob(pattern) + globEscape(c.valSuf)
	keep := func(k string) bool {
		rest, ok := strings.CutPrefix(k, c.valPre)
		if !ok {
			return false
		}
		if rest, ok = strings.CutSuffix(rest, c.valSuf); !ok {
			return false
		}
		key, err := keys.Unescape(rest)
		return err == nil && globMatch(pattern, key)
	}
	var (
		mu    sync.Mutex
		total int
	)
	visit := func(ctx context.Context, node redis.Cmdable) error {
		n, err := deletePattern(ctx, node, match, keep)
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

// deletePattern scans one node for keys that match and that keep accepts,
// and unlinks them, one pipeline of single-key UNLINKs per page (a cluster
// node refuses a multi-key UNLINK that spans slots).
func deletePattern(ctx context.Context, node redis.Cmdable, match string, keep func(string) bool) (int, error) {
	var cursor uint64
	total := 0
	for {
		found, next, err := node.Scan(ctx, cursor, match, scanCount).Result()
		if err != nil {
			return total, err
		}
		page := found[:0]
		for _, k := range found {
			if keep(k) {
				page = append(page, k)
			}
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

// scanGlob is a glob over escaped keys (keys.Escape) that matches the escape
// of every key glob pattern matches, and maybe more: a literal character as
// it is escaped, '*' as itself, and '?' and a class, which match one
// character of the key (one byte, or the three of an escape), as '*'.
func scanGlob(pattern string) string {
	var b strings.Builder
	star := false
	for i := 0; i < len(pattern); {
		kind, n := globToken(pattern[i:])
		i += n
		if kind != 0 {
			if !star {
				b.WriteByte('*')
			}
			star = true
			continue
		}
		star = false
		b.WriteString(globEscape(keys.Escape(pattern[i-1 : i]))) // a literal: the token's last byte
	}
	return b.String()
}

// globToken returns the kind of the token p starts with in a Redis glob
// ('*', '?', '[' for a class; 0 for a literal, escaped with '\' or not) and
// its length in bytes, as Redis's stringmatchlen reads it (a '\' at the end
// is itself).
func globToken(p string) (kind byte, n int) {
	switch p[0] {
	case '*', '?':
		return p[0], 1
	case '\\':
		return 0, min(len(p), 2)
	case '[':
		n, _ := globClass(p, 0)
		return '[', n
	}
	return 0, 1
}

// globClass reads the class p starts with ('[') as Redis's stringmatchlen
// does, and returns its length in bytes and whether byte c is in it: '^'
// first negates it; '\' escapes the byte after it; "a-z" is a range (either
// way round); it ends at the first ']' that is none of these, or at the end
// of p.
func globClass(p string, c byte) (int, bool) {
	i := 1
	not := i < len(p) && p[i] == '^'
	if not {
		i++
	}
	match := false
	for i < len(p) {
		switch {
		case p[i] == '\\' && len(p)-i >= 2:
			match = match || p[i+1] == c
			i += 2
		case p[i] == ']':
			return i + 1, match != not
		case len(p)-i >= 3 && p[i+1] == '-':
			lo, hi := min(p[i], p[i+2]), max(p[i], p[i+2])
			match = match || lo <= c && c <= hi
			i += 3
		default:
			match = match || p[i] == c
			i++
		}
	}
	return len(p), match != not
}

// globMatch reports whether s matches the Redis glob pattern (case
// sensitive), as Redis's stringmatchlen decides: '*' any run of bytes, '?'
// one byte, a class one byte of it (globClass), '\' the byte after it. A
// failed match backtracks only its latest '*', which is exact for such a
// glob and never takes exponential time. One difference: a range compares
// bytes as unsigned, where Redis built for x86 compares them as signed
// chars, so a range that spans 0x7f and 0x80 ("[a-\xff]") matches bytes
// ≥ 0x80 here and not there; for ASCII patterns and keys they agree.
func globMatch(pattern, s string) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		if pi < len(pattern) {
			if pattern[pi] == '*' {
				starP, starS = pi, si
				pi++
				continue
			}
			if n, ok := globOne(pattern[pi:], s[si]); ok {
				pi += n
				si++
				continue
			}
		}
		if starP < 0 {
			return false
		}
		starS++
		pi, si = starP+1, starS
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern)
}

// globOne reports whether the token p starts with (not '*') matches byte c,
// and the token's length.
func globOne(p string, c byte) (int, bool) {
	switch kind, n := globToken(p); kind {
	case '?':
		return n, true
	case '[':
		return globClass(p, c)
	default:
		return n, p[n-1] == c
	}
}
