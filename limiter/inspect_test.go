package limiter

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
)

// waitDef waits until the registry's write of head's definition has landed
// (it is sent from its own goroutine, off the decision path). Bounded: 5 s.
func waitDef(t *testing.T, c redis.UniversalClient, hold string) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		v, err := c.Get(context.Background(), defKey(hold)).Result()
		if err == nil {
			return v
		}
		if !errors.Is(err, redis.Nil) || time.Now().After(deadline) {
			t.Fatalf("definition of %s never written: %v", hold, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Inspect reads every algorithm's state as the decision that wrote it
// reported it, finds quotas by SCAN on every master, and shows holds with
// their reasons until Release.
func TestInspectAgreesWithDecisions(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := newLim(b, Options{})
		q := Quota{Name: "ex:{1}", Limits: []NamedLimit{
			{"gcra", Every(10, time.Hour)},
			{"sliding", Limit{Rate: 10, Period: time.Hour, Burst: 10, Algorithm: SlidingWindow}},
			{"counter", Limit{Rate: 10, Period: time.Hour, Burst: 10, Algorithm: SlidingWindowCounter}},
			{"fixed", Limit{Rate: 10, Period: time.Hour, Burst: 10, Algorithm: FixedWindow}},
		}}
		cost := Cost{"gcra": 3, "sliding": 3, "counter": 3, "fixed": 3}
		res, err := lim.Allow(ctx, Charge{Quota: q, Cost: cost})
		require.NoError(t, err)
		require.True(t, res.Allowed)
		// An idle neighbour: decided on once, then reset.
		_, err = lim.Allow(ctx, Key("idle", PerSecond(4)).Take(1))
		require.NoError(t, err)
		require.NoError(t, lim.Reset(ctx, Quota{Name: "idle"}))
		waitDef(t, b.Client, lim.holdKey(q))
		waitDef(t, b.Client, lim.holdKey(Quota{Name: "idle"}))

		all, err := lim.Inspect(ctx)
		require.NoError(t, err)
		require.Len(t, all, 2, "SCAN found %+v", all)
		require.Equal(t, "ex:{1}", all[0].Quota.Name)
		require.Equal(t, q.Limits, all[0].Quota.Limits)
		require.Equal(t, "idle", all[1].Quota.Name)
		require.Equal(t, []NamedLimit{{"", PerSecond(4)}}, all[1].Quota.Limits)
		require.Equal(t, 4, all[1].Limits[0].Remaining, "idle key is full")

		st := all[0]
		require.Len(t, st.Limits, 4)
		for i, lr := range st.Limits {
			// Periods of an hour: nothing refills or slides out between the
			// decision and the reading (a GCRA unit takes 6 minutes).
			require.Equal(t, res.Limits[i].Remaining, lr.Remaining, lr.Name)
			require.Equal(t, 7, lr.Remaining, lr.Name)
			require.True(t, lr.Allowed, lr.Name)
			require.Positive(t, lr.ResetAfter, lr.Name)
			require.LessOrEqual(t, lr.ResetAfter, res.Limits[i].ResetAfter, lr.Name)
		}
		require.Zero(t, st.Hold)

		// Exhausted.
		_, err = lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"fixed": 7}})
		require.NoError(t, err)
		got, err := lim.Inspect(ctx, q.Name)
		require.NoError(t, err)
		require.Equal(t, 0, got[0].Limits[3].Remaining)
		require.False(t, got[0].Limits[3].Allowed)

		// Held, with a reason, then released.
		left, err := lim.Hold(ctx, q, time.Minute, "maintenance (alice)")
		require.NoError(t, err)
		require.Equal(t, time.Minute, left)
		got, err = lim.Inspect(ctx, q.Name)
		require.NoError(t, err)
		require.Greater(t, got[0].Hold, 50*time.Second)
		require.LessOrEqual(t, got[0].Hold, time.Minute)
		require.Equal(t, "maintenance (alice)", got[0].HoldReason)
		_, err = lim.Hold(ctx, q, 0, "")
		require.NoError(t, err)
		got, err = lim.Inspect(ctx, q.Name)
		require.NoError(t, err)
		require.Zero(t, got[0].Hold)
		require.Empty(t, got[0].HoldReason)
		r, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"gcra": 1}})
		require.NoError(t, err)
		require.True(t, r.Allowed, "released quota still held: %+v", r)

		// A hold on a name nothing has decided on: found, with no limits.
		_, err = lim.Hold(ctx, Quota{Name: "quiet"}, time.Minute, "")
		require.NoError(t, err)
		all, err = lim.Inspect(ctx)
		require.NoError(t, err)
		require.Len(t, all, 3)
		require.Equal(t, "quiet", all[2].Quota.Name)
		require.Empty(t, all[2].Limits)
		require.Positive(t, all[2].Hold)

		// A name with nothing in Redis.
		none, err := lim.Inspect(ctx, "nothing")
		require.NoError(t, err)
		require.Equal(t, []NamedLimit(nil), none[0].Quota.Limits)
		require.Zero(t, none[0].Hold)
	})
}

