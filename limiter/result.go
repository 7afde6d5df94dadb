package limiter

import "time"

// Result is the outcome of a decision on one limit.
type Result struct {
	// Limit is the limit the decision was made against.
	Limit Limit
	// Allowed reports whether the units were taken.
	Allowed bool
	// Remaining is how many units the limit still holds now (never negative).
	Remaining int
	// RetryAfter is how long until the units asked for would fit; 0 when allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the limit is back to full.
	ResetAfter time.Duration
	// Degraded reports a decision made without Redis, under the failure policy.
	Degraded bool
}
