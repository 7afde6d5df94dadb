package middleware

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

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
