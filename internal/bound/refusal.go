package bound

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RetryAfter reads a Retry-After value (RFC 9110 §10.2.3): delay-seconds, a
// non-negative decimal integer, or an HTTP date. A date is measured from
// date, the answer's Date, when that is a valid HTTP date (the server's clock
// and ours need not agree), else from now; a date already past reads 0.
// Seconds too many for a Duration read as the longest one. An empty value, a
// negative or fractional number or anything else is an error.
func RetryAfter(value, date string, now time.Time) (time.Duration, error) {
	v := strings.TrimSpace(value)
	if digits(v) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > math.MaxInt64/uint64(time.Second) {
			return time.Duration(math.MaxInt64), nil
		}
		return time.Duration(n) * time.Second, nil
	}
	t, err := http.ParseTime(v)
	if err != nil {
		if len(v) > 64 {
			v = v[:64] + "…"
		}
		return 0, fmt.Errorf("Retry-After %q is neither seconds nor an HTTP date", v)
	}
	if d, err := http.ParseTime(strings.TrimSpace(date)); err == nil {
		now = d
	}
	return max(t.Sub(now), 0), nil
}

// RefusalHold is the one rule, for middleware and wsguard alike, of how long
// an answer with status and Retry-After retryAfter (Date date, read at now)
// holds the quotas its request charged:
//
//	429:   Retry-After; fallback when it is missing, unreadable, 0 or a date past
//	418:   Retry-After; fallback when it is 0 or a date past; ban when it is
//	       missing or unreadable
//	503:   Retry-After; fallback when it is unreadable; nothing when it is
//	       missing, 0 or a date past
//	other: nothing
//
// A 429 or 418 always holds: Retry-After counts whole seconds (RFC 9110
// §10.2.3), so a 0 says the wait is under a second, not that there is none,
// and the refusal itself says to back off (Binance: "When a 429 is received,
// it's your obligation as an API to back off"; failing to is what earns a
// 418 ban). A 503 is not a refusal of rate: its 0 means "now". err, when not
// nil, says Retry-After could not be read (the hold is then the fallback's).
// The caller caps the hold (MaxHold).
func RefusalHold(status int, retryAfter, date string, now time.Time, fallback, ban time.Duration) (time.Duration, error) {
	var missing, zero time.Duration // holds when Retry-After is missing, and when it reads 0
	switch status {
	case http.StatusTooManyRequests:
		missing, zero = fallback, fallback
	case http.StatusTeapot:
		missing, zero = ban, fallback
	case http.StatusServiceUnavailable:
	default:
		return 0, nil
	}
	if strings.TrimSpace(retryAfter) == "" {
		return missing, nil
	}
	d, err := RetryAfter(retryAfter, date, now)
	switch {
	case err != nil && status == http.StatusServiceUnavailable:
		return fallback, err
	case err != nil:
		return missing, err
	case d == 0:
		return zero, nil
	}
	return d, nil
}

// digits reports whether s is a non-empty run of ASCII digits.
func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
