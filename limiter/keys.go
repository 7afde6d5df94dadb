package limiter

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/keys"
	"github.com/redquota/redquota/internal/script"
)

// maxReplyLimits is the most limits one reply may carry (maxQuotaLimits).
const maxReplyLimits = maxQuotaLimits

// holdAlgorithm marks the cache entry of a tag's hold key.
const holdAlgorithm Algorithm = 255

// outsideAlgorithm marks the cache entry of a fixed-window limit's outside
// record (Quota.Headroom; outside.lua).
const outsideAlgorithm Algorithm = 254

// keyEntry is a Redis key built once and kept boxed, so a decision on a hot
// key builds no strings and boxes nothing.
type keyEntry struct {
	head  string // <prefix>:{tag}
	key   string
	boxed any    // key as an interface value, ready for the command
	tok   any    // for hold entries: the static token key sent when dedupe is off
	quota string // for hold entries: the quota's name (results name it)
}

// keyID names one key: a quota instance's (group, quota name, For's key)
// state of limit name under algo, or its hold (holdAlgorithm). A single key's
// limit is the quota instance {quota: key}.
type keyID struct {
	group, quota, key string
	keyed             bool
	name              string
	algo              Algorithm
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

// instance returns a quota instance's slot head, <prefix>:{<tag>}, and its id
// inside that slot. Without a group the tag is the escaped name, then ":" and
// the escaped key for an instance of For, and the id is empty (the keys of an
// unkeyed quota are as they always were). With a group the tag is the escaped
// group and the id ":@<name>[:@<key>]". Escaping leaves no ':' in a part, so
// no two instances share a head and an id.
func (l *Limiter) instance(id keyID) (head, inst string) {
	if id.group == "" {
		tag := keys.Escape(id.quota)
		if id.keyed {
			tag += ":" + keys.Escape(id.key)
		}
		return l.opts.Prefix + ":{" + tag + "}", ""
	}
	inst = ":@" + keys.Escape(id.quota)
	if id.keyed {
		inst += ":@" + keys.Escape(id.key)
	}
	return keys.Tag(l.opts.Prefix, id.group), inst
}

func (l *Limiter) keyFor(id keyID) *keyEntry {
	if v, ok := l.keys.m.Load(id); ok {
		return v.(*keyEntry)
	}
	head, inst := l.instance(id)
	e := &keyEntry{head: head}
	if id.algo == holdAlgorithm {
		e.key = head + inst + ":hold"
		e.tok = head + ":tok"
		e.quota = id.quota
	} else if id.algo == outsideAlgorithm {
		e.key = stateKey(head+inst, id.name, FixedWindow) + ":outside"
	} else {
		e.key = stateKey(head+inst, id.name, id.algo)
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

// argCache holds each Limit's script arguments (with a guard), boxed once.
var (
	argCache sync.Map // argID → *[5]any
	argCount atomic.Int64
)

type argID struct {
	l       Limit
	guardUS int64
}

// argsFor returns l's algorithm, period, max units, interval and guard (µs, 0
// unless l is a FixedWindow limit), as decide.lua takes them.
func argsFor(l Limit, guardUS int64) *[5]any {
	if l.Algorithm != FixedWindow {
		guardUS = 0
	}
	id := argID{l, guardUS}
	if v, ok := argCache.Load(id); ok {
		return v.(*[5]any)
	}
	a := &[5]any{l.Algorithm.script(), l.periodUS(), l.most(), l.intervalUS(), guardUS}
	if argCount.Add(1) > argCacheMax {
		argCache.Clear()
		argCount.Store(1)
	}
	v, loaded := argCache.LoadOrStore(id, a)
	if loaded {
		argCount.Add(-1)
	}
	return v.(*[5]any)
}

// doer is the Do method of a go-redis client.
type doer interface {
	Do(ctx context.Context, args ...any) *redis.Cmd
}

// processor is a go-redis client's Process. Every go-redis client (Client,
// ClusterClient, Ring, AutoPipeliner) has it, and since go-redis 9.23 each
// honours a command's NoRetry.
type processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

// onceCmd is a script call go-redis never sends twice: its NoRetry stops the
// client's retries once the command may have reached Redis. go-redis still
// sends again one that never left (a connection it closed before writing),
// and follows MOVED and ASK, which Redis answers without running the script:
// either way Redis runs the call at most once, so a decision needs no dedupe
// token, whatever the client's MaxRetries.
type onceCmd struct{ *redis.Cmd }

// NoRetry tells go-redis not to resend the command.
func (onceCmd) NoRetry() bool { return true }

// evalCached runs cmd ("evalsha", sha, numkeys, keys…, args…) and, when Redis
// answers NOSCRIPT (after SCRIPT FLUSH or a restart), sends it again as EVAL
// with the script's source. Going through Process (or Do) lets the keys and
// arguments be boxed once and reused. On a go-redis client (processor) the
// call is sent at most once (onceCmd); other clients may retry it, which the
// dedupe token covers (Limiter.decideDedupe).
func evalCached(ctx context.Context, c Client, s *redis.Script, cmd []any) ([]any, error) {
	if p, ok := c.(processor); ok {
		v, err := evalOnce(ctx, p, cmd)
		if noScript(err) {
			cmd[0], cmd[1] = "eval", script.Source(s)
			v, err = evalOnce(ctx, p, cmd)
		}
		return v, err
	}
	d, ok := c.(doer)
	if !ok {
		keys := make([]string, cmd[2].(int))
		for i := range keys {
			keys[i] = cmd[3+i].(string)
		}
		return s.Run(ctx, c, keys, cmd[3+len(keys):]...).Slice()
	}
	v, err := d.Do(ctx, cmd...).Slice()
	if noScript(err) {
		cmd[0], cmd[1] = "eval", script.Source(s)
		v, err = d.Do(ctx, cmd...).Slice()
	}
	return v, err
}

func evalOnce(ctx context.Context, p processor, cmd []any) ([]any, error) {
	c := redis.NewCmd(ctx, cmd...)
	_ = p.Process(ctx, onceCmd{c})
	return c.Slice()
}

func noScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || strings.HasPrefix(err.Error(), "NOSCRIPT"))
}
