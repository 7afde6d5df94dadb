package middleware

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// parseRetryAfter reads a Retry-After value (RFC 9110 §10.2.3): either
// delay-seconds, a non-negative decimal integer, or an HTTP-date. A date is
// measured from date, the response's Date header, when that is a valid HTTP
// date (so that the server's clock and ours need not agree), else from now; a
// date already past gives 0. Seconds too large to represent give the largest
// Duration. Anything else (a negative or fractional number, garbage) is an
// error wrapping ErrBadHeader.
func parseRetryAfter(value, date string, now time.Time) (time.Duration, error) {
	v := strings.TrimSpace(value)
	if v == "" {
		return 0, fmt.Errorf("%w: empty Retry-After", ErrBadHeader)
	}
	if allDigits(v) {
		return secondsDuration(v), nil
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, fmt.Errorf("%w: Retry-After %q is neither seconds nor an HTTP date", ErrBadHeader, truncate(value))
	}
	base := now
	if d, err := http.ParseTime(strings.TrimSpace(date)); err == nil {
		base = d
	}
	return max(t.Sub(base), 0), nil
}

func allDigits(s string) bool {
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

// secondsDuration turns a string of digits into seconds, saturating.
func secondsDuration(s string) time.Duration {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return seconds(int64(n))
}

// seconds is n (≥ 0) seconds, saturating at the longest Duration.
func seconds(n int64) time.Duration {
	if n > math.MaxInt64/int64(time.Second) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(n) * time.Second
}

// parseCount reads a non-negative decimal count, saturating at math.MaxInt.
func parseCount(name, v string) (int, error) {
	s := strings.TrimSpace(v)
	if !allDigits(s) {
		return 0, fmt.Errorf("%w: %s: %q is not a non-negative integer", ErrBadHeader, name, truncate(v))
	}
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil || n > math.MaxInt {
		return math.MaxInt, nil
	}
	return int(n), nil
}

// truncate keeps error messages short when a header is absurdly long.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
