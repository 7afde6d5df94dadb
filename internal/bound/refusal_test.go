package bound

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 15, 12, 0, 30, 0, time.UTC)

func TestRetryAfter(t *testing.T) {
	date := t0.Format(http.TimeFormat)
	for _, tc := range []struct {
		v, date string
		want    time.Duration
		bad     bool
	}{
		{v: "120", want: 2 * time.Minute},
		{v: " 7 ", want: 7 * time.Second},
		{v: "0", want: 0},
		{v: "99999999999999999999", want: time.Duration(1<<63 - 1)},
		{v: "9223372037", want: time.Duration(1<<63 - 1)}, // one second past the longest Duration
		{v: t0.Add(time.Hour).Format(http.TimeFormat), date: date, want: time.Hour},
		{v: t0.Add(time.Hour).Format(time.RFC850), date: date, want: time.Hour},
		{v: t0.Add(-time.Hour).Format(http.TimeFormat), date: date, want: 0},
		{v: t0.Add(30 * time.Second).Format(http.TimeFormat), date: "garbage", want: 30 * time.Second}, // a bad Date: measured from now
		{v: "-1", bad: true},
		{v: "+5", bad: true},
		{v: "1.5", bad: true},
		{v: "", bad: true},
		{v: "Tomorrow", bad: true},
		{v: strings.Repeat("9", 10) + "x", bad: true},
	} {
		got, err := RetryAfter(tc.v, tc.date, t0)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: %v, want an error", tc.v, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q (Date %q) = %v, %v; want %v", tc.v, tc.date, got, err, tc.want)
		}
	}
}

// The rule itself, with a fallback and a ban unlike the defaults so that
// each row shows which of the two it took.
func TestRefusalHold(t *testing.T) {
	const fallback, ban = 3 * time.Second, 7 * time.Minute
	past := t0.Add(-time.Minute).Format(http.TimeFormat)
	date := t0.Format(http.TimeFormat)
	for _, tc := range []struct {
		status           int
		retryAfter, date string
		want             time.Duration
		bad              bool
	}{
		{status: 429, retryAfter: "5", want: 5 * time.Second},
		{status: 429, retryAfter: "0", want: fallback},
		{status: 429, retryAfter: past, date: date, want: fallback},
		{status: 429, want: fallback},
		{status: 429, retryAfter: "-5", want: fallback, bad: true},
		{status: 418, retryAfter: "600", want: 10 * time.Minute},
		{status: 418, retryAfter: "0", want: fallback},
		{status: 418, retryAfter: past, date: date, want: fallback},
		{status: 418, want: ban},
		{status: 418, retryAfter: "1.5", want: ban, bad: true},
		{status: 503, retryAfter: "4", want: 4 * time.Second},
		{status: 503, retryAfter: "0"},
		{status: 503, retryAfter: past, date: date},
		{status: 503},
		{status: 503, retryAfter: "x", want: fallback, bad: true},
		{status: 200, retryAfter: "5"},
		{status: 403, retryAfter: "5"},
	} {
		got, err := RefusalHold(tc.status, tc.retryAfter, tc.date, t0, fallback, ban)
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("%d Retry-After %q: %v, %v; want %v (error: %v)", tc.status, tc.retryAfter, got, err, tc.want, tc.bad)
		}
	}
}

// Retry-After parsing never panics and never yields a negative wait.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"2", "-1", "0", "1.5", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "", " 7 ", "NaN", "1e9"} {
		f.Add(s, "Wed, 21 Oct 2015 07:27:00 GMT")
	}
	f.Fuzz(func(t *testing.T, value, date string) {
		d, err := RetryAfter(value, date, t0)
		if err == nil && d < 0 {
			t.Fatalf("RetryAfter(%q, %q) = %v", value, date, d)
		}
		if h, _ := RefusalHold(429, value, date, t0, time.Second, time.Minute); h <= 0 {
			t.Fatalf("a 429 with Retry-After %q holds %v", value, h)
		}
	})
}
