package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/redquota/redquota/internal/keys"
	"github.com/redquota/redquota/internal/reach"
	"github.com/redquota/redquota/internal/script"
	"github.com/redquota/redquota/telemetry"
)

// Client is the go-redis client a Cache sends its commands to:
// *redis.Client, *redis.ClusterClient and *redis.Ring satisfy it. It is
// redis.Cmdable, the narrowest go-redis interface that has the commands the
// cache sends (GET, MGET, SET, EXISTS, UNLINK, SCAN, PTTL, EVALSHA, INFO,
// DBSIZE, PING, pipelines). On a cluster (a client with ForEachMaster)
// batches are split by slot and DeletePattern, Stats and HealthCheck visit
// every master.
type Client interface{ redis.Cmdable }

// masterIterator is implemented by *redis.ClusterClient.
type masterIterator interface {
	ForEachMaster(ctx context.Context, fn func(ctx context.Context, client *redis.Client) error) error
}

// shardIterator is implemented by *redis.Ring (and *redis.ClusterClient).
type shardIterator interface {
	ForEachShard(ctx context.Context, fn func(ctx context.Context, client *redis.Client) error) error
}

// NoExpiry, passed as a TTL, stores a value without expiry. Any other TTL below
// one millisecond is ErrInvalid.
const NoExpiry time.Duration = -1

// Defaults of Options, documented there.
const (
	defaultPrefix          = "rq"
	defaultMaxValueSize    = 1 << 20
	defaultBatch           = 1000
	defaultTimeout         = time.Second
	defaultBreakerFailures = 5
	defaultBreakerCoolDown = time.Second
)

// Options configure a Cache. The zero value works; each field documents its
// default.
//
// Keys, groups, tags and index names are at most 512 bytes each.
type Options struct {
	// Prefix starts every key. Default "rq".
	Prefix string
	// Codec encodes values. Default JSON.
	Codec Codec
	// CopyStrings makes the JSON codec copy every string it decodes, as
	// encoding/json does, so that a decoded string keeps alive no memory but
	// its own. Default false: a decoded string refers to the value read (see
	// JSON). Other codecs ignore it.
	CopyStrings bool
	// MaxValueSize is the largest encoded value, in bytes; a larger one is
	// ErrInvalid and is not written. Default 1 MiB; negative means no limit.
	MaxValueSize int
	// Group, when set, makes New return a group view (see Group). Default: none,
	// each key in its own slot.
	Group string
	// Batch is the number of keys one script call writes in a tagged SetMany
	// or deletes in InvalidateTags, so a large tag never blocks Redis for
	// long. Default 1000.
	Batch int
	// Timeout bounds each call to Redis (a batch's pipeline is one call), so
	// that a Redis that accepts connections and never answers costs a caller
	// at most this long, not go-redis's ReadTimeout times its retries. A dial
	// that fails ends the calls waiting on it at once, whatever Timeout is.
	// DeletePattern, Stats and HealthCheck are bounded by the caller's context
	// alone. Default 1 s: long enough for a script over a batch of keys on a
	// loaded Redis (or on miniredis under the race detector), short enough
	// that a hung Redis costs a load about a second, not go-redis's 12 s of
	// read retries. Negative disables it.
	Timeout time.Duration
	// BreakerFailures is the number of consecutive failed Redis calls that
	// opens the circuit breaker (see the package documentation). Default 5;
	// negative disables the breaker.
	BreakerFailures int
	// BreakerCoolDown is how long the breaker stays open, failing calls at
	// once, before it lets one probe call through; the probe's success closes
	// it. Default 1 s.
	BreakerCoolDown time.Duration
	// Telemetry are the OpenTelemetry providers of the cache's spans and
	// metrics (see TELEMETRY_NAMES.md). Default: the global providers.
	Telemetry telemetry.Providers
	// NearMaxBytes, when positive, turns on the near cache (see the package
	// documentation) and bounds its memory: keys, values and a fixed overhead
	// per entry; the least useful entries are evicted past it. Default 0: no
	// near cache.
	NearMaxBytes int64
	// NearMaxTTL is the longest a value is kept near, whatever its Redis TTL
	// (a value is never kept past that). Default 1 min.
	NearMaxTTL time.Duration
}

// Cache is a Redis cache. Make one with New; Group returns views of it that
// share its client, codec, statistics, breaker and get-or-load state. A Cache is
// safe for concurrent use.
type Cache struct {
	core  *core
	group string
	head  string // "<prefix>:{<group>}" for a group view
	err   error  // a bad group name, returned by every call

	// valPre and valSuf come before and after an escaped key in the Redis key
	// of its value: "<prefix>:v:{" and "}", or "<prefix>:v:{<group>}:" and ""
	// in a group.
	valPre, valSuf string
}

