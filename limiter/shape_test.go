package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// The call shape: a charge without a Cost takes 1 of every limit, q.Take(n)
// takes n of every limit, and a Cost takes what it names. A Key quota is a
// key of its own whichever way it is charged: Take on the plain path and a
// Cost{"": n} on the quota path meet the same state.
func TestChargeShapes(t *testing.T) {
	_, c := redistest.NewMini(t)
	ctx := context.Background()
	lim := New(c, Options{Prefix: "shape"})
	q := Quota{Name: "q", Limits: []NamedLimit{{"a", PerHour(10)}, {"b", PerHour(20)}}}

	r, err := lim.Allow(ctx, Charge{Quota: q})
	require.NoError(t, err)
	require.True(t, r.Allowed)
	require.Equal(t, []int{9, 19}, remainings(r))
	require.Equal(t, 9, r.Remaining, "the fewest units left")

	r, err = lim.Allow(ctx, q.Take(3))
	require.NoError(t, err)
	require.Equal(t, []int{6, 16}, remainings(r))

	r, err = lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"b": 5}})
	require.NoError(t, err)
	require.Equal(t, []int{11}, remainings(r), "only the limit the cost names")

	r, err = lim.Allow(ctx, q.Take(7))
	require.NoError(t, err)
	require.False(t, r.Allowed)
	require.Equal(t, "a", r.DeniedBy)
	require.Equal(t, "q", r.DeniedQuota)
	require.Positive(t, r.RetryAfter)

	k := Key("user", PerHour(10))
	r, err = lim.Allow(ctx, k.Take(4))
	require.NoError(t, err)
	require.Equal(t, 6, r.Remaining)
	require.Len(t, r.Limits, 1)
	require.Equal(t, "", r.Limits[0].Name)
	require.Equal(t, PerHour(10), r.Limits[0].Limit)
	r, err = lim.Allow(ctx, Charge{Quota: k, Cost: Cost{"": 2}}) // the quota path, same keys
	require.NoError(t, err)
	require.Equal(t, 4, r.Remaining)
	r, err = lim.Allow(ctx, Charge{Quota: k}) // a Key charge without Take: 1 unit
	require.NoError(t, err)
	require.Equal(t, 3, r.Remaining)

	// Reset of a Key quota forgets the key under every algorithm.
	w := Key("user", Limit{Rate: 5, Period: time.Hour, Algorithm: FixedWindow})
	_, err = lim.Allow(ctx, w.Take(5))
	require.NoError(t, err)
	require.NoError(t, lim.Reset(ctx, Key("user", PerSecond(1))))
	r, err = lim.Allow(ctx, k.Take(1))
	require.NoError(t, err)
	require.Equal(t, 9, r.Remaining)
	r, err = lim.Allow(ctx, w.Take(1))
	require.NoError(t, err)
	require.Equal(t, 4, r.Remaining)
}

func remainings(r Result) []int {
	var out []int
	for _, l := range r.Limits {
		out = append(out, l.Remaining)
	}
	return out
}

// shaHook records the script of every EVALSHA/EVAL a client sends.
type shaHook struct{ shas []any }

func (h *shaHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *shaHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); len(a) > 1 && (a[0] == "evalsha" || a[0] == "eval") {
			h.shas = append(h.shas, a[1])
		}
		return next(ctx, cmd)
	}
}
func (h *shaHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// The single-key decision, Allow(ctx, Key(k, l).Take(1)), is one call of
// allow.lua, the short script (as is any decision of one GCRA limit, now or
// booked ahead, on a client that needs no retry dedupe);
// a window limit's is one call of decide.lua.
func TestKeyDecisionIsOneAllowScript(t *testing.T) {
	_, c := redistest.NewMini(t)
	h := &shaHook{}
	c.AddHook(h)
	ctx := context.Background()
	lim := New(c, Options{Prefix: "one"})
	_, err := lim.Allow(ctx, Key("k", PerSecond(10)).Take(1)) // may load the script: EVALSHA, then EVAL
	require.NoError(t, err)
	h.shas = nil
	_, err = lim.Allow(ctx, Key("k", PerSecond(10)).Take(1))
	require.NoError(t, err)
	require.Equal(t, []any{shaOf(script.Allow)}, h.shas)
	h.shas = nil
	fixed := Quota{Name: "q", Limits: []NamedLimit{{"a", Limit{Rate: 10, Period: time.Second, Algorithm: FixedWindow}}}}
	_, err = lim.Allow(ctx, fixed.Take(1))
	require.NoError(t, err)
	h.shas = nil
	_, err = lim.Allow(ctx, fixed.Take(1))
	require.NoError(t, err)
	require.Equal(t, []any{shaOf(script.Decide)}, h.shas)
}
