package cache_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/cache"
	"github.com/redquota/redquota/internal/redistest"
)

// privateCluster starts a three-master cluster of the test's own, for faults
// that must not disturb the shared one, and returns its nodes and a client.
func privateCluster(t *testing.T) ([]*redistest.Server, *redis.ClusterClient) {
	t.Helper()
	nodes := redistest.PrivateCluster(t)
	c := redis.NewClusterClient(redistest.ClusterOptions(nodes))
	t.Cleanup(func() { _ = c.Close() })
	return nodes, c
}

// nodeOf returns the node of nodes that serves slot as master, and its id.
func nodeOf(t *testing.T, nodes []*redistest.Server, slot int) (*redistest.Server, string) {
	t.Helper()
	c := nodes[0].Client()
	defer c.Close()
	slots, err := c.ClusterSlots(context.Background()).Result()
	require.NoError(t, err)
	for _, s := range slots {
		if int(s.Start) <= slot && slot <= int(s.End) {
			for _, n := range nodes {
				if n.Addr() == s.Nodes[0].Addr {
					return n, myID(t, n)
				}
			}
		}
	}
	t.Fatalf("no node serves slot %d", slot)
	return nil, ""
}

func myID(t *testing.T, n *redistest.Server) string {
	t.Helper()
	c := n.Client()
	defer c.Close()
	id, err := c.ClusterMyID(context.Background()).Result()
	require.NoError(t, err)
	return id
}

// A slot moved to another master: the move deletes the key on the old one
// (an invalidation there), and the new master's writes reach the near cache
// through its own tracking connection.
func TestNearClusterSlotMove(t *testing.T) {
	nodes, client := privateCluster(t)
	b := redistest.Backend{Kind: redistest.Cluster, Client: client, ClusterNodes: nodes, Prefix: redistest.NewPrefix(t)}
	e := newNearEnv(t, b, cache.Options{})
	ctx := context.Background()
	seen := watchInvalidations(e.c)
	o := other(t, b)
	k := e.key(e.c, "mv")
	slot := redistest.Slot(k)
	src, srcID := nodeOf(t, nodes, slot)
	var dst *redistest.Server
	for _, n := range nodes {
		if n != src {
			dst = n
			break
		}
	}
	dstID := myID(t, dst)

	settle(t, e, seen, e.c, "mv", func() { require.NoError(t, o.Set(ctx, "mv", "v1", time.Minute)) })
	warmNear(t, e.c, e.c, "mv", "v1")

	// The move, as redis-cli --cluster reshard makes it.
	sc, dc := src.Client(), dst.Client()
	defer sc.Close()
	defer dc.Close()
	require.NoError(t, dc.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err())
	require.NoError(t, sc.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err())
	n := seen.count(k)
	require.NoError(t, sc.Do(ctx, "MIGRATE", "127.0.0.1", dst.Port(), "", 0, 5000, "KEYS", k).Err())
	seen.wait(t, k, n) // the old master reported the key gone
	for _, node := range nodes {
		c := node.Client()
		require.NoError(t, c.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err())
		_ = c.Close()
	}
	got, _ := getString(t, e.c, "mv")
	require.Equal(t, "v1", got, "the value moved with its slot")

	// The new master's writes invalidate too.
	warmNear(t, e.c, e.c, "mv", "v1")
	settle(t, e, seen, e.c, "mv", func() { require.NoError(t, o.Set(ctx, "mv", "v2", time.Minute)) })
	got, _ = getString(t, e.c, "mv")
	require.Equal(t, "v2", got)
}

