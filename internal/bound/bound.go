// Package bound holds the limiter's bounds on its inputs, so that the packages
// that check input before it reaches the limiter (presets, middleware, the
// command) use the same numbers. Every time and count within them fits the
// scripts' arithmetic (Lua numbers are doubles: integers are exact below 2^53).
package bound

import (
	"time"

	"github.com/redquota/redquota/internal/keys"
)

const (
	// Period is the longest Limit.Period: 366 days.
	Period = 366 * 24 * time.Hour
	// Rate is the largest Limit.Rate and Limit.Burst.
	Rate = 1_000_000_000
	// Hold is the longest hold Limiter.Hold accepts: a week, longer than any
	// exchange ban.
	Hold = 7 * 24 * time.Hour
	// BanHold is the hold a 418 (an IP ban) without a usable Retry-After
	// calls for, in middleware and wsguard alike: Binance's shortest IP ban.
	BanHold = 2 * time.Minute
	// KeyLen is the longest key, quota name or limit name, in bytes.
	KeyLen = keys.MaxPartLen
	// QuotaLimits is the most limits a Quota may have, and the most one call
	// may charge.
	QuotaLimits = 16
)

// Most is the most units one call can ever take from a limit of rate and
// burst: burst (or rate when burst is 0) for GCRA, rate for the window
// algorithms.
func Most(rate, burst int, gcra bool) int {
	if gcra && burst > 0 {
		return burst
	}
	return rate
}
