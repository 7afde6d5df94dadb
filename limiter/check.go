package limiter

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// InfoClient is the part of a go-redis client CheckServer uses.
type InfoClient interface {
	Info(ctx context.Context, section ...string) *redis.StringCmd
}

// CheckServer inspects the Redis server a limiter uses and returns warnings
// about settings that can make a limit overshoot; call it at start-up and log
// what it returns. Today it checks eviction: with maxmemory set, every policy
// but noeviction may delete keys under memory pressure — volatile-* policies
// included, since every redquota key has a TTL — and a limiter key that
// vanishes forgets what was already granted. Under noeviction, writes fail
// when memory is full and the limiter's failure policy decides instead.
// On a cluster client only the node serving the first call is inspected;
// check each node's configuration if they may differ.
func CheckServer(ctx context.Context, c InfoClient) ([]string, error) {
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return nil, fmt.Errorf("limiter: INFO memory: %w", err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	policy, ok := fields["maxmemory_policy"]
	if !ok {
		return nil, fmt.Errorf("limiter: INFO memory has no maxmemory_policy")
	}
	var warnings []string
	if fields["maxmemory"] != "0" && policy != "noeviction" {
		warnings = append(warnings, fmt.Sprintf(
			"maxmemory-policy %s with maxmemory %s can evict limiter keys (all have TTLs), so limits may overshoot under memory pressure; use noeviction or a separate Redis for limits",
			policy, fields["maxmemory_human"]))
	}
	return warnings, nil
}
