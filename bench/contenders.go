package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/throttled/throttled/v2"
	goredisstore "github.com/throttled/throttled/v2/store/goredisstore.v9"
	ulule "github.com/ulule/limiter/v3"
	ulredis "github.com/ulule/limiter/v3/drivers/store/redis"
	"golang.org/x/time/rate"

	"github.com/redquota/redquota/limiter"
)

// ErrDenied is what a contender's decision returns when the limit refused:
// the limits here are set far above any rate a benchmark reaches, so a denial
// means the comparison is not measuring what it claims.
var ErrDenied = errors.New("bench: decision denied")

// Rate is every single-limit contender's limit, per second (burst the same):
// far above what one Redis serves, so every decision takes the allowed path.
const Rate = 1_000_000

// Contender is one way to make a decision (or, for the floors, one Redis
// command) for a key.
type Contender struct {
	// Name is the benchmark's lib= label.
	Name string
	// Commands are the commands the contender sends to Redis itself, for its
	// server time; none for an in-process contender.
	Commands []string
	// Inner says, per script command in Commands, the inner commands one call
	// runs that are also in Commands (INFO commandstats counts both).
	Inner map[string]map[string]int
	// Prepare, when set, is called once with every key the run will use.
	Prepare func(ctx context.Context, keys []string) error
	// Decide makes one decision for key.
	Decide func(ctx context.Context, key string) error
}

// Env is what contenders are built from.
type Env struct {
	// Client never retries (MaxRetries -1): redquota then skips its dedupe write.
	Client *redis.Client
	// Retrying retries (MaxRetries 2): redquota's decisions still go out once
	// (go-redis never resends them), with no dedupe token.
	Retrying *redis.Client
}

// NewEnv returns the two clients of addr every contender shares.
func NewEnv(addr string) Env {
	return Env{Client: NewClient(addr, -1), Retrying: NewClient(addr, 2)}
}

// Close closes both clients.
func (e Env) Close() {
	_ = e.Client.Close()
	_ = e.Retrying.Close()
}

var runSeq atomic.Int64

// prefix is a fresh key prefix, so no run inherits another's state.
func prefix(lib string) string {
	return "b" + strconv.FormatInt(runSeq.Add(1), 10) + lib
}

var trivial = redis.NewScript("return 1")

// scripted are the commands of a contender that calls one script per call
// (go-redis Script.Run sends EVALSHA, then EVAL if the script is not loaded;
// redquota's limiter sends FCALL of its function library on Redis ≥ 7).
var scripted = []string{"fcall", "evalsha", "eval"}

// throttled's go-redis store reads with a pipeline of TIME and GET, then
// writes with SETNX + EXPIRE (a new key) or an EVAL of a compare-and-swap
// script that runs one GET inside.
var (
	throttledCommands = []string{"time", "get", "setnx", "expire", "eval"}
	throttledInner    = map[string]map[string]int{"eval": {"get": 1}}
)

// Floors are the raw go-redis commands every decision is compared with.
func Floors(e Env) []Contender {
	return []Contender{
		{Name: "ping", Commands: []string{"ping"}, Decide: func(ctx context.Context, _ string) error {
			return e.Client.Ping(ctx).Err()
		}},
		{Name: "get", Commands: []string{"get"},
			Prepare: func(ctx context.Context, keys []string) error {
				p := e.Client.Pipeline()
				for _, k := range keys {
					p.Set(ctx, "get:"+k, "1", time.Hour)
				}
				_, err := p.Exec(ctx)
				return err
			},
			Decide: func(ctx context.Context, key string) error {
				return e.Client.Get(ctx, "get:"+key).Err()
			}},
		{Name: "evalsha", Commands: scripted,
			Prepare: func(ctx context.Context, _ []string) error {
				return trivial.Load(ctx, e.Client).Err()
			},
			Decide: func(ctx context.Context, key string) error {
				return e.Client.EvalSha(ctx, trivial.Hash(), []string{key}).Err()
			}},
	}
}