// core is what a Cache and its group views share.
type core struct {
	client   Client
	masters  masterIterator // nil unless a cluster
	shards   shardIterator  // set for a Ring (and a cluster)
	codec    Codec
	json     *jsonCodec // codec, when it is exactly JSON: replies are decoded in place
	prefix   string
	maxValue int
	batch    int
	// path is every call's way to Redis, the limiter's too (reach.Path):
	// the breaker (none when Options.BreakerFailures < 0), the bound
	// (Options.Timeout, a refused dial) and the down classifier.
	path      *reach.Path
	breaker   bool // path has a breaker
	nilClient bool // New was given a nil client: every call fails with errNilClient
	flight    singleflight.Group
	flightMu  sync.Mutex
	flights   map[string]*loadFlight // by Redis key, while callers wait on a load
	tel       instruments
	near      *near // nil without a near cache

	hits, misses, errs, rejected, loads atomic.Int64
}

// New returns a Cache on client, with the options o.
//
// A nil client gives a Cache whose every call returns an error wrapping
// ErrInvalid: a configuration error reported, not a panic at the first call.
// On a *redis.Client, *redis.ClusterClient or *redis.Ring, New installs (once
// per client, shared with the limiter) a go-redis dial hook that only
// observes: when a dial fails, the calls waiting on that client end at once,
// instead of waiting out go-redis's dial retries (five attempts 100 ms apart
// by default).
func New(client Client, o Options) *Cache {
	c := &core{client: client, codec: o.Codec, prefix: o.Prefix, maxValue: o.MaxValueSize, batch: o.Batch}
	c.nilClient = reach.IsNil(client)
	var timeout time.Duration // Options.Timeout; 0: none
	switch {
	case o.Timeout == 0:
		timeout = defaultTimeout
	case o.Timeout > 0:
		timeout = o.Timeout
	}
	if c.codec == nil {
		c.codec = JSON
	}
	// Only JSON itself: a codec that wraps JSON to override Unmarshal must
	// have its Unmarshal called.
	if j, ok := c.codec.(jsonCodec); ok {
		j.copyStrings = o.CopyStrings
		c.json = &j
	}
	if c.prefix == "" {
		c.prefix = defaultPrefix
	}
	if c.maxValue == 0 {
		c.maxValue = defaultMaxValueSize
	}
	if c.batch <= 0 {
		c.batch = defaultBatch
	}
	if mi, ok := client.(masterIterator); ok {
		c.masters = mi
	}
	if si, ok := client.(shardIterator); ok {
		c.shards = si
	}
	po := reach.PathOptions{Name: "redquota-cache", Timeout: timeout}
	if o.BreakerFailures >= 0 {
		po.Trip = o.BreakerFailures
		if po.Trip == 0 {
			po.Trip = defaultBreakerFailures
		}
		po.CoolDown = o.BreakerCoolDown
		if po.CoolDown <= 0 {
			po.CoolDown = defaultBreakerCoolDown
		}
		c.breaker = true
	}
	c.path = reach.NewPath(client, po)
	if o.NearMaxBytes > 0 {
		c.near = newNear(c, o.NearMaxBytes, o.NearMaxTTL)
	}
	c.initTelemetry(o.Telemetry)
	root := &Cache{core: c, valPre: c.prefix + ":v:{", valSuf: "}"}
	if o.Group != "" {
		return root.Group(o.Group)
	}
	return root
}

// Group returns a view of c whose keys all sit in one hash slot, the group's: a
// value there can carry tags (see Set) and be invalidated with them. The view
// shares c's client, options, statistics and breaker. An invalid name (empty or
// over 512 bytes) gives a view whose every call returns an ErrInvalid error.
func (c *Cache) Group(name string) *Cache {
	g := &Cache{core: c.core, group: name}
	if err := keys.Check(name); err != nil {
		g.err = invalid(fmt.Sprintf("group %q", trunc(name)), err)
		return g
	}
	g.head = keys.Tag(c.core.prefix, name)
	g.valPre = keys.Tag(c.core.prefix+":v", name) + ":"
	return g
}

// valueKey validates key and returns its Redis key.
func (c *Cache) valueKey(key string) (string, error) {
	esc, err := c.escapeKey(key)
	if err != nil {
		return "", err
	}
	return c.valPre + esc + c.valSuf, nil
}

// escapeKey validates key and returns it escaped, the middle of its Redis key.
func (c *Cache) escapeKey(key string) (string, error) {
	if c.err != nil {
		return "", c.err
	}
	if err := keys.Check(key); err != nil {
		return "", invalid(fmt.Sprintf("key %q", trunc(key)), err)
	}
	return keys.Escape(key), nil
}

// tagKey validates tag and returns the key of its tag set.
func (c *Cache) tagKey(tag string) (string, error) {
	if c.err != nil {
		return "", c.err
	}
	if c.head == "" {
		return "", invalid(fmt.Sprintf("tag %q", trunc(tag)), errNoGroup)
	}
	switch err := keys.Check(tag); {
	case errors.Is(err, keys.ErrEmpty):
		return "", invalid("", errEmptyTag)
	case err != nil:
		return "", invalid(fmt.Sprintf("tag %q", trunc(tag)), err)
	}
	return c.head + ":t:" + keys.Escape(tag), nil
}

