package limiter

import "time"

// Result is the outcome of a decision: of Allow, or of a reservation
// (Reservation.Result).
type Result struct {
	// Allowed reports whether every charged limit took its cost (all or nothing).
	Allowed bool
	// Remaining is the fewest units left in any charged limit now (never
	// negative); 0 when nothing was charged.
	Remaining int
	// RetryAfter is how long until the whole cost would fit: the longest wait
	// of any limit; 0 when allowed (a reservation's wait is its Delay).
	RetryAfter time.Duration
	// ResetAfter is how long until every charged limit is back to full.
	ResetAfter time.Duration
	// DeniedBy names the limit that must wait longest when denied ("" for a
	// Key's limit), or is HoldName when a hold (a 429 or 418 seen by any
	// process) denied.
	DeniedBy string
	// DeniedQuota is the name of the quota DeniedBy belongs to (or whose hold
	// denied); a Key's quota is named by its key.
	DeniedQuota string
	// Limits holds each charged limit's state, in quota order, charge by
	// charge (for charges across Groups, those of the groups after a refused
	// one are missing).
	Limits []LimitResult
	// Degraded reports a decision made without Redis, under the failure policy.
	Degraded bool
}

// HoldName is Result.DeniedBy when a hold denied the call.
const HoldName = "(hold)"

// LimitResult is the state of one limit after a decision.
type LimitResult struct {
	// Name is the limit's name ("" for a Key's limit).
	Name string
	// Quota is the name (Quota.Name, never For's key) of the quota the limit
	// belongs to.
	Quota string
	// Limit is the limit the decision was made against.
	Limit Limit
	// Allowed reports whether the decision took the units (Inspect: whether
	// one unit would fit now, holds aside).
	Allowed bool
	// Remaining is how many units the limit still holds now (never negative).
	Remaining int
	// RetryAfter is, for the limit that denied a call, how long until its
	// units would fit; 0 for the others.
	RetryAfter time.Duration
	// ResetAfter is how long until the limit is back to full.
	ResetAfter time.Duration
	// WindowEnd is, for FixedWindow and SlidingWindowCounter limits, the end
	// of the clock-aligned window the charge counts in (a granted Reserve: the
	// booking's window; otherwise the window of the decision), on Redis's
	// clock. Zero for GCRA and SlidingWindow, and for decisions made without
	// Redis.
	WindowEnd time.Time
}
