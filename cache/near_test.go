package cache_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/oteltest"
	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/limiter"
)

// nearOpts are the options of a near-cached test cache.
var nearOpts = cache.Options{NearMaxBytes: 1 << 20}

// newNearEnv is newEnv with a near cache, closed when the test ends.
func newNearEnv(t *testing.T, b redistest.Backend, o cache.Options) *env {
	t.Helper()
	if o.NearMaxBytes == 0 {
		o.NearMaxBytes = nearOpts.NearMaxBytes
	}
	e := newEnv(t, b, o)
	t.Cleanup(func() { _ = e.c.Close() })
	if b.Mini == nil {
		waitLive(t, e.c, true)
	}
	return e
}

// waitLive polls, every millisecond for at most 10 s, until c's near cache
// is live (or, with live false, is not). Making a tracking connection takes a
// dial and two round trips, and noticing a lost one a read error on it: far
// below 10 s, which only a tracking connection that never comes (or never
// goes) reaches.
func waitLive(t *testing.T, c *cache.Cache, live bool) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(time.Millisecond) {
		if cache.NearLive(c) == live {
			return
		}
	}
	t.Fatalf("near cache live=%v never reached", !live)
}

// invalSeen records the keys c's tracking connections report and lets a test
// wait for one of them.
type invalSeen struct {
	mu   sync.Mutex
	seen map[string]int
	cond *sync.Cond
}

func watchInvalidations(c *cache.Cache) *invalSeen {
	s := &invalSeen{seen: map[string]int{}}
	s.cond = sync.NewCond(&s.mu)
	cache.SetNearOnInvalidate(c, func(k string) {
		s.mu.Lock()
		s.seen[k]++
		s.mu.Unlock()
		s.cond.Broadcast()
	})
	return s
}

// count returns how many times k was reported.
func (s *invalSeen) count(k string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[k]
}

// wait waits until k was reported more than n times, for at most 10 s: an
// invalidation on loopback arrives in well under a millisecond, so only one
// that never comes reaches the bound.
func (s *invalSeen) wait(t *testing.T, k string, n int) {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, s.cond.Broadcast)
	defer timer.Stop()
	start := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.seen[k] <= n {
		if time.Since(start) >= 10*time.Second {
			t.Fatalf("no invalidation of %s", k)
		}
		s.cond.Wait()
	}
}

// other returns a second cache on the backend's servers, without a near cache:
// another process writing.
func other(t *testing.T, b redistest.Backend) *cache.Cache {
	t.Helper()
	return cache.New(b.Client, cache.Options{Prefix: b.Prefix})
}

// settle waits, on real Redis, until the invalidation of key's write
// (this process's own too) has reached c: a value read before it arrives is
// dropped when it does.
func settle(t *testing.T, e *env, seen *invalSeen, c *cache.Cache, key string, write func()) {
	t.Helper()
	if e.b.Mini != nil {
		write()
		return
	}
	k := e.key(c, key)
	n := seen.count(k)
	write()
	seen.wait(t, k, n)
}

// warmNear reads key through c until a read is a near hit (root is c's
// Cache, which counts them): a value read before the invalidation of its own
// write arrives is dropped when it does. It polls for at most 10 s, far
// beyond an invalidation's delay on loopback.
func warmNear(t *testing.T, root, c *cache.Cache, key, want string) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(time.Millisecond) {
		hits := nearStats(t, root).NearHits
		got, found := getString(t, c, key)
		require.True(t, found)
		require.Equal(t, want, got)
		if nearStats(t, root).NearHits > hits {
			return
		}
	}
	t.Fatalf("%s never held near", key)
}

func getString(t *testing.T, c *cache.Cache, key string) (string, bool) {
	t.Helper()
	var s string
	found, err := c.Get(context.Background(), key, &s)
	require.NoError(t, err)
	return s, found
}

func nearStats(t *testing.T, c *cache.Cache) cache.Stats {
	t.Helper()
	s, _ := c.Stats(context.Background())
	return s
}

