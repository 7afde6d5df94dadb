package limiter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/reach"
	"github.com/redquota/redquota/internal/script"
	"github.com/redquota/redquota/telemetry"
)

// Client is the part of a go-redis client the limiter uses. *redis.Client,
// *redis.ClusterClient and *redis.Ring satisfy it.
type Client interface {
	redis.Scripter
	Del(ctx context.Context, keys ...string) *redis.IntCmd
}

// Options configure a Limiter. The zero value works; each field documents its default.
type Options struct {
	// Prefix starts every key. Default "rq".
	Prefix string
	// Failure is the policy when Redis cannot be reached. Default FailClosed.
	// A value that is none of the three policies makes every call of the
	// Limiter return an error wrapping ErrInvalid.
	Failure FailurePolicy
	// LocalShare is the share of each limit the FailLocal fallback allows in this
	// process, e.g. 1/number of processes. Default 0.1, which a value outside
	// (0, 1] also takes.
	LocalShare float64
	// Timeout bounds each decision's call to Redis, so that a dead or stuck
	// Redis is detected within it rather than after go-redis's retries (about
	// 1.7 s with go-redis's default options). The caller's context deadline
	// applies too. Default: 250ms when the client may retry; none when it
	// cannot (MaxRetries: -1), since its DialTimeout and ReadTimeout then bound
	// the one attempt. Negative disables it.
	//
	// On a client built without ContextTimeoutEnabled (go-redis's default)
	// go-redis ignores deadlines while it reads a reply: there the default
	// bounds waiting for a connection (a dial, the pool) and a read under way
	// ends at the client's ReadTimeout, while a Timeout set here bounds the read
	// too, by leaving the call to finish in a goroutine of its own (one more
	// goroutine hand-off per decision).
	Timeout time.Duration
	// CoolDown is how long, after three decisions in a row found Redis
	// unreachable, decisions go straight to the failure policy without calling
	// Redis; then one call probes it. Default 1s.
	CoolDown time.Duration
	// Coalesce merges concurrent Allow calls that are the same
	// decision (same key, same GCRA limit, same n) into one script call: while
	// one is in flight, later callers queue, and the queue goes out as the next
	// call (up to 256 decisions), decided in arrival order inside the script.
	// Each caller still gets its own decision, made atomically in Redis at
	// Redis's time, and keeps its own deadline: a queued caller that gives up
	// before its call goes out is dropped from it, uncharged. Redis runs one
	// script for many decisions, which is what lifts a hot key's throughput
	// when the Redis thread is the bottleneck. A lone caller goes out at once,
	// as without coalescing: nothing waits on a timer. If Redis cannot be
	// reached, each caller gets the failure policy's answer. Other decisions
	// (other algorithms, quotas, Reserve, Wait) are not coalesced. Default false.
	Coalesce bool
	// Telemetry are the OpenTelemetry providers for the limiter's spans and
	// metrics. Default: the global providers (a no-op unless set).
	Telemetry telemetry.Providers
	// RestartSpent, when above 0, makes the limiter notice that Redis lost its
	// state (a restart without persistence, a failover to a replica that had
	// not caught up): after the client makes new connections it compares
	// Redis's run_id (every master's, on a cluster) with the one it saw
	// before, before it answers the decisions made meanwhile (one check at a
	// time; the others wait for it). When it changed, every limit this Limiter
	// has decided on (up to 10 000) is charged RestartSpent of its maximum
	// (Sync: never lowered), so that the limits resume at the remaining share
	// instead of empty while the exchange still counts what was spent before,
	// and the decisions made since the restart are made again on that state
	// (a Wait's wake-up too, when it found its booking standing). 1 (or more)
	// treats each such limit as spent for its period. It costs the decision
	// that finds a new connection a round trip (INFO), and on a restart the
	// Syncs of the limits, in pipelines of 256. Limits whose usage an
	// exchange reports in headers (middleware syncs them) need it less.
	// Default 0: off, limits restart empty. Holds do not need it: the holds
	// in force a Limiter placed or was denied by are placed again on any
	// restart it finds (see Hold), with the same check, which then runs only
	// while such a hold is in force.
	RestartSpent float64
	// ReplicaAck, when above 0, bounds what a failover can lose: each
	// decision's script goes out in one pipeline with WAIT 1 <ReplicaAck> (one
	// round trip still, longer by a replica's acknowledgement), and a decision
	// that no replica acknowledged within ReplicaAck answers under the failure
	// policy, as if Redis were unreachable (the primary may have counted its
	// units: the error errs on the safe side). A grant is then only returned
	// once a replica holds it, so a failover to that replica grants none of
	// it again. With several replicas Sentinel promotes the one with the
	// largest replication offset it can reach (replica-priority aside), which
	// holds every acknowledged write. Holds, syncs and cancels are not waited
	// for (a hold the failover lost is placed again: see Hold). Without a reachable replica every decision fails: with one
	// replica, from a failover until the old primary is back as a replica
	// (17 s in RELIABILITY.md); run two to keep deciding. Applies to
	// *redis.Client (NewFailoverClient's too), *redis.ClusterClient and
	// *redis.Ring; other clients get an error.
	// Timeout, when set, is lengthened by it; a client's ReadTimeout must
	// exceed it. Default 0: off, nothing waits, and a failover may grant again
	// the units of the writes the replica had not received (RELIABILITY.md
	// measures them).
	ReplicaAck time.Duration
	// DedupeWindow is how long a charged call's reply is remembered in Redis
	// under a per-call token, so that a call the client retries after a read
	// timeout or a lost connection (Redis may already have run it) is answered
	// from memory instead of charged twice. Default 10s; negative turns it off.
	// Decisions on a go-redis client (Client, ClusterClient, Ring) need none
	// whatever its MaxRetries: they are sent as commands go-redis never resends
	// (NoRetry). Cancel and the other calls use it when the client may retry
	// (MaxRetries > 0, or a client that is not a *redis.Client or
	// *redis.ClusterClient).
	DedupeWindow time.Duration
}