// indexKey validates name and returns the key of the index.
func (c *Cache) indexKey(name string) (string, error) {
	if c.err != nil {
		return "", c.err
	}
	if err := keys.Check(name); err != nil {
		return "", invalid(fmt.Sprintf("index %q", trunc(name)), err)
	}
	if c.head != "" {
		return c.head + ":i:" + keys.Escape(name), nil
	}
	return c.core.prefix + ":{" + keys.Escape(name) + "}:i", nil
}

// trunc shortens a bad key for an error message.
func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// ttlArg validates ttl and returns it for go-redis (0: no expiry) and in ms for
// a script (-1: no expiry).
func ttlArg(ttl time.Duration) (time.Duration, int64, error) {
	if ttl == NoExpiry {
		return 0, -1, nil
	}
	if ttl < time.Millisecond {
		return 0, 0, invalid(fmt.Sprintf("TTL %v", ttl), errBadTTL)
	}
	return ttl, ttl.Milliseconds(), nil
}

// errCallerDone marks a call that failed because its caller's context
// ended: it says nothing about Redis, so the breaker does not count it.
var errCallerDone = errors.New("caller's context ended")

// do runs one Redis call through the breaker and counts its failure. fn makes
// the call with the context it is given: the caller's, bounded by
// Options.Timeout and ended early by a failed dial. A caller whose ctx has
// already ended gets ctx's error without a call: its deadline says nothing
// about Redis, and five such callers would otherwise open the breaker for
// everyone. Whether a failure counts as Redis being down is reach.Down, the
// limiter's classification too.
func (c *core) do(ctx context.Context, fn func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.nilClient {
		return errNilClient
	}
	err := c.path.Do(ctx, fn)
	if errors.Is(err, reach.ErrOpen) {
		c.rejected.Add(1)
		if last := c.path.Last(); last != nil {
			return fmt.Errorf("%w after: %w", ErrCircuitOpen, last)
		}
		return ErrCircuitOpen
	}
	if err != nil && reach.CallerDone(ctx) != nil {
		// Not a Redis failure (the path counted it neither way): errors.Is
		// still finds the caller's context error.
		return fmt.Errorf("%w: %w", errCallerDone, err)
	}
	if reach.Down(err) {
		c.errs.Add(1)
	} else if aerr := reach.Auth(err); aerr != nil {
		c.errs.Add(1)
		return aerr
	}
	return err
}

// replyBytes returns the bytes of s, a reply string nothing else refers to,
// without a copy.
func replyBytes(s string) []byte {
	if s == "" {
		return []byte{} // an empty value is found: not nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// encode validates and encodes a value.
func (c *core) encode(key string, v any) ([]byte, error) {
	var data []byte
	switch x := v.(type) {
	case []byte:
		data = x
	case string:
		data = []byte(x)
	default:
		var err error
		if data, err = c.codec.Marshal(v); err != nil {
			return nil, fmt.Errorf("cache: key %q: %w: %w: %w", trunc(key), ErrCodec, errEncode, err)
		}
	}
	if c.maxValue > 0 && len(data) > c.maxValue {
		return nil, fmt.Errorf("cache: key %q: %d bytes: %w: %w (%d)", trunc(key), len(data), ErrInvalid, errTooLarge, c.maxValue)
	}
	return data, nil
}

// decode decodes s, a value read from Redis, into dst, checked by checkDst.
// s was allocated for this reply alone and nothing else refers to it, so its
// bytes are handed on without a copy, as go-redis's StringCmd.Bytes does: a
// *[]byte gets them, and so does the codec.
func (c *core) decode(key, s string, dst any) error {
	switch d := dst.(type) {
	case *[]byte:
		*d = replyBytes(s)
		if c.near != nil {
			*d = []byte(s) // s is held near too
		}
		return nil
	case *string:
		*d = s
		return nil
	}
	var err error
	switch {
	case c.json != nil:
		err = c.json.unmarshalString(s, dst)
	case c.near != nil:
		err = c.codec.Unmarshal([]byte(s), dst) // s is held near too: a copy the codec may keep
	default:
		err = c.codec.Unmarshal(replyBytes(s), dst)
	}
	if err != nil {
		return fmt.Errorf("cache: key %q: %w: %w: %w", trunc(key), ErrCodec, errDecode, err)
	}
	return nil
}

// script runs s with keys and args on the cache's client: EVALSHA, and EVAL
// when Redis answers NOSCRIPT (reach.Run, the limiter's fallback too). Call
// it inside do, which bounds it and counts its failure.
func (c *core) script(ctx context.Context, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	return reach.Run(ctx, c.client, s, script.Source(s), keys, args...)
}
