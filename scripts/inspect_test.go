package scripts_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// inspect.lua, called directly on states written by hand in each format:
// remaining and reset per algorithm as decide.lua reports them, when one unit
// is next free (full limits, units booked ahead), the hold's end and reason,
// and nothing written.
func TestInspectReadsEveryFormat(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		head := b.Prefix + ":{i}"
		hold, why := head+":hold", head+":hold:why"
		gk, sk, ck, fk, none := head+":gcra:a", head+":sliding:b", head+":counter:c", head+":fixed:d", head+":gcra:e"
		fullGK, fullSK, bookedFK, partFK := head+":gcra:f", head+":sliding:g", head+":fixed:h", head+":fixed:i"
		tm, err := b.Client.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		now := tm.UnixMicro()
		const period = int64(time.Hour / time.Microsecond) // every limit: 10 per hour
		const iv = period / 10
		w := now / period
		set := func(k, v string) {
			if err := b.Client.Set(ctx, k, v, 3*time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
		}
		set(gk, fmt.Sprint(now+3*iv))                                         // GCRA: 3 units owed
		set(fk, fmt.Sprintf("%d %d 0 4 1 0", w*period+1, period))             // fixed: 4 in this window
		set(ck, fmt.Sprintf("%d %d 0 2 1 0", (w-1)*period+1, period))         // counter: 2 in the last window
		set(fullGK, fmt.Sprint(now+12*iv))                                    // GCRA: full, 2 units booked ahead
		set(bookedFK, fmt.Sprintf("%d %d 10 10 1 0", (w+1)*period+1, period)) // fixed: this window full, the next booked full
		set(partFK, fmt.Sprintf("%d %d 10 4 1 0", (w+1)*period+1, period))    // fixed: this window full, 4 booked in the next
		set(hold, fmt.Sprint(now+60_000_000))                                 // held a minute
		set(why, "maintenance")
		// Sliding log: weights 2 and 3 ("C:w", C the running total), one
		// entry older than the period (no longer counted).
		b.Client.ZAdd(ctx, sk, redis.Z{Score: float64(now - period - 10), Member: "1:1"},
			redis.Z{Score: float64(now - 1000), Member: "3:2"}, redis.Z{Score: float64(now - 500), Member: "6:3"})
		b.Client.Expire(ctx, sk, 3*time.Hour)
		b.Client.ZAdd(ctx, fullSK, redis.Z{Score: float64(now - period - 10), Member: "1:1"}, // full: weights 4 and 6
			redis.Z{Score: float64(now - 1000), Member: "5:4"}, redis.Z{Score: float64(now - 500), Member: "11:6"})
		b.Client.Expire(ctx, fullSK, 3*time.Hour)
		// This test's keys (its prefix is its own; DBSIZE would count other
		// tests' keys coming and expiring meanwhile, on the shared servers).
		ours := func() int {
			t.Helper()
			c := redis.UniversalClient(b.Client)
			if cc, ok := b.Client.(*redis.ClusterClient); ok {
				node, err := cc.MasterForKey(ctx, head)
				if err != nil {
					t.Fatal(err)
				}
				c = node
			}
			keys, err := c.Keys(ctx, b.Prefix+":*").Result()
			if err != nil {
				t.Fatal(err)
			}
			return len(keys)
		}
		before := ours()

		args := []any{}
		for _, a := range []int{1, 2, 3, 4, 1, 1, 2, 4, 4} {
			args = append(args, a, period, 10, iv)
		}
		v, err := script.Inspect.Run(ctx, b.Client, []string{hold, why, gk, sk, ck, fk, none, fullGK, fullSK, bookedFK, partFK}, args...).Slice()
		if err != nil {
			t.Fatal(err)
		}
		if len(v) != 3+3*9 {
			t.Fatalf("reply %v", v)
		}
		at := v[0].(int64)
		if at < now || at > now+5_000_000 {
			t.Fatalf("now %d, Redis said %d a moment ago", at, now)
		}
		if v[1] != now+60_000_000 || v[2] != "maintenance" {
			t.Fatalf("hold %v reason %v", v[1], v[2])
		}
		// Per limit i: remaining v[3+3i], reset v[4+3i], free v[5+3i].
		rem := []int64{v[3].(int64), v[6].(int64), v[9].(int64), v[12].(int64), v[15].(int64)}
		// GCRA 10 - 3 owed (none refilled yet, within a unit's 6 minutes);
		// sliding 10 - (2+3); fixed 10 - 4; empty GCRA full. The counter
		// weighs last window's 2 by the share of it still covered: 0 to 2.
		if rem[0] != 7 || rem[1] != 5 || rem[3] != 6 || rem[4] != 10 || rem[2] < 8 || rem[2] > 10 {
			t.Fatalf("remaining %v", rem)
		}
		if reset := v[4].(int64); reset <= 2*iv || reset > 3*iv {
			t.Fatalf("gcra reset %d", reset)
		}
		if reset := v[7].(int64); reset != now-500+period-at {
			t.Fatalf("sliding reset %d, want the newest entry's age out", reset)
		}
		if reset := v[13].(int64); reset != (w+1)*period-at {
			t.Fatalf("fixed reset %d, want the window's end", reset)
		}
		if v[16] != int64(0) {
			t.Fatalf("empty limit reset %v", v[16])
		}
		for i := range 5 {
			if v[5+3*i] != int64(0) {
				t.Fatalf("limit %d has room, free in %v", i, v[5+3*i])
			}
		}
		// Full limits: one unit is free when GCRA's booked units are paid
		// (12 owed of 10: 3 units' time), the log's oldest counted entry ages
		// out, and a fixed window's next window has room: a window later
		// when that one is booked full too (reset says the same there), at
		// its start when it is not (reset: its end, a window later).
		for i, want := range map[int]int64{5: now + 3*iv - at, 6: now - 1000 + period - at, 7: (w+2)*period - at, 8: (w+1)*period - at} {
			if v[3+3*i] != int64(0) || v[5+3*i] != want {
				t.Errorf("full limit %d: remaining %v, free in %v, want %d", i, v[3+3*i], v[5+3*i], want)
			}
		}
		if v[4+3*8] != (w+2)*period-at {
			t.Errorf("partly booked window's reset %v, want the booked window's end", v[4+3*8])
		}
		if after := ours(); after != before {
			t.Fatalf("inspect.lua changed the key count: %d → %d", before, after)
		}
		if n, _ := b.Client.ZCard(ctx, sk).Result(); n != 3 {
			t.Fatalf("inspect.lua trimmed the sliding log: %d entries", n)
		}
	})
}