func TestNearHitSkipsRedis(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		e := newNearEnv(t, b, cache.Options{})
		ctx := context.Background()
		var seen *invalSeen
		if b.Mini == nil {
			seen = watchInvalidations(e.c)
		}
		settle(t, e, seen, e.c, "k", func() { require.NoError(t, e.c.Set(ctx, "k", "v1", time.Minute)) })
		got, found := getString(t, e.c, "k")
		require.True(t, found)
		require.Equal(t, "v1", got)
		before := e.hk.calls()
		for range 10 {
			got, found = getString(t, e.c, "k")
			require.True(t, found)
			require.Equal(t, "v1", got)
		}
		calls := e.hk.calls() - before
		s := nearStats(t, e.c)
		if b.Mini != nil {
			// miniredis has no CLIENT TRACKING: every read goes to Redis.
			require.False(t, s.NearLive)
			require.Equal(t, int64(10), calls)
			require.Zero(t, s.NearHits)
			return
		}
		require.True(t, s.NearLive)
		require.Equal(t, int64(0), calls, "near hits call Redis")
		require.Equal(t, int64(10), s.NearHits)
		require.Equal(t, int64(11), s.Hits)
		require.Positive(t, s.NearBytes)

		// GetMany and GetOrLoad take the near values too.
		settle(t, e, seen, e.c, "k2", func() { require.NoError(t, e.c.Set(ctx, "k2", "v2", time.Minute)) })
		m, err := cache.GetMany[string](ctx, e.c, []string{"k", "k2", "absent"})
		n := len(m)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		require.Equal(t, map[string]string{"k": "v1", "k2": "v2"}, m)
		before = e.hk.calls()
		m, err = cache.GetMany[string](ctx, e.c, []string{"k", "k2"})
		n = len(m)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		require.Equal(t, int64(0), e.hk.calls()-before)
		v, err := cache.GetOrLoad(ctx, e.c, "k2", time.Minute, func(context.Context) (string, error) {
			return "", fmt.Errorf("loaded")
		})
		require.NoError(t, err)
		require.Equal(t, "v2", v)
		require.Equal(t, int64(0), e.hk.calls()-before)
	})
}

// A cold GetMany is one round trip of one MGET per slot and one PTTL per key,
// and installs what it read: the next GetMany calls nothing.
func TestNearColdGetMany(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		e := newNearEnv(t, b, cache.Options{})
		ctx := context.Background()
		seen := watchInvalidations(e.c)
		views := []*cache.Cache{e.c.Group("ex")}
		if b.Kind == redistest.Real {
			views = append(views, e.c) // one slot per key on a cluster
		}
		for _, c := range views {
			oc := other(t, b)
			if c.GroupName() != "" {
				oc = oc.Group(c.GroupName())
			}
			var keys []string
			want := map[string]string{}
			for i := range 10 {
				k := "k" + strconv.Itoa(i)
				keys, want[k] = append(keys, k), "v"+strconv.Itoa(i)
				settle(t, e, seen, c, k, func() { require.NoError(t, oc.Set(ctx, k, want[k], time.Minute)) })
			}
			keys = append(keys, "absent")
			mgets, pttls, gets := commandCalls(t, b, "mget"), commandCalls(t, b, "pttl"), commandCalls(t, b, "get")
			before := e.hk.calls()
			got, err := cache.GetMany[string](ctx, c, keys)
			n := len(got)
			require.Equal(t, int64(1), e.hk.calls()-before, "round trips")
			require.NoError(t, err)
			require.Equal(t, 10, n)
			require.Equal(t, want, got)
			require.Equal(t, int64(1), commandCalls(t, b, "mget")-mgets)
			require.Equal(t, int64(11), commandCalls(t, b, "pttl")-pttls)
			require.Equal(t, int64(0), commandCalls(t, b, "get")-gets)

			before = e.hk.calls()
			got, err = cache.GetMany[string](ctx, c, keys[:10])
			n = len(got)
			require.NoError(t, err)
			require.Equal(t, 10, n)
			require.Equal(t, want, got)
			require.Equal(t, int64(0), e.hk.calls()-before, "held near")
		}
	})
}

