package limiter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/script"
)

// maxRestartLimits bounds how many limits a Limiter remembers for
// Options.RestartSpent; limits beyond it restart empty.
const maxRestartLimits = 10000

// restartGuard finds that Redis lost its state, by its run_id changing, and
// then places again the holds in force this process knows of and charges
// each limit it has used as Options.RestartSpent says. Decisions watch for it
// with RestartSpent, or while a kept hold is in force (on).
type restartGuard struct {
	share    float64
	checked  atomic.Uint64 // the watch's dial count last checked
	checkMu  sync.Mutex    // one check at a time
	mu       sync.Mutex
	runID    string
	owed     bool     // the last restart's resync failed: the next check does it again
	seen     sync.Map // state key → Limit
	n        atomic.Int64
	restarts atomic.Int64
	// resynced counts the resyncs done (after a restart, or an owed one that
	// succeeded), each counted once its holds and syncs are back in Redis: a
	// decision that read a smaller count may have been answered by the state
	// without them, and is made again.
	resynced atomic.Int64
	holds    keptHolds
	// asking: askReasons runs.
	asking atomic.Bool
}

// on reports whether decisions check for a restart: with RestartSpent, or
// while a hold this Limiter placed or was denied by is in force. Otherwise
// it costs a decision one atomic load.
func (g *restartGuard) on() bool { return g.share > 0 || g.holds.inForce() }

// known reports whether a run_id was read (or found unreadable: a server
// without INFO), for a later check to compare with.
func (g *restartGuard) known() bool {
	if g.checked.Load() > 0 {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.runID != ""
}

// note remembers the limits of a decision Redis answered.
func (g *restartGuard) note(p *plan) {
	if g.share == 0 {
		return
	}
	for i := range p.n {
		k := p.keys[i].key
		if _, ok := g.seen.Load(k); ok || g.n.Load() >= maxRestartLimits {
			continue
		}
		if _, loaded := g.seen.LoadOrStore(k, p.limits[i]); !loaded {
			g.n.Add(1)
		}
	}
}

// afterDecision runs once a decision succeeded; gen is the resync count
// read before it started. When the client has made connections since the
// last check, it asks Redis its run_id first (one caller at a time: the
// others wait for its answer) and, if it changed, places the kept holds
// again and charges the limits seen so far. It reports whether a resync
// ended since the decision started: the decision may then have been made on
// the empty state, before the holds were back, and is made again.
func (l *Limiter) afterDecision(ctx context.Context, p *plan, gen int64) bool {
	g := l.restart
	g.note(p)
	if d := l.path.Watch().Dials(); d > g.checked.Load() {
		g.checkMu.Lock()
		if d > g.checked.Load() {
			l.checkNow(ctx, d)
		}
		g.checkMu.Unlock()
	}
	return g.resynced.Load() != gen
}

// watchRunID checks the run_id at once (a decision found a hold in force
// while decisions did not watch for a restart): it is what a later check
// compares with.
func (l *Limiter) watchRunID(ctx context.Context) {
	g := l.restart
	g.checkMu.Lock()
	l.checkNow(ctx, l.path.Watch().Dials())
	g.checkMu.Unlock()
}

// watchBeforeHold is watchRunID before Hold places a hold while decisions
// do not watch: it reads the run_id the hold will be placed under, so that a
// restart after the read is found. The read goes through the path, as Hold's
// own call does: an unreachable Redis (or the breaker open) fails it, and
// Hold with it, within Options.Timeout. A server that refuses the read
// (miniredis) leaves Hold to go on unwatched.
func (l *Limiter) watchBeforeHold(ctx context.Context) error {
	g := l.restart
	g.checkMu.Lock()
	defer g.checkMu.Unlock()
	d := l.path.Watch().Dials()
	g.mu.Lock()
	known := g.runID != ""
	g.mu.Unlock()
	if known && d <= g.checked.Load() {
		// A Hold just before this one read it, and the client has made no
		// connection since: of a burst of Holds (a 429 reaching many
		// requests at once) only the first asks.
		return nil
	}
	var id string
	// id is read only when err is nil: a call the bound left behind may
	// write it late.
	err := l.call(ctx, "hold", func(ctx context.Context) error {
		var err error
		id, err = runID(ctx, l.client)
		return err
	})
	var re redis.Error
	if errors.As(err, &re) {
		g.checked.Store(d)
		return nil
	}
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, max(l.timeout, restartCheckTimeout))
	defer cancel()
	if l.resync(cctx, id) == nil {
		g.checked.Store(d)
	}
	return nil
}