// Single are the single-limit contenders: Rate per second on each key.
func Single(e Env) ([]Contender, error) {
	rq := limiter.New(e.Client, limiter.Options{Prefix: prefix("rq")})
	rqd := limiter.New(e.Retrying, limiter.Options{Prefix: prefix("rqd")})
	rqLimit := limiter.PerSecond(Rate)
	rqc := limiter.New(e.Client, limiter.Options{Prefix: prefix("rqc"), Coalesce: true})
	leased := &leaserSet{lim: limiter.New(e.Client, limiter.Options{Prefix: prefix("rql")})}

	rr := redis_rate.NewLimiter(e.Client)
	rrPfx := prefix("rr") + ":"
	rrLimit := redis_rate.PerSecond(Rate)

	ustore, err := ulredis.NewStoreWithOptions(e.Client, ulule.StoreOptions{Prefix: prefix("ul"), MaxRetry: ulule.DefaultMaxRetry})
	if err != nil {
		return nil, fmt.Errorf("ulule store: %w", err)
	}
	ul := ulule.New(ustore, ulule.Rate{Period: time.Second, Limit: Rate})

	tstore, err := goredisstore.NewCtx(e.Client, prefix("th")+":")
	if err != nil {
		return nil, fmt.Errorf("throttled store: %w", err)
	}
	th, err := throttled.NewGCRARateLimiterCtx(tstore, throttled.RateQuota{MaxRate: throttled.PerSec(Rate), MaxBurst: Rate})
	if err != nil {
		return nil, fmt.Errorf("throttled: %w", err)
	}

	x := newLocal()

	return []Contender{
		{Name: "redquota", Commands: scripted, Decide: func(ctx context.Context, key string) error {
			r, err := rq.Allow(ctx, limiter.Key(key, rqLimit).Take(1))
			return verdict(r.Allowed, err)
		}},
		{Name: "redquota-coalesce", Commands: scripted, Decide: func(ctx context.Context, key string) error {
			r, err := rqc.Allow(ctx, limiter.Key(key, rqLimit).Take(1))
			return verdict(r.Allowed, err)
		}},
		{Name: "redquota-leased", Commands: scripted, Prepare: leased.prepare, Decide: func(ctx context.Context, key string) error {
			ok, err := leased.m[key].Allow(ctx, 1)
			return verdict(ok, err)
		}},
		{Name: "redquota-dedupe", Commands: scripted, Decide: func(ctx context.Context, key string) error {
			r, err := rqd.Allow(ctx, limiter.Key(key, rqLimit).Take(1))
			return verdict(r.Allowed, err)
		}},
		{Name: "redis_rate", Commands: scripted, Decide: func(ctx context.Context, key string) error {
			r, err := rr.Allow(ctx, rrPfx+key, rrLimit)
			if err != nil {
				return err
			}
			return verdict(r.Allowed > 0, nil)
		}},
		{Name: "ulule", Commands: scripted, Decide: func(ctx context.Context, key string) error {
			r, err := ul.Get(ctx, key)
			return verdict(!r.Reached, err)
		}},
		{Name: "throttled", Commands: throttledCommands, Inner: throttledInner, Decide: func(ctx context.Context, key string) error {
			limited, _, err := th.RateLimitCtx(ctx, key, 1)
			return verdict(!limited, err)
		}},
		{Name: "xrate", Prepare: x.prepare, Decide: func(_ context.Context, key string) error {
			return verdict(x.m[key].Allow(), nil)
		}},
	}, nil
}

// leaserSet holds one limiter.Leaser per key of a run (built by prepare,
// read-only after it).
//
// Its limit is a fixed window of 10^9 per second rather than the other
// contenders' GCRA of Rate per second: local decisions outrun 10^6/s, and a
// leased limit that is used up answers with (local) denials, which the
// benchmarks count as errors. The script call that takes a lease costs the
// same as one decision of either algorithm.
type leaserSet struct {
	lim *limiter.Limiter
	m   map[string]*limiter.Leaser
}

var leasedLimit = limiter.Limit{Rate: 1_000_000_000, Period: time.Second, Algorithm: limiter.FixedWindow}

func (s *leaserSet) prepare(_ context.Context, keys []string) error {
	for _, ls := range s.m { // a contender prepared again: its earlier leasers go
		_ = ls.Close()
	}
	s.m = make(map[string]*limiter.Leaser, len(keys))
	for _, k := range keys {
		ls, err := s.lim.NewLeaser(limiter.Key(k, leasedLimit).Take(1), limiter.LeaseOptions{})
		if err != nil {
			return err
		}
		s.m[k] = ls
	}
	return nil
}

// The multi-limit case, Binance-shaped: a weight per minute on a fixed
// window aligned to the clock, orders per 10 s and orders per day. Each call
// costs 5 weight and 1 order. Limits are far above any reachable rate.
const (
	quotaRate   = 1_000_000_000
	quotaWeight = 5
)

var quotaPeriods = [3]time.Duration{time.Minute, 10 * time.Second, 24 * time.Hour}

