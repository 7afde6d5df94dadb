package limiter

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxRestartLimits bounds how many limits a Limiter remembers for
// Options.RestartSpent; limits beyond it restart empty.
const maxRestartLimits = 10000

// restartGuard finds that Redis lost its state, by its run_id changing, and
// then charges each limit this process has used as Options.RestartSpent says.
type restartGuard struct {
	share    float64
	checked  atomic.Uint64 // the watch's dial count last checked
	checkMu  sync.Mutex    // one check at a time
	mu       sync.Mutex
	runID    string
	seen     sync.Map // state key → Limit
	n        atomic.Int64
	restarts atomic.Int64
}

// note remembers the limits of a decision Redis answered.
func (g *restartGuard) note(p *plan) {
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

// afterDecision runs once a decision succeeded; gen is the restart count
// read before it started. When the client has made connections since the
// last check, it asks Redis its run_id first (one caller at a time: the
// others wait for its answer) and, if it changed, charges the limits seen so
// far. It reports whether a restart was found since the decision started:
// the decision may then have been made on the empty state, and is made again.
func (l *Limiter) afterDecision(ctx context.Context, p *plan, gen int64) bool {
	g := l.restart
	g.note(p)
	if d := l.path.Watch().Dials(); d > g.checked.Load() {
		g.checkMu.Lock()
		if d > g.checked.Load() {
			cctx, cancel := context.WithTimeout(ctx, max(l.timeout, restartCheckTimeout))
			if l.checkRestart(cctx) == nil {
				g.checked.Store(d)
			}
			cancel()
		}
		g.checkMu.Unlock()
	}
	return g.restarts.Load() != gen
}

// restartCheckTimeout bounds a run_id check and its resync when the limiter
// has no Timeout of its own.
const restartCheckTimeout = 2 * time.Second

// checkRestart compares Redis's run_id with the one seen before and, when it
// changed, charges every limit seen RestartSpent of its maximum.
func (l *Limiter) checkRestart(ctx context.Context) error {
	g := l.restart
	id, err := runID(ctx, l.client)
	if err != nil {
		return err
	}
	g.mu.Lock()
	prev := g.runID
	g.runID = id
	g.mu.Unlock()
	if prev == "" || prev == id {
		return nil
	}
	g.restarts.Add(1)
	var firstErr error
	g.seen.Range(func(k, v any) bool {
		lim := v.(Limit)
		used := max(int(float64(lim.most())*g.share+0.5), 1)
		used = min(used, lim.most())
		_, err := l.sync(ctx, k.(string), lim, used, 0, "", 0)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return ctx.Err() == nil
	})
	return firstErr
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