// A master joins the cluster and a slot moves to it: it is tracked from the
// moment it joins, before it holds a slot, so its writes reach the near
// cache.
func TestNearClusterNewMaster(t *testing.T) {
	nodes, client := privateCluster(t)
	ctx := context.Background()
	b := redistest.Backend{Kind: redistest.Cluster, Client: client, ClusterNodes: nodes, Prefix: redistest.NewPrefix(t)}
	e := newNearEnv(t, b, cache.Options{})
	seen := watchInvalidations(e.c)
	o := other(t, b)
	k := e.key(e.c, "nm")
	slot := redistest.Slot(k)
	src, srcID := nodeOf(t, nodes, slot)
	settle(t, e, seen, e.c, "nm", func() { require.NoError(t, o.Set(ctx, "nm", "v1", time.Minute)) })
	warmNear(t, e.c, e.c, "nm", "v1")

	fresh, err := redistest.StartServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", "2000")
	require.NoError(t, err)
	t.Cleanup(fresh.Close)
	fc := fresh.Client()
	defer fc.Close()
	require.NoError(t, fc.ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(src.Port())).Err())
	waitFor(t, "the new master to be tracked", func() bool {
		return slices.Contains(cache.NearTracked(e.c), fresh.Addr()) && cache.NearLive(e.c)
	})
	waitFor(t, "the new master to see the cluster", func() bool {
		info, _ := fc.ClusterInfo(ctx).Result()
		return strings.Contains(info, "cluster_state:ok")
	})
	freshID := myID(t, fresh)
	sc := src.Client()
	defer sc.Close()
	require.NoError(t, fc.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err())
	require.NoError(t, sc.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", freshID).Err())
	require.NoError(t, sc.Do(ctx, "MIGRATE", "127.0.0.1", fresh.Port(), "", 0, 5000, "KEYS", k).Err())
	for _, node := range append(slices.Clone(nodes), fresh) {
		c := node.Client()
		require.NoError(t, c.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", freshID).Err())
		_ = c.Close()
	}
	for _, v := range []string{"v2", "v3", "v4"} {
		settle(t, e, seen, e.c, "nm", func() { require.NoError(t, o.Set(ctx, "nm", v, time.Minute)) })
		warmNear(t, e.c, e.c, "nm", v) // read from the new master, then held near
	}
}

// A master fails and its replica takes over: the lost tracking connection
// drops everything, the near cache serves nothing until the new master is
// tracked, and a write there is never hidden by the old value.
func TestNearClusterFailover(t *testing.T) {
	nodes, client := privateCluster(t)
	ctx := context.Background()
	b := redistest.Backend{Kind: redistest.Cluster, Client: client, ClusterNodes: nodes, Prefix: redistest.NewPrefix(t)}
	k := b.Prefix + ":v:{fo}"
	master, masterID := nodeOf(t, nodes, redistest.Slot(k))

	// A replica of the key's master.
	replica, err := redistest.StartServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", "2000")
	require.NoError(t, err)
	t.Cleanup(replica.Close)
	rc := replica.Client()
	defer rc.Close()
	require.NoError(t, rc.ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(master.Port())).Err())
	waitFor(t, "the replica to know the master", func() bool {
		return rc.Do(ctx, "CLUSTER", "REPLICATE", masterID).Err() == nil
	})
	waitFor(t, "the replica to sync", func() bool {
		info, _ := rc.Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})

	// No breaker: the reads while the master is down would open it.
	e := newNearEnv(t, b, cache.Options{BreakerFailures: -1})
	seen := watchInvalidations(e.c)
	o := other(t, b)
	settle(t, e, seen, e.c, "fo", func() { require.NoError(t, o.Set(ctx, "fo", "v1", time.Minute)) })
	warmNear(t, e.c, e.c, "fo", "v1")
	mc := master.Client()
	acked, err := mc.Do(ctx, "WAIT", 1, 5000).Int()
	_ = mc.Close()
	require.NoError(t, err)
	require.Equal(t, 1, acked, "the replica holds v1")

	master.Stop()
	waitLive(t, e.c, false)
	before := e.hk.calls()
	var s string
	found, _ := e.c.Get(ctx, "fo", &s) // the master is down: an error, never v1 from memory
	require.False(t, found)
	require.Positive(t, e.hk.calls()-before, "a near hit after the tracking connection was lost")
	require.NoError(t, rc.Do(ctx, "CLUSTER", "FAILOVER", "TAKEOVER").Err())
	waitFor(t, "the replica to be master", func() bool {
		info, _ := rc.Info(ctx, "replication").Result()
		return strings.Contains(info, "role:master")
	})
	waitFor(t, "the write on the new master", func() bool {
		return o.Set(ctx, "fo", "v2", time.Minute) == nil
	})
	waitLive(t, e.c, true)
	hits := nearStats(t, e.c).NearHits
	waitFor(t, "v2 near", func() bool {
		var got string
		found, err := e.c.Get(ctx, "fo", &got)
		if err != nil || !found {
			return false // the cluster is still settling
		}
		require.Equal(t, "v2", got, "the old value came back")
		return nearStats(t, e.c).NearHits > hits
	})
	// And the new master's writes invalidate.
	settle(t, e, seen, e.c, "fo", func() { require.NoError(t, o.Set(ctx, "fo", "v3", time.Minute)) })
	got, _ := getString(t, e.c, "fo")
	require.Equal(t, "v3", got)
}

// waitFor polls cond every 10 ms for at most 20 s: cluster state changes
// (a meet, a sync, a takeover) take a few gossip rounds of a second or less;
// only one that never happens reaches the bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 20*time.Second; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