// A *[]byte destination gets a copy: changing it does not change the value
// held near.
func TestNearBytesAreCopies(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		e := newNearEnv(t, b, cache.Options{})
		ctx := context.Background()
		seen := watchInvalidations(e.c)
		settle(t, e, seen, e.c, "k", func() { require.NoError(t, e.c.Set(ctx, "k", []byte("abc"), time.Minute)) })
		for range 2 { // from Redis, then near
			var got []byte
			found, err := e.c.Get(ctx, "k", &got)
			require.NoError(t, err)
			require.True(t, found)
			require.Equal(t, "abc", string(got))
			got[0] = 'X'
		}
		require.Equal(t, int64(1), nearStats(t, e.c).NearHits)
	})
}

func TestNearOwnWritesDropAtOnce(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		e := newNearEnv(t, b, cache.Options{})
		ctx := context.Background()
		g := e.c.Group("ex")
		warm := func(c *cache.Cache, key, want string) {
			t.Helper()
			warmNear(t, e.c, c, key, want)
		}
		require.NoError(t, e.c.Set(ctx, "a", "1", time.Minute))
		warm(e.c, "a", "1")
		require.NoError(t, e.c.Set(ctx, "a", "2", time.Minute))
		got, _ := getString(t, e.c, "a")
		require.Equal(t, "2", got, "Set")

		require.NoError(t, e.c.SetMany(ctx, map[string]any{"a": "3", "b": "3"}, time.Minute))
		got, _ = getString(t, e.c, "a")
		require.Equal(t, "3", got, "SetMany")

		warm(e.c, "a", "3")
		require.NoError(t, e.c.Delete(ctx, "a"))
		_, found := getString(t, e.c, "a")
		require.False(t, found, "Delete")

		require.NoError(t, g.Set(ctx, "t", "1", time.Minute, "tag"))
		warm(g, "t", "1")
		require.NoError(t, g.Set(ctx, "t", "2", time.Minute, "tag"))
		got, _ = getString(t, g, "t")
		require.Equal(t, "2", got, "Set with tags")

		warm(g, "t", "2")
		_, err := g.InvalidateTags(ctx, "tag")
		require.NoError(t, err)
		_, found = getString(t, g, "t")
		require.False(t, found, "InvalidateTags")

		require.NoError(t, g.Set(ctx, "p1", "1", time.Minute))
		warm(g, "p1", "1")
		_, err = g.DeletePattern(ctx, "p*")
		require.NoError(t, err)
		_, found = getString(t, g, "p1")
		require.False(t, found, "DeletePattern")
	})
}

// Another process's write reaches this one through its tracking connection.
func TestNearOtherWriterInvalidates(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		e := newNearEnv(t, b, cache.Options{})
		ctx := context.Background()
		seen := watchInvalidations(e.c)
		o := other(t, b)
		for _, c := range []*cache.Cache{e.c, e.c.Group("ex")} {
			oc := o
			if c.GroupName() != "" {
				oc = o.Group(c.GroupName())
			}
			k := e.key(c, "k")
			settle(t, e, seen, c, "k", func() { require.NoError(t, oc.Set(ctx, "k", "v1", time.Minute)) })
			warmNear(t, e.c, c, "k", "v1")
			hits := nearStats(t, e.c).NearHits

			settle(t, e, seen, c, "k", func() { require.NoError(t, oc.Set(ctx, "k", "v2", time.Minute)) })
			got, _ := getString(t, c, "k")
			require.Equal(t, "v2", got)
			require.Equal(t, hits, nearStats(t, e.c).NearHits, "the read after the invalidation went to Redis")

			// A delete in Redis is a change too.
			warmNear(t, e.c, c, "k", "v2")
			settle(t, e, seen, c, "k", func() { require.NoError(t, oc.Delete(ctx, "k")) })
			_, found := getString(t, c, "k")
			require.False(t, found)

			// So is an expiry: Redis reports the key when it expires it.
			settle(t, e, seen, c, "k", func() { require.NoError(t, oc.Set(ctx, "k", "v3", 50*time.Millisecond)) })
			n := seen.count(k)
			getString(t, c, "k")
			seen.wait(t, k, n)
			_, found = getString(t, c, "k")
			require.False(t, found)
		}
		require.Positive(t, nearStats(t, e.c).NearInvalidations)
	})
}

