package scripts_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// allow.lua called directly: a limit of 3 units, one every 100 ms, granted
// while it fits, refused with the wait until it does, refused by a hold with
// the hold's wait, and its state written with the TTL it is given.
func TestAllowScript(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		hold, state := b.Prefix+":{a}:hold", b.Prefix+":{a}:gcra"
		keys := []string{hold, state}
		const m, e = 3, 100_000       // 3 units, one per 100 ms
		const span, px = m * e, "300" // m·e µs, and in ms
		// An Allow granted or refused by the limit is answered with one
		// integer: the tat less Redis's time after the call, ≥ 0 granted,
		// < 0 refused (less the µs until the cost fits).
		call := func(c int) int64 {
			t.Helper()
			v, err := script.Allow.Run(ctx, b.Client, keys, span, c*e, px).Int64()
			require.NoError(t, err)
			return v
		}
		if b.Mini != nil {
			b.Mini.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
		}
		require.Equal(t, int64(e), call(1), "an empty limit: the tat one interval ahead")
		x := call(2) // Redis's clock moved on a little since the first (not miniredis's)
		require.True(t, x > 2*e && x <= 3*e, "two more units: the tat about three intervals ahead, %d", x)
		x = call(1) // used up: the next unit fits in about 100 ms
		require.Less(t, x, int64(0))
		require.GreaterOrEqual(t, x, int64(-e))
		pttl, err := b.Client.PTTL(ctx, state).Result()
		require.NoError(t, err)
		require.True(t, pttl > 0 && pttl <= 300*time.Millisecond, "state PTTL %v", pttl)

		// A hold ending well after the limit has room refuses with -1 and its wait.
		// It is answered in decide.lua's layout, short (nothing is booked).
		require.NoError(t, b.Client.Set(ctx, hold, "9999999999999999", time.Minute).Err())
		v, err := script.Allow.Run(ctx, b.Client, keys, span, e, px).Int64Slice()
		require.NoError(t, err)
		require.Len(t, v, 7)
		require.Equal(t, []int64{0, -1, 0, 0}, []int64{v[0], v[2], v[3], v[4]}, "denied by the hold, no grant time, no lease")
		require.Greater(t, v[1], int64(time.Hour/time.Microsecond))

		// With a max wait, a used-up limit books its next unit: the grant
		// time is the wait ahead of Redis's clock, the booking id and mark are
		// the tat written (one interval after the grant time, the state's new
		// value), the prior value the tat before.
		require.NoError(t, b.Client.Del(ctx, hold).Err())
		before, err := b.Client.Get(ctx, state).Int64()
		require.NoError(t, err)
		v, err = script.Allow.Run(ctx, b.Client, keys, span, e, px, int64(time.Second/time.Microsecond)).Int64Slice()
		require.NoError(t, err)
		require.Len(t, v, 13)
		require.Equal(t, []int64{1, 0, 0}, []int64{v[0], v[2], v[4]}, "granted, by nothing, no lease")
		require.Greater(t, v[1], int64(0), "a booking waits")
		require.Equal(t, before-m*e+e, v[3], "grant time: when the unit fits under the tat before")
		require.Equal(t, []int64{before + e, before + e, before, 0, 0, 0}, v[7:], "id, mark, prior tat")
		now := v[3] - v[1] // Redis's time of the call: the grant time less the wait
		require.Equal(t, []int64{0, before + e - now}, v[5:7], "remaining left to the caller; reset the tat written less now")
		after, err := b.Client.Get(ctx, state).Int64()
		require.NoError(t, err)
		require.Equal(t, before+e, after)
		// A booking's tat may lie beyond the span: its TTL is its own, not
		// the Allow's PX, and lasts until the tat is past.
		// TIME and PTTL in one transaction read the expiry as an instant,
		// however long the machine took to get here (two round trips after
		// the call, at load 9 past the 2 ms slack this once had). PTTL is
		// whole ms.
		expiry := expiresAt(ctx, t, b, state)
		require.GreaterOrEqual(t, expiry, after-1000, "state expires %d µs after the tat", expiry-after)
		// Beyond the max wait: denied, with the time it would fit and nothing written.
		v, err = script.Allow.Run(ctx, b.Client, keys, span, e, px, 1).Int64Slice()
		require.NoError(t, err)
		require.Equal(t, []int64{0, 1}, []int64{v[0], v[2]})
		require.Equal(t, after-m*e+e, v[3])
		require.Len(t, v, 7, "a denial books nothing: short")
		now = v[3] - v[1]
		require.Equal(t, []int64{0, after - now}, v[5:7], "remaining left to the caller; reset the tat less now")
		still, err := b.Client.Get(ctx, state).Int64()
		require.NoError(t, err)
		require.Equal(t, after, still)
	})
}

// expiresAt returns when key expires, in µs on Redis's clock: TIME and PTTL
// read in one transaction on the node that holds key.
func expiresAt(ctx context.Context, t *testing.T, b redistest.Backend, key string) int64 {
	t.Helper()
	var c redis.Cmdable = b.Client
	if cc, ok := b.Client.(*redis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, key)
		require.NoError(t, err)
		c = node
	}
	var now *redis.TimeCmd
	var pttl *redis.DurationCmd
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		now, pttl = p.Time(ctx), p.PTTL(ctx, key)
		return nil
	})
	require.NoError(t, err)
	require.Positive(t, pttl.Val(), "%s has no TTL", key)
	return now.Val().UnixMicro() + pttl.Val().Microseconds()
}
