package cache

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/reach"
)

// Stats are the cache's counters, kept in this process since New (shared by
// its group views), and figures Redis reports.
type Stats struct {
	// Hits counts keys found by Get, GetMany and GetOrLoad, near
	// or in Redis.
	Hits int64
	// NearHits counts the Hits the near cache answered without Redis; the
	// others were read from Redis.
	NearHits int64
	// NearInvalidations counts values the near cache dropped because Redis
	// reported their key changed or this process wrote it.
	NearInvalidations int64
	// NearEvictions counts values the near cache dropped to stay within
	// Options.NearMaxBytes.
	NearEvictions int64
	// NearBytes is the near cache's size, as Options.NearMaxBytes counts it.
	NearBytes int64
	// NearLive reports whether every Redis node has a live tracking
	// connection, so that the near cache serves reads.
	NearLive bool
	// Misses counts keys not found, including reads that failed.
	Misses int64
	// Errors counts Redis calls that failed (no connection, timeout…).
	Errors int64
	// Rejected counts calls the open circuit breaker failed without calling Redis.
	Rejected int64
	// Loads counts calls of a GetOrLoad load function.
	Loads int64
	// HitRate is Hits / (Hits + Misses), from 0 to 1; 0 before any read.
	HitRate float64
	// Breaker is the circuit breaker's state: "closed", "open", "half-open", or
	// "disabled".
	Breaker string

	// Connected reports whether Redis answered INFO; the fields below are zero
	// when it did not.
	Connected bool
	// Nodes is the number of Redis servers summed below: 1, or a cluster's masters.
	Nodes int
	// UsedMemory is used_memory in bytes, summed over the nodes.
	UsedMemory int64
	// Keys is the number of keys in the database (all of them, not only this
	// cache's), summed over the nodes.
	Keys int64
	// ConnectedClients is connected_clients, summed over the nodes.
	ConnectedClients int64
	// UptimeSeconds is uptime_in_seconds, the least over the nodes.
	UptimeSeconds int64
}

// Stats returns the cache's counters and, from INFO and DBSIZE on every master,
// Redis's memory, keys, clients and uptime. When Redis cannot be asked it
// returns the counters with Connected false, and the error.
func (c *Cache) Stats(ctx context.Context) (Stats, error) {
	s := Stats{
		Hits:     c.core.hits.Load(),
		Misses:   c.core.misses.Load(),
		Errors:   c.core.errs.Load(),
		Rejected: c.core.rejected.Load(),
		Loads:    c.core.loads.Load(),
		Breaker:  "disabled",
	}
	c.core.near.stats(&s)
	if n := s.Hits + s.Misses; n > 0 {
		s.HitRate = float64(s.Hits) / float64(n)
	}
	if c.core.breaker {
		s.Breaker = [...]string{reach.Closed: "closed", reach.HalfOpen: "half-open", reach.Open: "open"}[c.core.path.State()]
	}
	var mu sync.Mutex
	s.UptimeSeconds = -1
	err := c.core.eachNode(ctx, func(ctx context.Context, node nodeClient) error {
		p := node.Pipeline()
		info := p.Info(ctx)
		size := p.DBSize(ctx)
		if _, err := p.Exec(ctx); err != nil {
			return err
		}
		f := parseInfo(info.Val())
		mu.Lock()
		defer mu.Unlock()
		s.Nodes++
		s.UsedMemory += f["used_memory"]
		s.ConnectedClients += f["connected_clients"]
		s.Keys += size.Val()
		if up, ok := f["uptime_in_seconds"]; ok && (s.UptimeSeconds < 0 || up < s.UptimeSeconds) {
			s.UptimeSeconds = up
		}
		return nil
	})
	if s.UptimeSeconds < 0 {
		s.UptimeSeconds = 0
	}
	if err != nil {
		return Stats{Hits: s.Hits, Misses: s.Misses, Errors: s.Errors, Rejected: s.Rejected,
			Loads: s.Loads, HitRate: s.HitRate, Breaker: s.Breaker,
			NearHits: s.NearHits, NearInvalidations: s.NearInvalidations, NearEvictions: s.NearEvictions,
			NearBytes: s.NearBytes, NearLive: s.NearLive}, fmt.Errorf("cache: stats: %w", err)
	}
	s.Connected = true
	return s, nil
}

// HealthCheck pings Redis (every master of a cluster) and returns the first
// error. It bypasses the circuit breaker, so it tells whether Redis is back
// while the breaker is still open.
func (c *Cache) HealthCheck(ctx context.Context) error {
	err := c.core.eachNode(ctx, func(ctx context.Context, node nodeClient) error {
		return node.Ping(ctx).Err()
	})
	if err != nil {
		return fmt.Errorf("cache: health check: %w", err)
	}
	return nil
}

// nodeClient is the part of a node's client Stats and HealthCheck use.
type nodeClient interface {
	Pipeline() redis.Pipeliner
	Ping(ctx context.Context) *redis.StatusCmd
}

// eachNode runs fn on every master of a cluster, every shard of a Ring, or the client.
func (c *core) eachNode(ctx context.Context, fn func(ctx context.Context, node nodeClient) error) error {
	switch {
	case c.nilClient:
		return errNilClient
	case c.masters != nil:
		return c.masters.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return fn(ctx, n) })
	case c.shards != nil:
		return c.shards.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return fn(ctx, n) })
	}
	return fn(ctx, c.client)
}

// parseInfo returns the integer fields of an INFO reply.
func parseInfo(info string) map[string]int64 {
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}