// The tracking connections hear of value writes only: a limiter under the
// same prefix, and the tag sets and tag lists of a group, write keys that
// reach no tracking connection. Redis pushes the invalidations of one
// connection in write order, so once the sentinel written last (in the same
// slot as every other write, so on the same node of a cluster) is reported,
// any push of the earlier writes would have been too.
func TestNearTracksValuesOnly(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		e := newNearEnv(t, b, cache.Options{})
		ctx := context.Background()
		seen := watchInvalidations(e.c)
		o := other(t, b)

		// Every write below has the hash tag {q}.
		l := limiter.New(b.Client, limiter.Options{Prefix: b.Prefix})
		for range 20 {
			res, err := l.Allow(ctx, limiter.Key("q", limiter.PerSecond(1000)).Take(1))
			require.NoError(t, err)
			require.True(t, res.Allowed)
		}
		require.NoError(t, o.Group("q").Set(ctx, "k", "v", time.Minute, "t1", "t2"))
		_, err := o.Group("q").InvalidateTags(ctx, "t1")
		require.NoError(t, err)
		sentinel := e.key(e.c, "q")
		n := seen.count(sentinel)
		require.NoError(t, o.Set(ctx, "q", "s", time.Minute))
		seen.wait(t, sentinel, n)

		seen.mu.Lock()
		defer seen.mu.Unlock()
		value := e.key(e.c.Group("q"), "k")
		require.Equal(t, 2, seen.seen[value], "the tagged value's write and its invalidation")
		for k := range seen.seen {
			require.True(t, strings.HasPrefix(k, b.Prefix+":v:{"), "a push for %s, not a value", k)
		}
	})
}

// On the real clock too, a value is not served near past MaxTTL: after
// sleeping longer than MaxTTL (a monotonic clock only moves on, so the value
// is then past its deadline whatever the load) the read goes to Redis, which
// still holds the value for a minute and sends no invalidation.
func TestNearMaxTTLRealClock(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		const maxTTL = 50 * time.Millisecond
		e := newNearEnv(t, b, cache.Options{NearMaxBytes: 1 << 20, NearMaxTTL: maxTTL})
		ctx := context.Background()
		require.NoError(t, e.c.Set(ctx, "k", "v", time.Minute))
		for start := time.Now(); ; {
			hits := nearStats(t, e.c).NearHits
			before := time.Now()
			getString(t, e.c, "k")
			if nearStats(t, e.c).NearHits > hits {
				// A hit: the value was read at most maxTTL before this read
				// began. Wait out maxTTL from then.
				time.Sleep(maxTTL - time.Since(before) + time.Millisecond)
				break
			}
			require.Less(t, time.Since(start), 10*time.Second, "never held near")
		}
		before := e.hk.calls()
		got, found := getString(t, e.c, "k")
		require.True(t, found)
		require.Equal(t, "v", got)
		require.Equal(t, int64(1), e.hk.calls()-before, "served near past MaxTTL")
	})
}

// A value is never served near past its Redis TTL, nor past MaxTTL, on the
// near cache's clock (which the test moves).
func TestNearKeepsNoLongerThanTTL(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		e := newNearEnv(t, b, cache.Options{NearMaxBytes: 1 << 20, NearMaxTTL: 10 * time.Minute})
		var clock atomic.Int64
		cache.SetNearClock(e.c, func() time.Duration { return time.Duration(clock.Load()) })
		ctx := context.Background()
		read := func(key string) int64 { // Redis calls of one Get
			t.Helper()
			before := e.hk.calls()
			_, found := getString(t, e.c, key)
			require.True(t, found)
			return e.hk.calls() - before
		}
		require.NoError(t, e.c.Set(ctx, "short", "v", 30*time.Second))
		warmNear(t, e.c, e.c, "short", "v")
		clock.Store(int64(29 * time.Second))
		require.Equal(t, int64(0), read("short"), "within the Redis TTL")
		clock.Store(int64(30 * time.Second))
		require.Equal(t, int64(1), read("short"), "at the Redis TTL (as read with PTTL)")

		clock.Store(0)
		require.NoError(t, e.c.Set(ctx, "forever", "v", cache.NoExpiry))
		warmNear(t, e.c, e.c, "forever", "v")
		clock.Store(int64(10*time.Minute - time.Millisecond))
		require.Equal(t, int64(0), read("forever"))
		clock.Store(int64(10 * time.Minute))
		require.Equal(t, int64(1), read("forever"), "at MaxTTL")
	})
}