// QuotaContenders are the multi-limit contenders: redquota checks and charges
// the three limits in one Allow (one script call, all or nothing); each
// peer makes three calls in sequence (three round trips, not atomic).
func QuotaContenders(e Env) ([]Contender, error) {
	rq := limiter.New(e.Client, limiter.Options{Prefix: prefix("rq")})
	limits := []limiter.NamedLimit{
		{Name: "weight", Limit: limiter.Limit{Rate: quotaRate, Period: quotaPeriods[0], Algorithm: limiter.FixedWindow}},
		{Name: "orders", Limit: limiter.Limit{Rate: quotaRate, Period: quotaPeriods[1], Algorithm: limiter.SlidingWindowCounter}},
		{Name: "daily", Limit: limiter.Limit{Rate: quotaRate, Period: quotaPeriods[2], Burst: quotaRate}},
	}
	cost := limiter.Cost{"weight": quotaWeight, "orders": 1, "daily": 1}
	n := [3]int{quotaWeight, 1, 1}

	rr := redis_rate.NewLimiter(e.Client)
	rrPfx := prefix("rr")
	var rrLimits [3]redis_rate.Limit
	for i, p := range quotaPeriods {
		rrLimits[i] = redis_rate.Limit{Rate: quotaRate, Burst: quotaRate, Period: p}
	}

	var uls [3]*ulule.Limiter
	var ths [3]*throttled.GCRARateLimiterCtx
	for i, p := range quotaPeriods {
		st, err := ulredis.NewStoreWithOptions(e.Client, ulule.StoreOptions{Prefix: prefix("ul"), MaxRetry: ulule.DefaultMaxRetry})
		if err != nil {
			return nil, fmt.Errorf("ulule store: %w", err)
		}
		uls[i] = ulule.New(st, ulule.Rate{Period: p, Limit: quotaRate})
		ts, err := goredisstore.NewCtx(e.Client, prefix("th")+":")
		if err != nil {
			return nil, fmt.Errorf("throttled store: %w", err)
		}
		if ths[i], err = throttled.NewGCRARateLimiterCtx(ts, throttled.RateQuota{MaxRate: throttled.PerDuration(quotaRate, p), MaxBurst: quotaRate}); err != nil {
			return nil, fmt.Errorf("throttled: %w", err)
		}
	}
	xs := [3]*local{newLocal(), newLocal(), newLocal()}

	return []Contender{
		{Name: "redquota", Commands: scripted, Decide: func(ctx context.Context, key string) error {
			q := limiter.Quota{Name: key, Limits: limits}
			r, err := rq.Allow(ctx, limiter.Charge{Quota: q, Cost: cost})
			return verdict(r.Allowed, err)
		}},
		{Name: "redis_rate", Commands: scripted, Decide: func(ctx context.Context, key string) error {
			for i := range 3 {
				r, err := rr.AllowN(ctx, rrPfx+":"+strconv.Itoa(i)+":"+key, rrLimits[i], n[i])
				if err != nil {
					return err
				}
				if r.Allowed == 0 {
					return ErrDenied
				}
			}
			return nil
		}},
		{Name: "ulule", Commands: scripted, Decide: func(ctx context.Context, key string) error {
			for i := range 3 {
				r, err := uls[i].Increment(ctx, key, int64(n[i]))
				if err := verdict(!r.Reached, err); err != nil {
					return err
				}
			}
			return nil
		}},
		{Name: "throttled", Commands: throttledCommands, Inner: throttledInner, Decide: func(ctx context.Context, key string) error {
			for i := range 3 {
				limited, _, err := ths[i].RateLimitCtx(ctx, key, n[i])
				if err := verdict(!limited, err); err != nil {
					return err
				}
			}
			return nil
		}},
		{Name: "xrate", Prepare: func(ctx context.Context, keys []string) error {
			for _, x := range xs {
				_ = x.prepare(ctx, keys)
			}
			return nil
		}, Decide: func(_ context.Context, key string) error {
			for i, x := range xs {
				if !x.m[key].AllowN(time.Now(), n[i]) {
					return ErrDenied
				}
			}
			return nil
		}},
	}, nil
}

func verdict(allowed bool, err error) error {
	if err != nil {
		return err
	}
	if !allowed {
		return ErrDenied
	}
	return nil
}

// local is golang.org/x/time/rate per key, the in-process ceiling. Its
// limiters are made in Prepare, so deciding only reads the map (safe from
// many goroutines).
type local struct {
	perSec float64
	m      map[string]*rate.Limiter
}

// newLocal limits each key to a billion units per second with a burst of a
// billion: no benchmark reaches it, so it stays on the allowed path.
func newLocal() *local {
	return &local{perSec: 1e9, m: make(map[string]*rate.Limiter)}
}

func (l *local) prepare(_ context.Context, keys []string) error {
	for _, k := range keys {
		l.m[k] = rate.NewLimiter(rate.Limit(l.perSec), 1_000_000_000)
	}
	return nil
}