// Limiter makes decisions against limits kept in Redis. It is safe for
// concurrent use; create one per client with New and share it (the zero
// Limiter is not usable: unlike x/time/rate's, it has no Redis to ask).
//
// Build its client with ContextTimeoutEnabled: true (config.FromEnv does):
// without it go-redis ignores context deadlines while it reads a reply, so a
// slow Redis would hold a call past its deadline and past Options.Timeout.
// MaxRetries: -1 is recommended too: a dead Redis is then found at the first
// failed attempt. (Decisions are never sent twice whatever MaxRetries is.)
type Limiter struct {
	client  Client
	decider Client // where decisions go: the client
	// functions: decisions go as FCALL of the scripts' function library
	// where the server has Redis functions (reach.Functions).
	functions *reach.Functions
	opts      Options
	dedupe    bool
	timeout   time.Duration
	tokenPfx  string
	tokenSeq  atomic.Uint64
	dedupeMS  any // token TTL in ms as a string ("0": dedupe off), boxed once
	// decideDedupe: decisions (decide.lua) carry a dedupe token. Off on a
	// go-redis client, which sends them at most once (reach.Eval).
	decideDedupe bool
	decideMS     any // dedupeMS, or "0" when decideDedupe is off
	// path is every call's way to Redis (path.go): the breaker, the bound
	// (timeout, a refused dial), the down classifier.
	path     *reach.Path
	local    localLimiters // FailLocal's in-process limiters (policy.go)
	keys     keyCache
	coalesce *coalescer    // nil unless Options.Coalesce
	auto     *autoPipe     // concurrent decisions' shared round trips; nil without (autopipe.go)
	restart  *restartGuard // Options.RestartSpent, kept holds (restart.go)
	ack      *ackState     // nil unless Options.ReplicaAck > 0
	tel      instruments
	stats    counters
	reg      registry // quota definitions written for operators (registry.go)
}

