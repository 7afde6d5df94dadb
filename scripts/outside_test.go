package scripts_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redquota/redquota/internal/redistest"
	"github.com/redquota/redquota/internal/script"
)

// decide.lua and sync.lua called directly on a fixed-window limit of 100
// with an outside record (outside.lua): the decision keeps the record's
// unseen reserve free; a sync learns what the server counted beyond the
// fleet's grants and raises the count by it. The window is 366 days long, so
// the test runs inside one window (the period is Redis's maximum here; one
// boundary a year).
func TestOutsideRecord(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		const p = int64(366 * 24 * time.Hour / time.Microsecond)
		head := b.Prefix + ":{o}"
		state, outside := head+":fixed:w", head+":fixed:w:outside"
		keys := []string{head + ":tok", head + ":hold", state, outside}
		now := time.Now()
		if b.Mini != nil {
			b.Mini.SetTime(now) // miniredis's TIME, which its scripts read
		}
		w := now.UnixMicro() / p
		// 40 kept for others in this window, none seen yet; bound 50.
		if err := b.Client.Set(ctx, outside, fmt.Sprintf("%d 40 0 0 0 50 0", w), time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		decide := func(cost int) int64 {
			t.Helper()
			v, err := script.Decide.Run(ctx, b.Client, keys, "0", "1 1", 0, 4, p, 100, p/100, cost, 0, 0).Slice()
			if err != nil {
				t.Fatal(err)
			}
			g, ok := v[0].(int64)
			if !ok {
				t.Fatalf("reply %v", v)
			}
			return g
		}
		sync := func(used int) int64 {
			t.Helper()
			v, err := script.Sync.Run(ctx, b.Client, keys[2:], 4, p, 100, p/100, used, 0, 50).Int64()
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		if decide(60) != 1 || decide(1) != 0 {
			t.Fatal("want 60 granted, then nothing: 40 are kept for others")
		}
		// The server counted 90: 30 beyond our 60 were others'.
		if sync(90) != 1 {
			t.Fatal("sync of 90 over 60 did not raise the count")
		}
		if v, _ := b.Client.Get(ctx, outside).Result(); v != fmt.Sprintf("%d 40 30 30 0 50 0", w) {
			t.Fatalf("record %q, want seen 30 and raised 30", v)
		}
		if decide(1) != 0 {
			t.Fatal("granted with 10 of the reserve still unseen")
		}
		sync(100)
		if v, _ := b.Client.Get(ctx, outside).Result(); !strings.HasPrefix(v, fmt.Sprintf("%d 40 40 40 ", w)) {
			t.Fatalf("record %q, want seen 40", v)
		}
		if ttl, _ := b.Client.PTTL(ctx, outside).Result(); ttl <= 0 {
			t.Fatalf("record TTL %v", ttl)
		}
		// A limit that is not a fixed window keeps no headroom.
		err := script.Decide.Run(ctx, b.Client, keys, "0", "1 1", 0, 1, 1_000_000, 10, 100_000, 1, 0, 0).Err()
		if err == nil || !strings.Contains(err.Error(), "no fixed window") {
			t.Fatalf("GCRA limit with an outside record: %v", err)
		}
	})
}
