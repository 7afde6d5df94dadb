// Package holdtest reads a hold's remaining time for tests outside the
// limiter package (Limiter.Held was folded into Inspect by issue 18).
package holdtest

import (
	"context"
	"net/http"
	"time"

	"github.com/redquota/redquota/limiter"
)

// Left is how long the hold on the instance key ("" for none) of quota name
// lasts, as Inspect reads it; 0 when there is none.
func Left(ctx context.Context, lim *limiter.Limiter, name, key string) (time.Duration, error) {
	sts, err := lim.Inspect(ctx, name)
	if err != nil {
		return 0, err
	}
	for _, st := range sts {
		if st.Key == key {
			return st.Hold, nil
		}
	}
	return 0, nil
}

// Refusal is an answer refusing a request, and the hold it calls for by
// bound.RefusalHold's rule with FallbackHold 1 s and BanHold 2 minutes (the
// defaults of middleware and wsguard), so that both packages test one table.
type Refusal struct {
	Status           int
	RetryAfter, Date string // Date: the answer's, when not ""
	Hold             time.Duration
	Unreadable       bool // Retry-After is neither seconds nor a date
}

// Refusals are the 429 and 418 answers both middleware's Transport and
// wsguard's handshake must hold alike.
func Refusals() []Refusal {
	at := time.Date(2025, 1, 15, 12, 0, 30, 0, time.UTC)
	date := at.Format(http.TimeFormat)
	past := at.Add(-time.Minute).Format(http.TimeFormat)
	return []Refusal{
		{Status: 429, RetryAfter: "2", Hold: 2 * time.Second},
		{Status: 429, RetryAfter: "0", Hold: time.Second},
		{Status: 429, RetryAfter: " 0 ", Hold: time.Second},
		{Status: 429, RetryAfter: past, Date: date, Hold: time.Second},
		{Status: 429, RetryAfter: at.Add(90 * time.Second).Format(http.TimeFormat), Date: date, Hold: 90 * time.Second},
		{Status: 429, Hold: time.Second},
		{Status: 429, RetryAfter: "soon", Hold: time.Second, Unreadable: true},
		{Status: 418, RetryAfter: "600", Hold: 10 * time.Minute},
		{Status: 418, RetryAfter: "0", Hold: time.Second},
		{Status: 418, RetryAfter: past, Date: date, Hold: time.Second},
		{Status: 418, Hold: 2 * time.Minute},
		{Status: 418, RetryAfter: "a while", Hold: 2 * time.Minute, Unreadable: true},
	}
}