// New returns a Limiter using client.
//
// A nil client (or a nil *redis.Client, ...) gives a Limiter whose every call
// returns an error wrapping ErrNilClient, whatever the failure policy: a
// configuration error, reported rather than a panic at the first call.
// Likewise a Failure that is not one of the three policies gives a Limiter
// whose every call returns an error wrapping ErrInvalid.
//
// On a *redis.Client, *redis.ClusterClient or *redis.Ring, New installs (once
// per client) a go-redis dial hook that only observes: when a dial fails,
// decisions waiting on that client end at once and answer under the failure
// policy, instead of waiting out go-redis's dial retries (five attempts
// 100 ms apart by default). The cache shares the same hook.
func New(client Client, opts Options) *Limiter {
	if reach.IsNil(client) {
		client = failClient{ErrNilClient}
	} else if err := badOptions(opts); err != nil {
		client = failClient{err}
	}
	if opts.Prefix == "" {
		opts.Prefix = "rq"
	}
	if !(opts.LocalShare > 0 && opts.LocalShare <= 1) { // NaN too
		opts.LocalShare = 0.1
	}
	if opts.CoolDown <= 0 {
		opts.CoolDown = time.Second
	}
	if opts.DedupeWindow == 0 {
		opts.DedupeWindow = 10 * time.Second
	}
	l := &Limiter{client: client, decider: client, opts: opts, functions: reach.NewFunctions(script.Library())}
	if opts.Coalesce {
		l.coalesce = &coalescer{groups: map[coalesceKey]*coalesceGroup{}}
	}
	l.restart = &restartGuard{share: min(max(opts.RestartSpent, 0), 1)}
	retries := mayRetry(client)
	l.dedupe = opts.DedupeWindow > 0 && retries
	// inline: the default timeout bounds the waits for a connection but not
	// a read (reach.Watch.CallInline).
	var inline bool
	switch {
	case opts.Timeout > 0:
		l.timeout = opts.Timeout
	case opts.Timeout == 0 && retries:
		l.timeout, inline = 250*time.Millisecond, true
	}
	l.path = reach.NewPath(client, reach.PathOptions{
		Name: "redquota-limiter", Timeout: l.timeout, Inline: inline, CoolDown: opts.CoolDown,
		// Three failures in a row: a dead Redis fails every call at once, while
		// one slow call on a loaded machine must not send every caller to the
		// failure policy for a whole cool-down.
		Trip: breakerTrip,
	})
	l.ack = newAck(opts, l.timeout)
	if l.ack == nil {
		l.auto = newAutoPipe(client)
	}
	l.dedupeMS = "0"
	if l.dedupe {
		l.dedupeMS = strconv.FormatInt(max(opts.DedupeWindow.Milliseconds(), 1), 10)
	}
	l.decideDedupe = l.dedupe && !reach.Once(l.decider)
	l.decideMS = any("0")
	if l.decideDedupe {
		l.decideMS = l.dedupeMS
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	l.tokenPfx = hex.EncodeToString(b[:])
	defer l.initTelemetry(opts.Telemetry)
	return l
}

// breakerTrip is how many decisions in a row must find Redis unreachable
// before the breaker opens.
const breakerTrip = 3

// mayRetry reports whether client may resend a command Redis already ran.
func mayRetry(c Client) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().MaxRetries > 0
	case *redis.ClusterClient:
		return c.Options().MaxRetries > 0
	}
	return true
}

// Stats are counts of the decisions this Limiter made.
type Stats struct {
	Allowed, Denied int64
	// FailOpen counts calls allowed because Redis was unreachable (FailOpen).
	FailOpen int64
	// Local counts calls decided by the local fallback (FailLocal).
	Local int64
	// Unavailable counts decisions for which Redis could not be reached.
	Unavailable int64
	// Restarts counts the times Redis was found to have lost its state
	// (checked with Options.RestartSpent, or while a hold is in force: see
	// Hold).
	Restarts int64
}

type counters struct {
	allowed, denied, failOpen, local, unavailable atomic.Int64
}

// Stats returns the counts of decisions made so far.
func (l *Limiter) Stats() Stats {
	return Stats{
		Allowed:     l.stats.allowed.Load(),
		Denied:      l.stats.denied.Load(),
		FailOpen:    l.stats.failOpen.Load(),
		Local:       l.stats.local.Load(),
		Unavailable: l.stats.unavailable.Load(),
		Restarts:    l.restarts(),
	}
}

// Reset deletes the state of every limit of quota instance q, and its hold.
// For a single key (a Key quota, or a quota with no limits) it deletes the
// key's state under every algorithm, whatever limit it was used with.
// Turns already booked (waiting Waits and Reservations) still go, and what
// was granted stays counted by the server the limit stands for: a Reset
// while processes are sending lets them send up to a full limit more in that
// window than the server allows.
func (l *Limiter) Reset(ctx context.Context, q Quota) error {
	var ks []string
	if _, single := q.keyLimit(); single || len(q.Limits) == 0 {
		if err := q.validateID(); err != nil {
			return err
		}
		ks = append(ks, l.holdKey(q))
		l.restart.holds.forget(ks[0])
		for a := GCRA; a <= FixedWindow; a++ {
			ks = append(ks, l.stateKeyOf(q, "", a))
		}
		return l.del(ctx, "reset", ks...)
	}
	if err := q.Validate(); err != nil {
		return err
	}
	ks = append(ks, l.holdKey(q))
	l.restart.holds.forget(ks[0])
	for _, nl := range q.Limits {
		ks = append(ks, l.stateKeyOf(q, nl.Name, nl.Limit.Algorithm))
		if nl.Limit.Lowers {
			ks = append(ks, acksKey(ks[len(ks)-1]))
		}
		if q.headroomOf(nl.Limit) > 0 {
			ks = append(ks, l.outsideKeyOf(q, nl.Name))
		}
	}
	return l.del(ctx, "reset", ks...)
}

// del deletes keys through the limiter's path.
func (l *Limiter) del(ctx context.Context, op string, keys ...string) error {
	return l.call(ctx, op, func(ctx context.Context) error { return l.client.Del(ctx, keys...).Err() })
}

func (l *Limiter) restarts() int64 {
	return l.restart.restarts.Load()
}
