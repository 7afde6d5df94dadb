package limiter

import (
	"fmt"
	"time"

	"github.com/redquota/redquota/internal/keys"
)

// Quota is a named set of limits checked and charged together, all or nothing,
// in one script call: for example Binance spot's 6000 weight per minute AND
// 100 orders per 10 s AND 200 000 orders per day. All of a quota's keys share one
// hash tag (its name), so one quota lives in one Redis Cluster slot.
type Quota struct {
	// Name identifies the quota in Redis and in telemetry.
	Name string
	// Limits are the quota's limits; their names must be distinct.
	Limits []NamedLimit
	// Label is the quota's name in telemetry (the redquota.quota attribute).
	// Default Name. Set it when Name carries a per-user part (an API key, an
	// account, an address) that must not reach traces: "api" for "api:<key>".
	Label string
}

// NamedLimit is one limit of a quota.
type NamedLimit struct {
	Name  string
	Limit Limit
}

// Cost says how many units of each named limit one call takes, e.g.
// Cost{"weight": 5, "orders": 1}. Limits a cost does not name (or names with 0)
// are neither checked nor charged by that call.
type Cost map[string]int

// NewQuota returns a quota of the given limits, validated.
func NewQuota(name string, limits ...NamedLimit) (Quota, error) {
	q := Quota{Name: name, Limits: limits}
	return q, q.Validate()
}

// Validate reports why q is unusable: an empty or too long name, no limits, a
// duplicate or invalid limit.
func (q Quota) Validate() error {
	if err := keys.Check(q.Name); err != nil {
		return fmt.Errorf("limiter: quota name: %w", err)
	}
	if len(q.Limits) == 0 {
		return fmt.Errorf("%w: %q", ErrEmptyQuota, q.Name)
	}
	if len(q.Limits) > MaxQuotaLimits {
		return fmt.Errorf("%w: quota %q has %d limits, at most %d", ErrInvalidLimit, q.Name, len(q.Limits), MaxQuotaLimits)
	}
	for i, nl := range q.Limits {
		if err := keys.Check(nl.Name); err != nil {
			return fmt.Errorf("limiter: quota %q limit %d name: %w", q.Name, i, err)
		}
		for _, other := range q.Limits[:i] {
			if other.Name == nl.Name {
				return fmt.Errorf("%w: %q in quota %q", ErrDuplicateLimit, nl.Name, q.Name)
			}
		}
		if err := nl.Limit.Validate(); err != nil {
			return fmt.Errorf("quota %q limit %q: %w", q.Name, nl.Name, err)
		}
	}
	return nil
}

// Find returns the limit named name.
func (q Quota) Find(name string) (Limit, bool) {
	for _, nl := range q.Limits {
		if nl.Name == name {
			return nl.Limit, true
		}
	}
	return Limit{}, false
}

// LimitResult is the state of one limit of a quota after a decision.
type LimitResult struct {
	Name string
	Result
}

// QuotaResult is the outcome of a quota decision.
type QuotaResult struct {
	// Allowed reports whether every limit took its cost (all or nothing).
	Allowed bool
	// DeniedBy names the limit that must wait longest when denied, or is
	// HoldName when a hold (a 429 or 418 seen by any process) denied.
	DeniedBy string
	// RetryAfter is how long until the whole cost would fit: the longest wait of
	// any limit (0 when allowed).
	RetryAfter time.Duration
	// ResetAfter is how long until every charged limit is back to full.
	ResetAfter time.Duration
	// Limits holds each charged limit's state, in quota order.
	Limits []LimitResult
	// Degraded reports a decision made without Redis, under the failure policy.
	Degraded bool
}

// HoldName is QuotaResult.DeniedBy when a hold denied the call.
const HoldName = "(hold)"

// Remaining is the fewest units left in any charged limit.
func (r QuotaResult) Remaining() int {
	if len(r.Limits) == 0 {
		return 0
	}
	m := r.Limits[0].Remaining
	for _, l := range r.Limits[1:] {
		m = min(m, l.Remaining)
	}
	return m
}
