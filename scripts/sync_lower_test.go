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

// sync_lower.lua called directly after decide.lua's bookings on a fixed
// window of 100 (366 days long: the test runs inside one window): a count in
// the answer to the first booking lowers the count to it plus the second,
// still pending; the answer record keeps the acks (64 at most) and lives as
// long as the window; bad arguments and an unreadable record are errors that
// write nothing; a booking of another window changes nothing.
func TestSyncLower(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		const p = int64(366 * 24 * time.Hour / time.Microsecond)
		head := b.Prefix + ":{l}"
		state, acks := head+":fixed:o", head+":fixed:o:acks"
		now := time.Now()
		if b.Mini != nil {
			b.Mini.SetTime(now)
		}
		w := now.UnixMicro() / p
		book := func() (t0, id int64) {
			t.Helper()
			v, err := script.Decide.Run(ctx, b.Client, []string{head + ":tok", head + ":hold", state}, "0", "1", 0,
				4, p, 100, p/100, 1, 0, 1_000_000).Slice()
			if err != nil {
				t.Fatal(err)
			}
			if len(v) != 13 || v[0] != int64(1) {
				t.Fatalf("booking reply %v", v)
			}
			return v[3].(int64), v[7].(int64)
		}
		lower := func(used int, at, id int64) (int64, error) {
			return script.SyncLower.Run(ctx, b.Client, []string{state, acks}, p, 100, used, at, id, 1).Int64()
		}
		count := func() string {
			v, _ := b.Client.Get(ctx, state).Result()
			return strings.Fields(v + " - - - -")[3]
		}
		ta, ida := book()
		_, idb := book()
		for _, args := range [][]any{{-1, ta, ida, 1}, {0, ta, 0, 1}, {0, ta, ida, 0}, {0, 0, ida, 1}, {"x", ta, ida, 1}} {
			if err := script.SyncLower.Run(ctx, b.Client, []string{state, acks}, append([]any{p, 100}, args...)...).Err(); err == nil || !strings.Contains(err.Error(), "bad arguments") {
				t.Fatalf("%v: %v", args, err)
			}
		}
		if n, _ := b.Client.Exists(ctx, acks).Result(); n != 0 || count() != "2" {
			t.Fatalf("bad arguments wrote: record %d, count %s", n, count())
		}
		if v, err := lower(0, ta-p, ida); err != nil || v != 0 || count() != "2" {
			t.Fatalf("a booking of another window: %d %v, count %s", v, err, count())
		}
		if v, err := lower(0, ta, ida); err != nil || v != 2 || count() != "1" {
			t.Fatalf("lower: %d %v, count %s (want 2, 1: B's unit kept)", v, err, count())
		}
		rec, _ := b.Client.Get(ctx, acks).Result()
		f := strings.Fields(rec)
		if len(f) != 6 || f[0] != fmt.Sprint(w) || f[1] != "-1" || f[2] != "1" || f[5] != fmt.Sprint(ida) {
			t.Fatalf("record %q, want window %d, adj -1, K 1, A's ack", rec, w)
		}
		if ttl, _ := b.Client.PTTL(ctx, acks).Result(); ttl <= 0 || ttl > time.Duration(p)*time.Microsecond {
			t.Fatalf("record TTL %v", ttl)
		}
		// The server counts 5 in its answer to B: the count rises to 5 (as
		// sync.lua's), not to 5 + A's unit kept as pending.
		if v, err := lower(5, ta, idb); err != nil || v != 1 || count() != "5" {
			t.Fatalf("raise: %d %v, count %s (want 1, 5)", v, err, count())
		}
		// Acks of bookings the state does not hold (ids made up, later than
		// every write): kept, 64 at most, and the count no longer lowers (the
		// record says more was acked than booked).
		for i := range 70 {
			if _, err := lower(0, ta, idb+1_000_000_000_000+int64(i)); err != nil {
				t.Fatal(err)
			}
		}
		rec, _ = b.Client.Get(ctx, acks).Result()
		if n := len(strings.Fields(rec)); n != 3+3*64 || count() != "5" {
			t.Fatalf("record of %d fields (want %d), count %s (want 5)", n, 3+3*64, count())
		}
		if err := b.Client.Set(ctx, acks, "1 2", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := lower(0, ta, ida); err == nil || !strings.Contains(err.Error(), "unreadable record") || count() != "5" {
			t.Fatalf("unreadable record: %v, count %s", err, count())
		}
	})
}
