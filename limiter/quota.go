package limiter

import (
	"fmt"
	"time"

	"github.com/redquota/redquota/internal/keys"
)

// Quota is a named set of limits checked and charged together, all or nothing,
// in one script call: for example Binance spot's 6000 weight per minute AND
// 100 orders per 10 s AND 200 000 orders per day.
//
// A Quota is a template: q.For(key) is its instance for one key (a user, an
// API key, an account, a trading pair), with state of its own. A Quota used
// without For is its own single instance.
type Quota struct {
	// Name identifies the quota in Redis and in telemetry.
	Name string
	// Limits are the quota's limits; their names must be distinct. A quota with
	// no limits can only be held (Limiter.Hold, Held).
	Limits []NamedLimit
	// Label is the quota's name in telemetry (the redquota.quota attribute).
	// Default Name. The key given to For never reaches telemetry.
	Label string
	// Group is the Redis Cluster hash tag the quota's keys share. Quotas with
	// the same Group live in one slot, so AllowAll, ReserveAll and WaitAll charge
	// them atomically, in one script call. Give one Group to the quotas that one
	// request charges together: e.g. Group "binance-ip1" for the IP's weight
	// quota and for every account quota behind that IP. A Group puts all its
	// quotas' keys, for every key of For, on one Redis node: keep it to what
	// must be charged together. Default "": the quota instance is its own
	// group (its name and For's key), so different keys spread over a cluster.
	Group string
	// Guard keeps grants on FixedWindow limits away from their windows' ends:
	// a grant that would fall within Guard of the end of its window is booked
	// at the next window's start instead, decided by the script on Redis's
	// clock. Set it to how long a request may take to reach the server, so
	// that a request charged to one window is not counted in the next.
	// It must be shorter than every FixedWindow limit's Period; other
	// algorithms ignore it. Default 0.
	Guard time.Duration
	// Headroom is the most of each FixedWindow limit's Rate, as a share (at
	// most 0.9: the fleet keeps at least a tenth of each window), kept free for units the server counts that no
	// process of the fleet granted: a client outside the fleet on the same
	// IP. The limiter learns it from the counts synced into the limit
	// (Limiter.Sync, Reservation.Sync): what the server counted beyond the
	// fleet's own grants in a window is what others spent there. Each window
	// then keeps free the most others spent in the window before (until that
	// much is seen spent: seen units are in the count already), up to
	// Headroom; when others spend less than half of it for more than two
	// windows in a row, it halves each window. Only limits whose usage is
	// synced learn anything. Default 0: no headroom.
	Headroom float64

	key   string // For's key
	keyed bool   // For was called
}

// For returns the instance of template q for key: the same limits, counted
// for key alone. Names and keys are escaped apart in Redis, so no (Name, key)
// can meet another quota's or another key's state. An empty key is
// ErrEmptyKey and a key longer than MaxKeyLen is ErrKeyTooLong, reported by
// the call that uses the quota (nothing is written).
func (q Quota) For(key string) Quota {
	q.key, q.keyed = key, true
	return q
}

// Charge is one quota and what one call takes from it (AllowAll, ReserveAll,
// WaitAll).
type Charge struct {
	Quota Quota
	Cost  Cost
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

// Validate reports why q is unusable: an empty or too long name, key or
// group, no limits, a duplicate or invalid limit, a guard out of range.
func (q Quota) Validate() error {
	if err := q.validateID(); err != nil {
		return err
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
		if nl.Limit.Algorithm == FixedWindow && q.Guard >= nl.Limit.Period {
			return fmt.Errorf("%w: quota %q guard %s is not shorter than limit %q's period %s", ErrInvalidDuration, q.Name, q.Guard, nl.Name, nl.Limit.Period)
		}
	}
	return nil
}

// validateID checks what names the quota instance: its name, key and group,
// and its guard's sign.
func (q Quota) validateID() error {
	if err := keys.Check(q.Name); err != nil {
		return fmt.Errorf("limiter: quota name: %w", err)
	}
	if q.keyed {
		if err := keys.Check(q.key); err != nil {
			return fmt.Errorf("limiter: quota %q key: %w", q.Name, err)
		}
	}
	if q.Group != "" {
		if err := keys.Check(q.Group); err != nil {
			return fmt.Errorf("limiter: quota %q group: %w", q.Name, err)
		}
	}
	if q.Guard < 0 {
		return fmt.Errorf("%w: quota %q guard %s is negative", ErrInvalidDuration, q.Name, q.Guard)
	}
	if !(q.Headroom >= 0 && q.Headroom <= maxHeadroom) {
		return fmt.Errorf("%w: quota %q headroom %v is not in [0, %v]", ErrInvalidLimit, q.Name, q.Headroom, maxHeadroom)
	}
	return nil
}

// maxHeadroom is the largest Quota.Headroom.
const maxHeadroom = 0.9

// headroomOf is the bound, in units, of the reserve limit l of q keeps for
// clients outside the fleet; 0 when it keeps none (only FixedWindow limits do).
func (q Quota) headroomOf(l Limit) int {
	if q.Headroom <= 0 || l.Algorithm != FixedWindow {
		return 0
	}
	return int(q.Headroom * float64(l.Rate))
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
	// Name is the limit's name.
	Name string
	// Quota is the name (Quota.Name, never For's key) of the quota the limit
	// belongs to.
	Quota string
	// WindowEnd is, for FixedWindow and SlidingWindowCounter limits, the end
	// of the clock-aligned window the charge counts in (a granted Reserve: the
	// booking's window; otherwise the window of the decision), on Redis's
	// clock. Zero for GCRA and SlidingWindow, and for decisions made without
	// Redis.
	WindowEnd time.Time
	Result
}

// QuotaResult is the outcome of a quota decision.
type QuotaResult struct {
	// Allowed reports whether every limit took its cost (all or nothing).
	Allowed bool
	// DeniedBy names the limit that must wait longest when denied, or is
	// HoldName when a hold (a 429 or 418 seen by any process) denied.
	DeniedBy string
	// DeniedQuota is the name of the quota DeniedBy belongs to (or whose hold
	// denied).
	DeniedQuota string
	// RetryAfter is how long until the whole cost would fit: the longest wait of
	// any limit (0 when allowed).
	RetryAfter time.Duration
	// ResetAfter is how long until every charged limit is back to full.
	ResetAfter time.Duration
	// Limits holds each charged limit's state, in quota order (charge by
	// charge for several quotas).
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