// The registry writes a quota's definition once per interval per process,
// never per decision, with a TTL that outlives the quota's state.
func TestRegistryOncePerInterval(t *testing.T) {
	m, c := redistest.NewMini(t)
	ctx := context.Background()
	base := time.Now()
	now := base
	registryNow = func() time.Time { return now }
	t.Cleanup(func() { registryNow = time.Now })
	lim := New(c, Options{Prefix: "reg"})
	q := Quota{Name: "binance", Label: "binance", Limits: []NamedLimit{
		{"weight", Limit{Rate: 1200, Period: time.Minute, Burst: 1200, Algorithm: FixedWindow}},
		{"orders", PerDay(200_000)},
	}}
	_, err := lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
	require.NoError(t, err)
	head := lim.holdKey(q)
	v := waitDef(t, c, head)
	var def definition
	require.NoError(t, json.Unmarshal([]byte(v), &def))
	back, err := parseDefinition([]byte(v))
	require.NoError(t, err)
	require.Equal(t, q, back)
	// Twice the longest period (a day) plus the interval.
	require.Equal(t, 48*time.Hour+registryEvery, m.TTL(defKey(head)))

	// Within the interval: not written again, however many decisions.
	m.Del(defKey(head))
	for range 50 {
		_, err = lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
		require.NoError(t, err)
	}
	time.Sleep(50 * time.Millisecond) // a write would have been sent by now; its absence is what is checked
	require.False(t, m.Exists(defKey(head)), "definition rewritten within the interval")

	// After it: written again, by the next decision.
	now = base.Add(registryEvery)
	_, err = lim.Allow(ctx, Charge{Quota: q, Cost: Cost{"weight": 1}})
	require.NoError(t, err)
	waitDef(t, c, head)
}

// Malformed definitions and bad names are errors, never panics.
func TestInspectBadInput(t *testing.T) {
	m, c := redistest.NewMini(t)
	ctx := context.Background()
	lim := New(c, Options{Prefix: "bad"})
	_, err := lim.Inspect(ctx, "")
	require.ErrorIs(t, err, errEmptyKey)
	_, err = lim.Hold(ctx, Quota{}, 0, "")
	require.ErrorIs(t, err, errEmptyKey)
	for _, v := range []string{"{", `{"name":"x","limits":[]}`, `{"name":"x","limits":[{"algorithm":"nope","rate":1,"period_us":1000}]}`,
		`{"name":"x","limits":[{"algorithm":"gcra","rate":0,"period_us":1000}]}`} {
		require.NoError(t, m.Set(defKey(lim.holdKey(Quota{Name: "x"})), v))
		_, err = lim.Inspect(ctx, "x")
		require.ErrorIs(t, err, ErrBadReply, v)
	}
}

// Instances of a template (For) and quotas of a Group are found, each with
// its key, and can be given back to Hold (and Hold 0 to release) and Reset as they come;
// a hold on an instance no process has described is named from its key.
func TestInspectInstancesAndGroups(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		lim := newLim(b, Options{})
		pair := Quota{Name: "kraken:pair", Limits: []NamedLimit{{"calls", Every(10, time.Hour)}}}
		acct := Quota{Name: "account", Group: "binance-ip1", Limits: []NamedLimit{{"orders", Every(10, time.Hour)}}}
		_, err := lim.Allow(ctx, Charge{Quota: pair.For("XBT/USD"), Cost: Cost{"calls": 2}})
		require.NoError(t, err)
		_, err = lim.Allow(ctx, Charge{Quota: acct.For("a:{1}"), Cost: Cost{"orders": 3}})
		require.NoError(t, err)
		waitDef(t, b.Client, lim.holdKey(pair.For("XBT/USD")))
		waitDef(t, b.Client, lim.holdKey(acct.For("a:{1}")))
		// Holds only: a keyed instance and a grouped quota nothing decided on.
		_, err = lim.Hold(ctx, pair.For("ETH/USD"), time.Minute, "")
		require.NoError(t, err)
		_, err = lim.Hold(ctx, Quota{Name: "spot", Group: "binance-ip1"}, time.Minute, "")
		require.NoError(t, err)

		all, err := lim.Inspect(ctx)
		require.NoError(t, err)
		require.Len(t, all, 4)
		got := map[string]QuotaState{}
		for _, st := range all {
			got[st.Quota.Name+"/"+st.Key] = st
		}
		require.Equal(t, 7, got["account/a:{1}"].Limits[0].Remaining)
		require.Equal(t, "binance-ip1", got["account/a:{1}"].Quota.Group)
		require.Equal(t, 8, got["kraken:pair/XBT/USD"].Limits[0].Remaining)
		require.Positive(t, got["kraken:pair/ETH/USD"].Hold)
		require.Empty(t, got["kraken:pair/ETH/USD"].Limits)
		require.Positive(t, got["spot/"].Hold)
		require.Equal(t, "binance-ip1", got["spot/"].Quota.Group)

		// Named: every instance of the template.
		named, err := lim.Inspect(ctx, "kraken:pair")
		require.NoError(t, err)
		require.Len(t, named, 2)

		// What Inspect returns is what the operations take.
		_, err = lim.Hold(ctx, got["kraken:pair/ETH/USD"].Quota, 0, "")
		require.NoError(t, err)
		require.NoError(t, lim.Reset(ctx, got["account/a:{1}"].Quota))
		after, err := lim.Inspect(ctx, "kraken:pair", "account")
		require.NoError(t, err)
		for _, st := range after {
			require.Zero(t, st.Hold, st.Quota.Name)
			if st.Quota.Name == "account" {
				require.Equal(t, 10, st.Limits[0].Remaining)
			}
		}
	})
}