// The race: a read's reply, then an invalidation of its key, then the read's
// install. The value read is older than the change reported, and must not be
// kept.
func TestNearInvalidationBeforeInstall(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		e := newNearEnv(t, b, cache.Options{})
		ctx := context.Background()
		seen := watchInvalidations(e.c)
		o := other(t, b)
		k := e.key(e.c, "k")
		n0 := seen.count(k)
		require.NoError(t, o.Set(ctx, "k", "v1", time.Minute))
		// Tracking is BCAST: v1's write is reported too, asynchronously.
		// Wait for that report, so that the wait below is for v2's (it
		// once returned at v1's late report, before v2's was handled).
		seen.wait(t, k, n0)
		n := seen.count(k)

		replied, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		cache.SetNearBeforeInstall(e.c, func() {
			once.Do(func() {
				close(replied)
				<-release
			})
		})
		got := make(chan string)
		go func() {
			var s string
			_, _ = e.c.Get(ctx, "k", &s)
			got <- s
		}()
		<-replied // the reply with v1 is in; its install waits
		require.NoError(t, o.Set(ctx, "k", "v2", time.Minute))
		seen.wait(t, k, n) // the invalidation of v1 has been handled
		close(release)
		require.Equal(t, "v1", <-got, "the read in flight returns what it read")

		before := e.hk.calls()
		s, _ := getString(t, e.c, "k")
		require.Equal(t, "v2", s, "v1 was installed after its invalidation")
		require.Equal(t, int64(1), e.hk.calls()-before)
	})
}

// killTracking closes c's tracking connections on every node with CLIENT
// KILL, as a network fault or a server's timeout would.
func killTracking(t *testing.T, b redistest.Backend, c *cache.Cache) {
	t.Helper()
	ctx := context.Background()
	name := cache.NearClientName(c)
	kill := func(ctx context.Context, node *redis.Client) error {
		list, err := node.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(list, "\n") {
			if !strings.Contains(line, " name="+name+" ") {
				continue
			}
			for _, f := range strings.Fields(line) {
				if id, ok := strings.CutPrefix(f, "id="); ok {
					if err := node.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	var err error
	if cc, ok := b.Client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, kill)
	} else {
		err = kill(ctx, b.Client.(*redis.Client))
	}
	require.NoError(t, err)
}

// A lost tracking connection drops everything before any further hit, and
// a write made while it was down is not hidden by what was held near.
func TestNearTrackingKilled(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		e := newNearEnv(t, b, cache.Options{})
		ctx := context.Background()
		o := other(t, b)
		keys := []string{"a", "b", "c", "d", "e", "f"} // over every master of the cluster
		for _, k := range keys {
			require.NoError(t, o.Set(ctx, k, "v1", time.Minute))
			getString(t, e.c, k)
		}
		// The tracking connection comes back 50 ms after its loss. If it came
		// back before the writes below (a loaded machine), their
		// invalidations are on their way and a read may rightly get the old
		// value first: that is not the scenario, so try again (each kill
		// drops everything held), and fail only after 5 such tries.
		want := "v1"
		for try := 1; ; try++ {
			killTracking(t, b, e.c)
			waitLive(t, e.c, false)
			before := e.hk.calls()
			for _, k := range keys {
				got, _ := getString(t, e.c, k)
				require.Equal(t, want, got)
			}
			require.Equal(t, int64(len(keys)), e.hk.calls()-before, "a hit after the loss")
			want = "v" + strconv.Itoa(try+1)
			for _, k := range keys {
				require.NoError(t, o.Set(ctx, k, want, time.Minute)) // no tracking sees it
			}
			if !cache.NearLive(e.c) {
				break // down since the kill: every write was made while it was down
			}
			require.Less(t, try, 5, "tracking came back before the writes in 5 tries")
			t.Logf("try %d: tracking came back before the writes; again", try)
		}
		waitLive(t, e.c, true)
		for _, k := range keys {
			got, _ := getString(t, e.c, k)
			require.Equal(t, want, got)
		}
	})
}

