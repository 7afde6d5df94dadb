// Package script holds the handles of the Lua scripts of package scripts:
// each is loaded from the embedded files with its preludes prepended, and is
// called with Run (EVALSHA, falling back to EVAL on NOSCRIPT, so a SCRIPT
// FLUSH or a restarted Redis is transparent). Inside a pipeline that fallback
// does not happen: call Load first, and handle NOSCRIPT. Each handle's KEYS
// and ARGV are its script's header.
package script

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// registry holds every script by file name, and sources each script's Lua;
// mustScript fills both at init.
var (
	registry = map[string]*redis.Script{}
	sources  = map[*redis.Script]string{}
	preludes = map[*redis.Script][]string{} // each script's, for library_test.go
)

// Source returns the Lua source of a script, for callers that send EVAL
// themselves after a NOSCRIPT.
func Source(s *redis.Script) string { return sources[s] }

// mustScript returns the handle of an embedded script, its source the
// preludes (Lua functions several scripts share, which Redis cannot import)
// and then the script, and registers it for All and Load. Each package file
// declares the handles of its own scripts.
func mustScript(name string, with ...string) *redis.Script {
	var src []byte
	for _, f := range append(with, name) {
		src = append(src, mustRead(f)...)
	}
	s := redis.NewScript(string(src))
	registry[name] = s
	sources[s] = string(src)
	preludes[s] = with
	return s
}

// Preludes of the limiter scripts, in the order they build on each other.
var (
	stamped  = []string{"state.lua", "gcra.lua", "window_state.lua", "sliding_log.lua"}
	quotaAll = append(append([]string{}, stamped...), "outside.lua", "quota_layout.lua", "quota_time.lua", "quota_charge.lua")
)

// Limiter scripts.
var (
	// Decide checks and charges every limit of one or more quotas, all or
	// nothing, now or booked ahead. See decide.lua.
	Decide = mustScript("decide.lua", quotaAll...)
	// Lease takes a lease: units granted now, spent later. See lease.lua.
	Lease = mustScript("lease.lua", quotaAll...)
	// Wake is the wake-up of a booking: it stands, or is given back and
	// decided anew. See wake.lua.
	Wake = mustScript("wake.lua", append(append([]string{}, quotaAll...), "giveback.lua")...)
	// Allow is Decide's decision of one GCRA limit under one hold, now or
	// booked up to a max wait ahead, in its shortest form (no retry dedupe).
	// See allow.lua.
	Allow = mustScript("allow.lua", "state.lua", "gcra.lua")
	// Batch is R coalesced Allow decisions of one GCRA limit. See batch.lua.
	Batch = mustScript("batch.lua", "state.lua", "gcra.lua")
	// Cancel gives back the units of a reservation that has not come due. See cancel.lua.
	Cancel = mustScript("cancel.lua", append(append([]string{}, stamped...), "giveback.lua")...)
	// Hold stops every grant of a quota until now + a duration. See hold.lua.
	Hold = mustScript("hold.lua")
	// Sync raises a limit's count to the count a server reports. See sync.lua.
	Sync = mustScript("sync.lua", append(append([]string{}, stamped...), "outside.lua")...)
	// SyncLower raises or lowers a fixed-window count that the server
	// lowers by itself (limiter.Limit.Lowers) to the count in its answer to
	// a booked request. See sync_lower.lua.
	SyncLower = mustScript("sync_lower.lua", stamped...)
)

// All returns every script, by file name.
func All() map[string]*redis.Script {
	out := make(map[string]*redis.Script, len(registry))
	for k, v := range registry {
		out[k] = v
	}
	return out
}

// masterIterator is implemented by *redis.ClusterClient.
type masterIterator interface {
	ForEachMaster(ctx context.Context, fn func(ctx context.Context, client *redis.Client) error) error
}

// Load preloads every script and the function library (library.go), on every
// master when client is a cluster client, so that the first EVALSHA or FCALL
// of each finds it. It is optional for Run, which
// falls back to EVAL, and needed before scripts are sent in a pipeline.
func Load(ctx context.Context, client redis.Scripter) error {
	if mi, ok := client.(masterIterator); ok {
		return mi.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return load(ctx, c)
		})
	}
	return load(ctx, client)
}

func load(ctx context.Context, c redis.Scripter) error {
	for name, s := range All() {
		if err := s.Load(ctx, c).Err(); err != nil {
			return fmt.Errorf("script: load %s: %w", name, err)
		}
	}
	// And the function library, where the server has functions (Redis ≥
	// 7.0); a server without them is sent EVALSHA.
	if fl, ok := c.(interface {
		FunctionLoad(ctx context.Context, code string) *redis.StringCmd
	}); ok {
		err := fl.FunctionLoad(ctx, library).Err()
		if err != nil && !strings.Contains(err.Error(), "already exists") && !strings.Contains(strings.ToLower(err.Error()), "unknown command") {
			return fmt.Errorf("script: load the function library: %w", err)
		}
	}
	return nil
}
