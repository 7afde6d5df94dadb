package limiter

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/scripts"
)

// maxReplyLimits is the most limits one quota may have (MaxQuotaLimits).
const maxReplyLimits = MaxQuotaLimits

// MaxQuotaLimits is the most limits a Quota may have.
const MaxQuotaLimits = 16

// holdAlgorithm marks the cache entry of a tag's hold key.
const holdAlgorithm Algorithm = 255

// keyEntry is a Redis key built once and kept boxed, so a decision on a hot
// key builds no strings and boxes nothing.
type keyEntry struct {
	head  string // <prefix>:{tag}
	key   string
	boxed any // key as an interface value, ready for the command
	tok   any // for hold entries: the static token key sent when dedupe is off
}

type keyID struct {
	tag, name string
	algo      Algorithm
}

// keyCacheMax bounds the key cache (two entries per single key: its state
// and its hold; about 10 MB when full); past it the cache starts over (a
// process limiting millions of distinct keys pays string building again,
// never unbounded memory).
const keyCacheMax = 1 << 16

type keyCache struct {
	m sync.Map // keyID → *keyEntry
	n atomic.Int64
}

func (l *Limiter) keyFor(tag, name string, a Algorithm) *keyEntry {
	id := keyID{tag, name, a}
	if v, ok := l.keys.m.Load(id); ok {
		return v.(*keyEntry)
	}
	head := l.head(tag)
	e := &keyEntry{head: head}
	if a == holdAlgorithm {
		e.key = head + ":hold"
		e.tok = head + ":tok"
	} else {
		e.key = stateKey(head, name, a)
	}
	e.boxed = e.key
	if l.keys.n.Add(1) > keyCacheMax {
		l.keys.m.Clear()
		l.keys.n.Store(1)
	}
	l.keys.m.Store(id, e)
	return e
}

// argCacheMax bounds argCache (about 200 bytes an entry). Limits built on the
// fly (a rate per user or per plan) would otherwise grow it for as long as the
// process lives; past it the cache starts over, as the key cache does.
const argCacheMax = 1 << 12

// argCache holds each Limit's script arguments, boxed once.
var (
	argCache sync.Map // Limit → *[4]any
	argCount atomic.Int64
)

func argsFor(l Limit) *[4]any {
	if v, ok := argCache.Load(l); ok {
		return v.(*[4]any)
	}
	a := &[4]any{l.Algorithm.script(), l.periodUS(), l.Max(), l.intervalUS()}
	if argCount.Add(1) > argCacheMax {
		argCache.Clear()
		argCount.Store(1)
	}
	v, loaded := argCache.LoadOrStore(l, a)
	if loaded {
		argCount.Add(-1)
	}
	return v.(*[4]any)
}

// doer is the Do method of a go-redis client.
type doer interface {
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// evalCached runs cmd ("evalsha", sha, numkeys, keys…, args…) and, when Redis
// answers NOSCRIPT (after SCRIPT FLUSH or a restart), sends it again as EVAL
// with the script's source. Going through Do lets the keys and arguments be
// boxed once and reused.
func evalCached(ctx context.Context, c Client, s *redis.Script, cmd []any) ([]any, error) {
	d, ok := c.(doer)
	if !ok {
		keys := make([]string, cmd[2].(int))
		for i := range keys {
			keys[i] = cmd[3+i].(string)
		}
		return s.Run(ctx, c, keys, cmd[3+len(keys):]...).Slice()
	}
	v, err := d.Do(ctx, cmd...).Slice()
	if err != nil && (errors.Is(err, redis.ErrNoScript) || strings.HasPrefix(err.Error(), "NOSCRIPT")) {
		cmd[0], cmd[1] = "eval", scripts.Source(s)
		v, err = d.Do(ctx, cmd...).Slice()
	}
	return v, err
}