// A restarted Redis (its data gone, a new value written) is not hidden by
// what was held near before.
func TestNearRedisRestart(t *testing.T) {
	srv := redistest.Private(t)
	client := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	t.Cleanup(func() { _ = client.Close() })
	b := redistest.Backend{Kind: redistest.Real, Client: client, Server: srv, Prefix: redistest.NewPrefix(t)}
	e := newNearEnv(t, b, cache.Options{BreakerFailures: -1})
	ctx := context.Background()
	require.NoError(t, e.c.Set(ctx, "k", "v1", time.Minute))
	getString(t, e.c, "k")
	got, _ := getString(t, e.c, "k")
	require.Equal(t, "v1", got)

	srv.Stop()
	waitLive(t, e.c, false)
	require.NoError(t, srv.Start())
	// Another process, on a client of its own: the pooled connections of
	// client died with the server.
	oc := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	t.Cleanup(func() { _ = oc.Close() })
	require.NoError(t, cache.New(oc, cache.Options{Prefix: b.Prefix}).Set(ctx, "k", "v2", time.Minute))
	waitLive(t, e.c, true)
	// A read may still meet a dead pooled connection and fail; none may
	// return v1.
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		var s string
		found, err := e.c.Get(ctx, "k", &s)
		if err == nil {
			require.True(t, found)
			require.Equal(t, "v2", s)
			break
		}
		require.Less(t, time.Since(start), 10*time.Second, "no read succeeded: %v", err)
	}
}

// The memory bound holds under key churn: the near cache evicts.
func TestNearMemoryBound(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		const maxBytes = 64 << 10
		e := newNearEnv(t, b, cache.Options{NearMaxBytes: maxBytes})
		ctx := context.Background()
		val := strings.Repeat("x", 500)
		items := map[string]any{}
		for i := range 1000 { // about 600 KB of entries, ten times the bound
			items["k"+strconv.Itoa(i)] = val
		}
		seen := watchInvalidations(e.c)
		require.NoError(t, e.c.SetMany(ctx, items, time.Minute))
		for i := range 1000 {
			seen.wait(t, e.key(e.c, "k"+strconv.Itoa(i)), 0)
		}
		for i := range 1000 {
			getString(t, e.c, "k"+strconv.Itoa(i))
		}
		cache.NearCleanUp(e.c)
		s := nearStats(t, e.c)
		require.LessOrEqual(t, s.NearBytes, int64(maxBytes))
		require.Positive(t, s.NearBytes)
		require.Positive(t, s.NearEvictions)
	})
}

// The model: another process writes, this one reads, and faults strike; a
// read must never return a value older than the last one written before it.
// After each write a sentinel in the same slot is written and its
// invalidation awaited (one connection's invalidations come in write order),
// so a stale read is the near cache's fault, not the push's delay. A fault
// is followed by a write while tracking is down.
func TestNearModel(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		nearModel(t, b, 300, func(e *env, k string, write func(k string), check func()) {
			killTracking(t, b, e.c)
			waitLive(t, e.c, false)
			write(k)
			check()
			waitLive(t, e.c, true)
		})
	})
}

