package limiter

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// A primary, a replica and three Sentinels; go-redis's failover client;
// under load, the replica cut off from the primary for 100 ms (a partition:
// the primary goes on granting), then the primary killed (SIGKILL).
// Replication is asynchronous, so the writes the replica had not received
// are lost: their units are granted a second time after the promotion. The
// test measures how many, and how long decisions stop, and checks that they
// resume; with Options.ReplicaAck, that none is granted twice (no replica
// acknowledges during the partition, so nothing is granted then, and every
// grant returned before it had reached the one replica, which Sentinel
// promotes).
func TestFailoverUnitsGrantedTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five redis-server processes and waits for a failover")
	}
	t.Run("default", func(t *testing.T) { failover(t, 0) })
	t.Run("ReplicaAck", func(t *testing.T) {
		twice := failover(t, 100*time.Millisecond)
		require.Zero(t, twice, "units granted twice with ReplicaAck")
	})
}

// failover runs the measure with Options.ReplicaAck = ack and returns the
// units granted twice.
func failover(t *testing.T, ack time.Duration) int {
	st := redistest.StartSentinels(t, 500*time.Millisecond, true)
	ctx := context.Background()
	sent := redis.NewSentinelClient(&redis.Options{Addr: st.Addrs[0]})
	defer sent.Close()
	sentinelsKnowReplica(t, st, sent) // before the primary dies

	fc := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: st.Master, SentinelAddrs: st.Addrs,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond,
		MaxRetries: -1, DialerRetries: 1, ContextTimeoutEnabled: true, PoolSize: 16,
	})
	defer fc.Close()
	lim := New(fc, Options{Prefix: "fo", CoolDown: 50 * time.Millisecond, ReplicaAck: ack})
	// One fixed window for the whole run: the count after each grant is what
	// the measure compares across the failover. The longest period there is
	// (366 days, windows aligned on Redis's epoch clock) so that the ~30 s run
	// cannot cross a window's end (an hour-long window did at 19:00:00, and
	// the new count looked like units granted twice).
	limit := Limit{Rate: 10_000_000, Period: maxPeriod, Burst: 10_000_000, Algorithm: FixedWindow}

	type grant struct {
		used int // units counted in the window after this grant
		at   time.Time
	}
	var (
		mu     sync.Mutex
		grants []grant
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				r, err := lim.Allow(ctx, Key("k", limit).Take(1))
				if err != nil || !r.Allowed {
					time.Sleep(time.Millisecond)
					continue
				}
				mu.Lock()
				grants = append(grants, grant{used: limit.most() - r.Remaining, at: time.Now()})
				mu.Unlock()
			}
		}()
	}
	// A failed require below ends the test: the deciders stop with it, or
	// they would go on deciding into the tests after it (and race with those
	// that move registryNow).
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	time.Sleep(500 * time.Millisecond)
	parted := time.Now()
	st.Link.Close() // the partition: the replica hears nothing more
	time.Sleep(100 * time.Millisecond)
	killed := time.Now()
	st.Primary.Stop()
	// Sentinel promotes the replica (down-after 500 ms plus an election);
	// 20 s is far beyond that, so only a failover that never completes fails.
	replicaAddr := []string{"127.0.0.1", strconv.Itoa(st.Replica.Port())}
	require.Eventually(t, func() bool {
		addr, err := sent.GetMasterAddrByName(ctx, st.Master).Result()
		return err == nil && slices.Equal(addr, replicaAddr)
	}, 20*time.Second, 10*time.Millisecond)
	promoted := time.Now()
	if ack > 0 {
		// The new primary has no replica to acknowledge until the old one
		// comes back (restarted empty, as a supervisor would) and Sentinel
		// makes it a replica: decisions fail until then.
		require.NoError(t, st.Primary.Start())
	}
	// Decisions resume once go-redis has heard of the promotion (and, with
	// ReplicaAck, the restarted node has synced: Sentinel reconfigures it at
	// its next INFO, up to 10 s); 60 s is far beyond either.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(grants) > 0 && grants[len(grants)-1].at.After(promoted)
	}, 60*time.Second, 10*time.Millisecond)
	t.Logf("kill to promotion seen: %v", promoted.Sub(killed).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()

	// The failover is the longest pause between two grants; what came
	// before it was granted by the old primary, what came after by the new.
	slices.SortFunc(grants, func(a, b grant) int { return a.at.Compare(b.at) })
	cut, gap := 0, time.Duration(0)
	for i := 1; i < len(grants); i++ {
		if d := grants[i].at.Sub(grants[i-1].at); d > gap && grants[i].at.After(killed) {
			cut, gap = i, d
		}
	}
	maxBefore, firstAfter := 0, -1
	for i, g := range grants {
		if i < cut {
			maxBefore = max(maxBefore, g.used)
		} else if firstAfter < 0 || g.used < firstAfter {
			firstAfter = g.used
		}
	}
	twice := max(0, maxBefore-(firstAfter-1))
	partition := 0
	for _, g := range grants {
		if !g.at.Before(parted) && g.at.Before(killed) {
			partition++
		}
	}
	t.Logf("ReplicaAck %v: granted by the old primary: %d units (%d grants in the 100 ms partition before the kill); first count on the new one: %d; units granted twice: %d; no grant for %v (kill to first grant after: %v)",
		ack, maxBefore, partition, firstAfter, twice, gap.Round(time.Millisecond), grants[cut].at.Sub(killed).Round(time.Millisecond))
	require.Positive(t, maxBefore)
	require.Positive(t, firstAfter)
	return twice
}
