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

// cancel.lua restores each limit's state from before the booking, from the
// prior states decide.lua replied (with a new stamp): a window state goes back to its own window
// (not a lower count in the booking's window), and a GCRA limit whose grant
// time another limit set goes back to having no state (not to that time).
func TestCancelRestoresPriorState(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		head := b.Prefix + ":{c}"
		hold, tok, gk, fk := head+":hold", head+":tok", head+":gcra:a", head+":fixed:b"
		tm, err := b.Client.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		// b is full in a window two hours ahead of Redis's clock (as a chain of
		// bookings leaves it), so the booking below falls in the window after
		// that one whatever the time of day.
		const period, maxB = int64(time.Hour / time.Microsecond), 5
		w := tm.UnixMicro()/period + 2
		prior := fmt.Sprintf("%d %d 0 %d", w*period+7, period, maxB)
		if err := b.Client.Set(ctx, fk, prior+" 5 4", 3*time.Hour).Err(); err != nil { // stamp 5, floor 4
			t.Fatal(err)
		}
		keys := []string{tok, hold, gk, fk}
		v, err := script.Decide.Run(ctx, b.Client, keys, "0", 1, 0,
			1, 1_000_000, 10, 100_000, 1, 0, // a: GCRA 10/s
			4, period, maxB, period/maxB, 1, 0, // b: fixed window 5/h
			int64(1)<<50).Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		want := []int64{w*period + 7, period, 0, maxB}
		if len(v) != 5+8*2 || v[0] != 1 || v[3] != (w+1)*period || fmt.Sprint(v[17:21]) != fmt.Sprint(want) || v[9] != 0 || v[7] < 1 || v[15] < 1 {
			t.Fatalf("decide.lua reply %v: want a grant at %d with booking ids, prior states [0 0 0 0] and %v", v, (w+1)*period, want)
		}
		args := []any{v[3], "0", "0"}
		args = append(args, 1, 1_000_000, 100_000, 1, v[7], v[8], v[9], v[10], v[11], v[12])
		args = append(args, 4, period, period/maxB, 1, v[15], v[16], v[17], v[18], v[19], v[20])
		given, err := script.Cancel.Run(ctx, b.Client, []string{tok, gk, fk}, args...).Int64()
		if err != nil || given != 2 {
			t.Fatalf("cancel.lua gave back %d units (%v), want 2: one per limit", given, err)
		}
		got, _ := b.Client.Get(ctx, fk).Result()
		if f := strings.Fields(got); len(f) != 6 || strings.Join(f[:4], " ") != prior || f[5] != "4" {
			t.Fatalf("window state %q after cancel, want %q, a new stamp and floor 4", got, prior)
		}
		if ttl, _ := b.Client.PTTL(ctx, fk).Result(); ttl <= 2*time.Hour || ttl > 3*time.Hour+time.Second {
			t.Fatalf("window state TTL %v, want the end of its window (2 to 3 h)", ttl)
		}
		if n, _ := b.Client.Exists(ctx, gk).Result(); n != 0 {
			t.Fatal("GCRA state left after cancel: it had none before the booking")
		}
		// A second cancel finds its booking no longer the last: nothing more.
		if given, err := script.Cancel.Run(ctx, b.Client, []string{tok, gk, fk}, args...).Int64(); err != nil || given != 0 {
			t.Fatalf("second cancel gave back %d (%v)", given, err)
		}
	})
}