// The model with Redis restarts among its faults, on a private redis-server:
// the restarted server has lost every value, the other process writes them
// again (each one newer than before), and nothing held near from before the
// restart may be served.
func TestNearModelRestart(t *testing.T) {
	srv := redistest.Private(t)
	client := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	t.Cleanup(func() { _ = client.Close() })
	b := redistest.Backend{Kind: redistest.Real, Client: client, Server: srv, Prefix: redistest.NewPrefix(t)}
	restarts := 0
	nearModel(t, b, 100, func(e *env, k string, write func(k string), check func()) {
		if restarts%2 == 1 {
			killTracking(t, b, e.c)
			waitLive(t, e.c, false)
			write(k)
			check()
			waitLive(t, e.c, true)
			restarts++
			return
		}
		restarts++
		srv.Stop()
		waitLive(t, e.c, false)
		require.NoError(t, srv.Start())
		for _, k := range []string{"k0", "k1", "k2", "k3"} {
			write(k)
		}
		check() // most likely before tracking is back
		waitLive(t, e.c, true)
	})
	require.Greater(t, restarts, 2)
}

// nearModel runs steps of the model on b; fault strikes, calls write for at
// least the key it is given, and may call check, which reads every key.
func nearModel(t *testing.T, b redistest.Backend, steps int, fault func(e *env, k string, write func(k string), check func())) {
	e := newNearEnv(t, b, cache.Options{BreakerFailures: -1})
	ctx := context.Background()
	seen := watchInvalidations(e.c)
	g := e.c.Group("model")
	og := other(t, b).Group("model")
	keys := []string{"k0", "k1", "k2", "k3"}
	sentinel := e.key(g, "sentinel")
	written := map[string]int{}
	rng := rand.New(rand.NewPCG(1, 2))
	// retry runs f until it succeeds, for at most 10 s: after a restart a
	// call can meet a pooled connection that died with the server; an error
	// is never a stale value, and no call fails for 10 s on a live server.
	retry := func(f func() error) {
		t.Helper()
		var err error
		for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(time.Millisecond) {
			if err = f(); err == nil {
				return
			}
		}
		t.Fatal(err)
	}
	read := func(key string) int {
		t.Helper()
		var s string
		retry(func() error {
			found, err := g.Get(ctx, key, &s)
			if err == nil && !found {
				t.Fatalf("%s not found", key)
			}
			return err
		})
		v, err := strconv.Atoi(s)
		require.NoError(t, err)
		return v
	}
	write := func(k string) {
		written[k]++
		retry(func() error { return og.Set(ctx, k, strconv.Itoa(written[k]), time.Minute) })
	}
	for _, k := range keys {
		require.NoError(t, og.Set(ctx, k, "0", time.Minute))
	}
	for step := range steps {
		k := keys[rng.IntN(len(keys))]
		switch r := rng.IntN(10); {
		case r < 4: // another process writes
			write(k)
			n := seen.count(sentinel)
			retry(func() error { return og.Set(ctx, "sentinel", strconv.Itoa(step), time.Minute) })
			seen.wait(t, sentinel, n)
		case r < 9:
			require.GreaterOrEqual(t, read(k), written[k], "step %d: %s older than written", step, k)
		default:
			fault(e, k, write, func() {
				for _, k := range keys {
					require.GreaterOrEqual(t, read(k), written[k], "step %d: %s older than written", step, k)
				}
			})
		}
	}
	for _, k := range keys {
		require.Equal(t, written[k], read(k))
	}
	require.Positive(t, nearStats(t, e.c).NearHits)
}

