package limiter

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The registry: what a quota is (its limits' rates, periods and algorithms)
// is known only to the processes that use it, yet an operator reading Redis
// needs it to show "used 900 of 1200". So each Limiter writes the definition
// of every quota instance (or single key) it decides on beside the
// instance's hold key (<...>:hold → <...>:def), in its slot:
//
//   - about once per quota instance per process per registryEvery (each next
//     write 0.9 to 1 interval after the last, at random, so instances first
//     seen together do not write together), never per decision: a decision
//     only reads an atomic due time;
//   - off the decision path: a decision that finds a definition due only
//     queues it (a short lock and an append, after its own call is done); one
//     writer goroutine per Limiter sends what is queued as pipelines of SETs
//     (one round trip for up to registryBatch definitions; a ClusterClient's
//     pipeline goes to each definition's node, each SET one key, so one
//     slot). A decision still makes exactly one round trip, and never waits
//     for the writer: when registryQueueMax definitions are already waiting,
//     the next due one is dropped and written at its next interval;
//   - the writer starts with the first due definition, waits registryLinger
//     so that definitions falling due together share a pipeline, and ends
//     once a wait brings nothing more: an idle Limiter runs no goroutine, so
//     it needs no Close;
//   - with a TTL that outlives every state key of the quota (twice its longest
//     period, plus registryEvery), so an idle quota is still described while
//     its state can exist, and nothing stays once it cannot.
//
// Two processes with different definitions under one name overwrite each
// other; the latest write within an interval wins. A lost write (Redis
// unreachable, a full queue) only delays what status shows until the next
// interval, or until the client has dialed a connection since (Redis back, or
// restarted or failed over without its data): the next decision on the
// instance then writes it again, registryRedialAge after its last write at
// the soonest.

// registryEvery is how often a process rewrites a quota's definition.
const registryEvery = time.Minute

// registryRedialAge is how old a definition's last write must be for a
// connection the client dialed since to write it again before registryEvery:
// a restart or failover is shown within it, while a client that dials often
// (a pool growing under load, connections dropped on read timeouts) writes
// each definition at most once per registryRedialAge, not per second
// (review-s11: at 1 s, up to 60 times the writes of registryEvery).
const registryRedialAge = 5 * time.Second

// registryTimeout bounds one pipeline of definition writes.
const registryTimeout = 2 * time.Second

// registryLinger is how long the writer waits before taking what is queued:
// keys first seen in a burst (a process starting, new users) go out in a few
// pipelines instead of a round trip each. Definitions are for operators; a
// few milliseconds late is nothing to them.
const registryLinger = 10 * time.Millisecond

// registryBatch is the most definitions one pipeline carries (each SET is
// about 200 bytes).
const registryBatch = 512

// registryQueueMax bounds the definitions waiting for the writer (a slow or
// unreachable Redis): past it a due definition is dropped, not waited for.
const registryQueueMax = 4096

// registryMax bounds the quota instances a process remembers, as the key
// cache is bounded; past it the memory starts over (and writes again).
const registryMax = keyCacheMax

// registryNow is the registry's clock (tests move it).
var registryNow = time.Now

type registry struct {
	m sync.Map // *keyEntry (the instance's hold key) → *regEntry
	n atomic.Int64

	mu      sync.Mutex
	queue   []*regEntry // due definitions for the writer, at most queueMax
	writing bool        // the writer goroutine runs
	// queueMax is registryQueueMax (tests lower it).
	queueMax int
}

// regEntry is one quota instance's definition, ready to write.
type regEntry struct {
	args    []any         // SET <hold key without ":hold">:def <definition> PX <ttl ms>
	due     atomic.Int64  // unix ns of the next write
	dials   atomic.Uint64 // the client's dial count when last queued (reach.Watch.Dials)
	written atomic.Int64  // unix ns of the last time it was queued
}

// defKey is the definition key of the quota instance whose hold key is hold.
func defKey(hold string) string { return strings.TrimSuffix(hold, ":hold") + ":def" }

// definition is a quota instance's registry record, as JSON.
type definition struct {
	Name   string     `json:"name"`
	Label  string     `json:"label,omitempty"`
	Group  string     `json:"group,omitempty"`
	Key    *string    `json:"key,omitempty"` // For's key; absent when not keyed
	Limits []defLimit `json:"limits"`
}

type defLimit struct {
	Name      string `json:"name,omitempty"`
	Algorithm string `json:"algorithm"`
	Rate      int    `json:"rate"`
	PeriodUS  int64  `json:"period_us"`
	Burst     int    `json:"burst,omitempty"`
}

// regFor returns the registry entry of the quota instance q (or of the
// single key q.Name limited by single, when q has no limits), whose hold key
// is hold, building it on first use; nil for a quota with no limits.
func (l *Limiter) regFor(hold *keyEntry, q Quota, single Limit) *regEntry {
	if q.Limits == nil && q.hasOne { // a Key quota decided as a quota
		q.Limits = q.limits()
	}
	if len(q.Limits) == 0 && single == (Limit{}) {
		return nil // a charge that only waits for a hold: nothing to describe
	}
	if v, ok := l.reg.m.Load(hold); ok {
		return v.(*regEntry)
	}
	def := definition{Name: q.Name, Label: q.Label, Group: q.Group}
	if q.keyed {
		k := q.key
		def.Key = &k
	}
	if len(q.Limits) == 0 {
		def.Limits = []defLimit{limitDef("", single)}
	}
	for _, nl := range q.Limits {
		def.Limits = append(def.Limits, limitDef(nl.Name, nl.Limit))
	}
	var longest int64
	for _, dl := range def.Limits {
		longest = max(longest, dl.PeriodUS)
	}
	val, _ := json.Marshal(def) // strings and integers: cannot fail
	e := &regEntry{args: []any{"set", defKey(hold.key), val, "px",
		strconv.FormatInt((2*longest)/1000+registryEvery.Milliseconds(), 10)}}
	if v, loaded := l.reg.m.LoadOrStore(hold, e); loaded {
		return v.(*regEntry)
	}
	if l.reg.n.Add(1) > registryMax {
		l.reg.m.Clear()
		l.reg.n.Store(1)
		l.reg.m.Store(hold, e)
	}
	return e
}

// register queues for the writer the definitions of p's quotas that this
// process has not written within registryEvery: the decision itself is not
// delayed and makes no other round trip.
func (l *Limiter) register(p *plan) {
	var now int64
	var dials uint64
	for _, e := range p.regs[:p.nq] {
		if e == nil {
			continue
		}
		if now == 0 {
			now = registryNow().UnixNano()
			dials = l.path.Watch().Dials()
		}
		d := e.due.Load()
		// Sooner than due when the client has dialed since the last write,
		// at least registryRedialAge after it: Redis may have restarted or
		// failed over without the definition (a pool that grows dials too:
		// the age keeps its dials to one more write).
		redialed := e.dials.Load() != dials && now-e.written.Load() >= int64(registryRedialAge)
		// The next write in 0.9 to 1 interval: quota instances first seen
		// together (a process starting, a burst of new keys) do not all
		// write again in the same moment every interval.
		if now < d && !redialed || !e.due.CompareAndSwap(d, now+int64(registryEvery)-rand.Int64N(int64(registryEvery/10))) {
			continue
		}
		e.dials.Store(dials)
		e.written.Store(now)
		l.enqueue(e)
	}
}

// pipeliner is the Pipeline method of a go-redis client.
type pipeliner interface {
	Pipeline() redis.Pipeliner
}

// enqueue queues e for the writer, starting it when it is not running. A
// full queue drops e: its due time has moved on, so it is written at its
// next interval.
func (l *Limiter) enqueue(e *regEntry) {
	switch l.client.(type) {
	case failClient:
		return // every command fails
	case pipeliner, doer:
	default:
		return // not a go-redis client: no registry
	}
	r := &l.reg
	r.mu.Lock()
	if len(r.queue) >= cmp.Or(r.queueMax, registryQueueMax) {
		r.mu.Unlock()
		return
	}
	r.queue = append(r.queue, e)
	start := !r.writing
	r.writing = true
	r.mu.Unlock()
	if start {
		go l.writeDefinitions()
	}
}

// writeDefinitions is the writer: after each registryLinger it sends what
// the decisions queued meanwhile, and it ends after one that queued nothing.
// Best effort: a failed pipeline is not retried (its definitions are written
// at their next interval).
func (l *Limiter) writeDefinitions() {
	r := &l.reg
	var batch []*regEntry // the queue's previous array, reused
	for {
		time.Sleep(registryLinger)
		r.mu.Lock()
		batch, r.queue = r.queue, batch[:0]
		if len(batch) == 0 {
			r.writing = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		for rest := batch; len(rest) > 0; {
			n := min(len(rest), registryBatch)
			if !l.sendDefinitions(rest[:n]) {
				break // Redis did not answer in time: the rest waits for its next interval too
			}
			rest = rest[n:]
		}
		clear(batch) // the entries may leave the registry's memory
	}
}

// sendDefinitions writes es in one pipeline (or one by one on a client
// with Do only), bounded by registryTimeout. It reports whether Redis
// answered within it.
func (l *Limiter) sendDefinitions(es []*regEntry) bool {
	ctx, cancel := context.WithTimeout(context.Background(), registryTimeout)
	defer cancel()
	switch c := l.client.(type) {
	case pipeliner:
		pipe := c.Pipeline()
		for _, e := range es {
			_ = pipe.Do(ctx, e.args...)
		}
		_, _ = pipe.Exec(ctx)
	case doer:
		for _, e := range es {
			if c.Do(ctx, e.args...).Err() != nil && ctx.Err() != nil {
				break
			}
		}
	}
	return ctx.Err() == nil
}

func limitDef(name string, l Limit) defLimit {
	return defLimit{Name: name, Algorithm: l.Algorithm.String(), Rate: l.Rate, PeriodUS: l.periodUS(), Burst: l.Burst}
}

// parseDefinition reads a registry record back into the quota instance it
// describes (q.For(key) when keyed). A single key's record is a quota with
// one limit named "".
func parseDefinition(b []byte) (Quota, error) {
	var def definition
	if err := json.Unmarshal(b, &def); err != nil {
		return Quota{}, fmt.Errorf("%w: quota definition: %w", ErrBadReply, err)
	}
	q := Quota{Name: def.Name, Label: def.Label, Group: def.Group}
	if def.Key != nil {
		q = q.For(*def.Key)
	}
	for _, dl := range def.Limits {
		a, ok := algorithmNamed(dl.Algorithm)
		if !ok {
			return Quota{}, fmt.Errorf("%w: quota %q limit %q: unknown algorithm %q", ErrBadReply, def.Name, dl.Name, dl.Algorithm)
		}
		lim := Limit{Rate: dl.Rate, Period: time.Duration(dl.PeriodUS) * time.Microsecond, Burst: dl.Burst, Algorithm: a}
		if err := lim.validate(); err != nil {
			return Quota{}, fmt.Errorf("%w: quota %q limit %q: %w", ErrBadReply, def.Name, dl.Name, err)
		}
		q.Limits = append(q.Limits, NamedLimit{Name: dl.Name, Limit: lim})
	}
	if len(q.Limits) == 0 || q.validateID() != nil {
		return Quota{}, fmt.Errorf("%w: quota definition without a valid name or limits", ErrBadReply)
	}
	return q, nil
}

func algorithmNamed(s string) (Algorithm, bool) {
	for a := GCRA; a <= FixedWindow; a++ {
		if a.String() == s {
			return a, true
		}
	}
	return 0, false
}