// A cancel.lua call run twice under one token (go-redis resending it after a
// lost reply) replays its first reply and writes nothing: run again, it would
// find the state a later booking wrote like its own and give that one back.
func TestCancelRetryReplays(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		head := b.Prefix + ":{cr}"
		hold, tok, fk, ctok := head+":hold", head+":tok", head+":fixed:a", head+":tok:cancel-1"
		// A fixed window of 2 per 2^40 µs (12.7 days): A and B share a window.
		const period = int64(1) << 40
		book := func() []int64 {
			t.Helper()
			v, err := script.Decide.Run(ctx, b.Client, []string{tok, hold, fk}, "0", 1, 0,
				4, period, 2, period/2, 1, 0, int64(1)<<50).Int64Slice()
			if err != nil || len(v) != 13 || v[0] != 1 {
				t.Fatalf("decide.lua reply %v (%v): want a grant with booking values", v, err)
			}
			return v
		}
		a := book()
		// Forced ("1"): A's time has come, its unit was never used.
		args := []any{a[3], "1", "10000", 4, period, period / 2, 1, a[7], a[8], a[9], a[10], a[11], a[12]}
		cancel := func() int64 {
			t.Helper()
			n, err := script.Cancel.Run(ctx, b.Client, []string{ctok, fk}, args...).Int64()
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := cancel(); n != 1 {
			t.Fatalf("cancel gave back %d, want 1", n)
		}
		book() // B: the window's count is 1 again, as A left it
		stateB, err := b.Client.Get(ctx, fk).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n := cancel(); n != 1 {
			t.Fatalf("retried cancel replied %d, want A's reply 1 replayed", n)
		}
		if got, _ := b.Client.Get(ctx, fk).Result(); got != stateB {
			t.Fatalf("retried cancel changed the state %q to %q: it gave B's unit back", stateB, got)
		}
		if ttl, _ := b.Client.PTTL(ctx, ctok).Result(); ttl <= 0 || ttl > 10*time.Second {
			t.Fatalf("token key TTL %v, want (0, 10s]", ttl)
		}
	})
}

// A wake-up that wake.lua refuses has given its booking back; retried under
// its token it replays the refusal instead of giving back a later booking.
func TestWakeRefusalRetryReplays(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		head := b.Prefix + ":{wr}"
		hold, tok, fk, wtok := head+":hold", head+":tok", head+":fixed:a", head+":tok:wake-1"
		const period = int64(1) << 40 // 12.7 days: every booking below shares a window
		limit := []any{4, period, 2, period / 2, 1, 0}
		book := func() []int64 {
			t.Helper()
			args := append(append([]any{"0", 1, 0}, limit...), int64(1)<<50)
			v, err := script.Decide.Run(ctx, b.Client, []string{tok, hold, fk}, args...).Int64Slice()
			if err != nil || len(v) != 13 || v[0] != 1 {
				t.Fatalf("decide.lua reply %v (%v): want a grant with booking values", v, err)
			}
			return v
		}
		a := book()
		tm, err := b.Client.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		// A hold placed after A was booked, ending an hour from now.
		if err := b.Client.Set(ctx, hold, tm.UnixMicro()+int64(time.Hour/time.Microsecond), 2*time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		// A's wake-up may wait 1 ms: refused, A given back.
		wargs := append([]any{"10000", 1, 0}, limit...)
		wargs = append(wargs, 1000, a[3], a[7], a[8], a[9], a[10], a[11], a[12])
		wake := func() []int64 {
			t.Helper()
			v, err := script.Wake.Run(ctx, b.Client, []string{wtok, hold, fk}, wargs...).Int64Slice()
			if err != nil || len(v) != 7 || v[0] != 0 { // a refusal books nothing: the short form
				t.Fatalf("wake-up reply %v (%v): want a refusal", v, err)
			}
			return v
		}
		first := wake()
		book() // B, after the hold: the window's count is 1, as A left it
		stateB, err := b.Client.Get(ctx, fk).Result()
		if err != nil {
			t.Fatal(err)
		}
		if again := wake(); fmt.Sprint(again) != fmt.Sprint(first) {
			t.Fatalf("retried wake-up replied %v, want %v replayed", again, first)
		}
		if got, _ := b.Client.Get(ctx, fk).Result(); got != stateB {
			t.Fatalf("retried wake-up changed the state %q to %q: it gave B's unit back", stateB, got)
		}
	})
}