// A struct read near is decoded once and copied afterwards, which gives what
// a decode gives: into a zero value the same struct, into a value that holds
// fields already the decode's merge; a type holding references is decoded
// each time, so callers never share it.
func TestNearDecodedValues(t *testing.T) {
	redistest.EachReal(t, func(t *testing.T, b redistest.Backend) {
		e := newNearEnv(t, b, cache.Options{})
		ctx := context.Background()
		type flat struct {
			A string
			B float64
			T time.Time
		}
		type refs struct{ L []int }
		want := flat{"x", 1.5, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
		require.NoError(t, e.c.Set(ctx, "flat", want, time.Minute))
		require.NoError(t, e.c.Set(ctx, "refs", refs{[]int{1, 2}}, time.Minute))
		require.NoError(t, e.c.Set(ctx, "partial", map[string]any{"A": "y"}, time.Minute))
		warmNear(t, e.c, e.c, "partial", `{"A":"y"}`)
		warmNear(t, e.c, e.c, "flat", `{"A":"x","B":1.5,"T":"2025-01-02T03:04:05Z"}`)
		warmNear(t, e.c, e.c, "refs", `{"L":[1,2]}`)
		for range 3 {
			var f flat
			found, err := e.c.Get(ctx, "flat", &f)
			require.NoError(t, err)
			require.True(t, found)
			require.Equal(t, want, f)
			f.A = "changed"

			var r refs
			_, err = e.c.Get(ctx, "refs", &r)
			require.NoError(t, err)
			require.Equal(t, []int{1, 2}, r.L)
			r.L[0] = 99

			p := flat{B: 7}
			_, err = e.c.Get(ctx, "partial", &p)
			require.NoError(t, err)
			require.Equal(t, flat{A: "y", B: 7}, p, "a decode into a value that holds fields merges")
			p = flat{}
			_, err = e.c.Get(ctx, "partial", &p)
			require.NoError(t, err)
			require.Equal(t, flat{A: "y"}, p)
		}
	})
}

func TestNearTelemetry(t *testing.T) {
	h := oteltest.New()
	b := redistest.Backend{Kind: redistest.Real, Client: redistest.NewReal(t), Prefix: redistest.NewPrefix(t)}
	e := newNearEnv(t, b, cache.Options{Telemetry: h.Providers})
	ctx := context.Background()
	require.NoError(t, e.c.Set(ctx, "k", "v", time.Minute))
	warmNear(t, e.c, e.c, "k", "v")
	require.NoError(t, e.c.Delete(ctx, "k"))
	// The invalidation arrives on the tracking connection after Delete
	// returns: wait for it, then read the stats and the counters while
	// nothing else is in flight.
	require.Eventually(t, func() bool { return nearStats(t, e.c).NearInvalidations > 0 },
		10*time.Second, time.Millisecond, "the delete's invalidation never arrived")
	s := nearStats(t, e.c)
	ev := h.Sums(t, "redquota.cache.near.events", "redquota.event")
	require.Equal(t, s.NearHits, ev["hit"])
	require.Equal(t, s.NearInvalidations, ev["invalidation"])
	require.Positive(t, ev["hit"])
	require.Positive(t, ev["invalidation"])
	live, ok := metric(h, t, "redquota.cache.near.live").(metricdata.Gauge[int64])
	require.True(t, ok)
	require.Equal(t, int64(1), live.DataPoints[0].Value)
	_, ok = metric(h, t, "redquota.cache.near.bytes").(metricdata.Gauge[int64])
	require.True(t, ok)
}

// A node that stops answering without closing the tracking connection (a
// network partition) is taken as lost once its heartbeat goes unanswered
// (3 s), and what the near cache held is not served again.
func TestNearSilentNode(t *testing.T) {
	srv := redistest.Shared(t)
	proxy := redistest.NewFaultProxy(t, srv.Addr())
	client := redis.NewClient(redistest.ClientOptions(proxy.Addr()))
	t.Cleanup(func() { _ = client.Close() })
	b := redistest.Backend{Kind: redistest.Real, Client: client, Server: srv, Prefix: redistest.NewPrefix(t)}
	e := newNearEnv(t, b, cache.Options{})
	ctx := context.Background()
	direct := redis.NewClient(redistest.ClientOptions(srv.Addr()))
	t.Cleanup(func() { _ = direct.Close() })
	o := cache.New(direct, cache.Options{Prefix: b.Prefix})
	require.NoError(t, o.Set(ctx, "k", "v1", time.Minute))
	warmNear(t, e.c, e.c, "k", "v1")

	// Every reply through the proxy is held back longer than the 3 s a
	// tracking connection may go without one.
	proxy.SetDelay(5 * time.Second)
	waitLive(t, e.c, false)
	require.NoError(t, o.Set(ctx, "k", "v2", time.Minute))
	proxy.SetDelay(0)
	waitLive(t, e.c, true)
	got, _ := getString(t, e.c, "k")
	require.Equal(t, "v2", got)
}