// checkNow runs checkRestart, holding checkMu, and records the dial count d
// it read before as checked when it succeeded, or when the server refused
// the run_id read itself (miniredis has no INFO server): asking again at
// every decision would not change its answer.
func (l *Limiter) checkNow(ctx context.Context, d uint64) {
	cctx, cancel := context.WithTimeout(ctx, max(l.timeout, restartCheckTimeout))
	if err := l.checkRestart(cctx); err == nil || errors.Is(err, errNoRunID) {
		l.restart.checked.Store(d)
	}
	cancel()
}

// errNoRunID: the server answered the run_id read with an error.
var errNoRunID = errors.New("limiter: no run_id")

// restartCheckTimeout bounds a run_id check and its resync when the limiter
// has no Timeout of its own.
const restartCheckTimeout = 2 * time.Second

// checkRestart compares Redis's run_id with the one seen before, and
// resyncs when it changed.
func (l *Limiter) checkRestart(ctx context.Context) error {
	id, err := runID(ctx, l.client)
	var re redis.Error
	if errors.As(err, &re) {
		return fmt.Errorf("%w: %w", errNoRunID, err)
	}
	if err != nil {
		return err
	}
	return l.resync(ctx, id)
}

// resync records id as Redis's run_id and, when it is not the one seen
// before, places the kept holds again for what they have left, then charges
// every limit seen RestartSpent of its maximum. When that fails, the next
// check does it again.
func (l *Limiter) resync(ctx context.Context, id string) error {
	g := l.restart
	g.mu.Lock()
	prev, owed := g.runID, g.owed
	g.runID = id
	g.mu.Unlock()
	if prev == "" || (prev == id && !owed) {
		return nil
	}
	if prev != id {
		g.restarts.Add(1)
	}
	// Holds first: a 418's ban ignored is the costliest thing lost.
	firstErr := l.placeAgain(ctx)
	if err := l.chargeSeen(ctx); err != nil && firstErr == nil {
		firstErr = err
	}
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	g.mu.Lock()
	g.owed = firstErr != nil
	g.mu.Unlock()
	// Counted once done, not when the restart is found: a decision that
	// started while the holds were being placed again read the count before
	// and is made again. Not for an owed resync that failed again: its
	// decision, made again, would fail it again, and so on without end.
	if prev != id || firstErr == nil {
		g.resynced.Add(1)
	}
	return firstErr
}

// chargeSeen charges every limit seen RestartSpent of its maximum (sync.lua:
// raised, never lowered), and returns the first error. It runs while
// decisions wait for the restart check, so on a go-redis client the syncs go
// out in pipelines of placeAgainBatch, not a round trip each.
func (l *Limiter) chargeSeen(ctx context.Context) error {
	g := l.restart
	type seenLimit struct {
		key string
		lim Limit
	}
	var all []seenLimit
	g.seen.Range(func(k, v any) bool {
		all = append(all, seenLimit{k.(string), v.(Limit)})
		return true
	})
	used := func(lim Limit) int {
		return min(max(int(float64(lim.most())*g.share+0.5), 1), lim.most())
	}
	pl, ok := l.client.(pipeliner)
	if !ok {
		var firstErr error
		for _, s := range all {
			if _, err := l.sync(ctx, s.key, s.lim, used(s.lim), 0, "", 0); err != nil && firstErr == nil {
				firstErr = err
			}
			if ctx.Err() != nil {
				break
			}
		}
		return firstErr
	}
	return l.evalPipelined(ctx, "sync", pl, script.Sync, len(all),
		func(i int) ([]string, []any) {
			lim := all[i].lim
			return []string{all[i].key}, []any{lim.Algorithm.script(), lim.periodUS(), lim.most(), lim.intervalUS(), used(lim)}
		},
		nil,
		func(v int64) bool { return v == 0 || v == 1 }) // sync.lua: raised or not
}

// runID returns the run_id of the Redis client reaches; for a cluster or a
// ring, the sorted run_ids of its masters or shards, so that any one of them
// restarting changes it.
func runID(ctx context.Context, c Client) (string, error) {
	var mu sync.Mutex
	var ids []string
	one := func(ctx context.Context, n *redis.Client) error {
		id, err := runIDOf(ctx, n)
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
		return err
	}
	switch c := c.(type) {
	case *redis.ClusterClient:
		if err := c.ForEachMaster(ctx, one); err != nil {
			return "", err
		}
	case *redis.Ring:
		if err := c.ForEachShard(ctx, one); err != nil {
			return "", err
		}
	case doer:
		return runIDOf(ctx, c)
	}
	slices.Sort(ids)
	return strings.Join(ids, ","), nil
}

func runIDOf(ctx context.Context, d doer) (string, error) {
	s, err := d.Do(ctx, "INFO", "server").Text()
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v, nil
		}
	}
	return "", nil
}
