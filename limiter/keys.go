package limiter

import (
	"sync"
	"sync/atomic"

	"github.com/redquota/redquota/internal/keys"
)

// keyKind is what a key holds.
type keyKind uint8

const (
	stateEntry   keyKind = iota // a limit's state (its algorithm's)
	holdEntry                   // a quota instance's hold
	outsideEntry                // a fixed-window limit's outside record (Quota.Headroom; outside.lua)
)

// keyEntry is a Redis key built once and kept boxed, so a decision on a hot
// key builds no strings and boxes nothing.
type keyEntry struct {
	head  string // <prefix>:{tag}
	key   string
	boxed any    // key as an interface value, ready for the command
	tok   any    // for hold entries: the static token key sent when dedupe is off
	quota string // for hold entries: the quota's name (results name it)
	// single: for the state entry of a single key (Key), that key's hold
	// and registry entries, so that a decision on it finds all three in one
	// lookup (on many keys the lookups are a tenth of the client's time).
	single atomic.Pointer[singleRefs]
}

// singleRefs are a single key's hold and registry entries.
type singleRefs struct {
	hold *keyEntry
	reg  *regEntry
}

// keyID names one key: a quota instance's (group, quota name, For's key)
// state of limit name under algo, its hold, or a limit's outside record, by
// kind. A single key's limit is the quota instance {quota: key}.
type keyID struct {
	group, quota, key string
	keyed             bool
	name              string
	algo              Algorithm // of a state entry
	kind              keyKind
}

// keyCacheMax bounds the key cache (two entries per single key: its state,
// also in singles, and its hold; about 10 MB when full); past it the cache
// starts over (a process limiting millions of distinct keys pays string
// building again, never unbounded memory).
const keyCacheMax = 1 << 16

type keyCache struct {
	m sync.Map // keyID → *keyEntry
	n atomic.Int64
	// singles holds the state entries of single keys (Key), by algorithm
	// and key: the same entries as m, found by the key alone, a string
	// whose hash and comparison cost a fraction of a keyID's (on 10 000 keys
	// the lookup was the limiter's largest own cost per decision). Cleared
	// with m.
	singles [FixedWindow + 1]sync.Map // string → *keyEntry
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
	switch id.kind {
	case holdEntry:
		e.key = head + inst + ":hold"
		e.tok = head + ":tok"
		e.quota = id.quota
	case outsideEntry:
		e.key = stateKey(head+inst, id.name, FixedWindow) + ":outside"
	default:
		e.key = stateKey(head+inst, id.name, id.algo)
	}
	e.boxed = e.key
	if l.keys.n.Add(1) > keyCacheMax {
		l.keys.m.Clear()
		for i := range l.keys.singles {
			l.keys.singles[i].Clear()
		}
		l.keys.n.Store(1)
	}
	l.keys.m.Store(id, e)
	return e
}

// singleFor is the state entry of single key key under algorithm a (a
// valid Algorithm): keyFor's, through keyCache.singles.
func (l *Limiter) singleFor(key string, a Algorithm) *keyEntry {
	m := &l.keys.singles[a]
	if v, ok := m.Load(key); ok {
		return v.(*keyEntry)
	}
	e := l.keyFor(keyID{quota: key, algo: a})
	m.Store(key, e)
	return e
}

// holdKey is the hold key of quota instance q.
func (l *Limiter) holdKey(q Quota) string {
	return l.keyFor(keyID{group: q.Group, quota: q.Name, key: q.key, keyed: q.keyed, kind: holdEntry}).key
}

// outsideKeyOf is the outside record of limit name of quota instance q.
func (l *Limiter) outsideKeyOf(q Quota, name string) string {
	return l.keyFor(keyID{group: q.Group, quota: q.Name, key: q.key, keyed: q.keyed, name: name, kind: outsideEntry}).key
}

// stateKeyOf is the state key of limit name (of algorithm a) of quota instance q.
func (l *Limiter) stateKeyOf(q Quota, name string, a Algorithm) string {
	return l.keyFor(keyID{group: q.Group, quota: q.Name, key: q.key, keyed: q.keyed, name: name, algo: a}).key
}
