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
// without For is its own single instance. Key(key, limit) is the quota of one
// key and one limit.
type Quota struct {
	// Name identifies the quota in Redis and in telemetry.
	Name string
	// Limits are the quota's limits; their names must be distinct, at most
	// 16 of them. A quota with no limits can only be held (Limiter.Hold) or
	// waited on. A quota whose only limit has the name "" is a single key's
	// (see Key).
	Limits []NamedLimit
	// Label is the quota's name in telemetry (the redquota.quota attribute).
	// Default Name. The key given to For never reaches telemetry.
	Label string
	// Group is the Redis Cluster hash tag the quota's keys share. Quotas with
	// the same Group live in one slot, so Allow, Reserve and Wait charge
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
	//
	// A sliding window is exact on Redis's clock at the grant, not at the
	// server: grants made Period apart arrive less than Period apart when the
	// earlier one took longer to get there, and the server's window then
	// counts Rate+1. Against a server that counts a sliding window, give the
	// limit a Period longer by that delay (the Bybit and OKX presets' Guard
	// options do).
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
	// one is a Key quota's limit, kept in the quota (hasOne) rather than in
	// a Limits slice of its own: a single-key decision allocates nothing for it.
	one    Limit
	hasOne bool
}

// Key is the quota of one key and one limit: the single-key shorthand, as
// in lim.Allow(ctx, limiter.Key("user:42", limiter.PerSecond(10)).Take(1)).
// Its one limit has the name "" and is kept inside the quota (Limits stays
// nil, so that the decision allocates nothing for it); Quota{Name: key,
// Limits: []NamedLimit{{Limit: limit}}}, as Inspect returns a key, is the
// same quota. A key has one hold and one state per algorithm, whatever
// limits it is used with.
func Key(key string, limit Limit) Quota {
	return Quota{Name: key, one: limit, hasOne: true}
}

// keyLimit returns the limit of a single key's quota: Key's, or that of a
// quota whose only limit has the name "".
func (q *Quota) keyLimit() (Limit, bool) {
	switch {
	case q.Limits == nil && q.hasOne:
		return q.one, true
	case len(q.Limits) == 1 && q.Limits[0].Name == "":
		return q.Limits[0].Limit, true
	}
	return Limit{}, false
}

// limits returns q's limits, a Key quota's included.
func (q *Quota) limits() []NamedLimit {
	if q.Limits == nil && q.hasOne {
		return []NamedLimit{{Limit: q.one}}
	}
	return q.Limits
}

// For returns the instance of template q for key: the same limits, counted
// for key alone. Names and keys are escaped apart in Redis, so no (Name, key)
// can meet another quota's or another key's state. An empty key, or one
// longer than 512 bytes, is an error wrapping ErrInvalid, reported by the
// call that uses the quota (nothing is written).
func (q Quota) For(key string) Quota {
	q.key, q.keyed = key, true
	return q
}

// Take is the charge of n units of every limit of q.
func (q Quota) Take(n int) Charge {
	return Charge{Quota: q, n: n, taken: true}
}

// Charge is one quota and what one call takes from it (Allow, Reserve,
// Wait). Cost, when not nil, says how much of each limit; otherwise the
// charge takes 1 of every limit, or n of each when made by q.Take(n).
type Charge struct {
	Quota Quota
	Cost  Cost

	n     int  // Take's n
	taken bool // made by Take
}

// each is the cost of every limit of a charge without a Cost.
func (c Charge) each() int {
	if c.taken {
		return c.n
	}
	return 1
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

// plain reports whether c is a single key's charge, decided as a key of its
// own (the hold and the state of each algorithm under the key): a Key quota,
// with no Cost, Label, Guard or Headroom.
func (c *Charge) plain() bool {
	q := &c.Quota
	if _, ok := q.keyLimit(); !ok {
		return false
	}
	return c.Cost == nil && !q.keyed && q.Group == "" && q.Label == "" && q.Guard == 0 && q.Headroom == 0
}

// Validate reports why q is unusable, as an error wrapping ErrInvalid: an
// empty or too long name, key or group, no limits, a duplicate or invalid
// limit, a guard out of range. Allow, Reserve, Wait and NewLeaser check
// their quotas themselves; Validate reports a bad quota where it is built.
func (q Quota) Validate() error {
	if err := q.validateID(); err != nil {
		return err
	}
	ls := q.limits()
	if len(ls) == 0 {
		return fmt.Errorf("%w: %q", errEmptyQuota, q.Name)
	}
	if len(ls) > maxQuotaLimits {
		return fmt.Errorf("%w: quota %q has %d limits, at most %d", errInvalidLimit, q.Name, len(ls), maxQuotaLimits)
	}
	for i, nl := range ls {
		if nl.Name != "" || len(ls) > 1 {
			if keys.Check(nl.Name) != nil { // the message is formatted only for a bad name
				return checkPart(fmt.Sprintf("quota %q limit %d name", q.Name, i), nl.Name)
			}
		}
		for _, other := range ls[:i] {
			if other.Name == nl.Name {
				return fmt.Errorf("%w: %q in quota %q", errDuplicateLimit, nl.Name, q.Name)
			}
		}
		if err := nl.Limit.validate(); err != nil {
			return fmt.Errorf("quota %q limit %q: %w", q.Name, nl.Name, err)
		}
		if nl.Limit.Lowers && q.Headroom > 0 {
			return fmt.Errorf("%w: quota %q keeps headroom: its limit %q cannot lower (Lowers)", errInvalidLimit, q.Name, nl.Name)
		}
		// In µs too, as the script compares them.
		if nl.Limit.Algorithm == FixedWindow && (q.Guard >= nl.Limit.Period || q.Guard.Microseconds() >= nl.Limit.periodUS()) {
			return fmt.Errorf("%w: quota %q guard %s is not shorter than limit %q's period %s", errInvalidDuration, q.Name, q.Guard, nl.Name, nl.Limit.Period)
		}
	}
	return nil
}

// validateID checks what names the quota instance: its name, key and group,
// and its guard's sign.
func (q Quota) validateID() error {
	if err := checkPart("quota name", q.Name); err != nil {
		return err
	}
	if q.keyed {
		if err := checkPart(fmt.Sprintf("quota %q key", q.Name), q.key); err != nil {
			return err
		}
	}
	if q.Group != "" {
		if err := checkPart(fmt.Sprintf("quota %q group", q.Name), q.Group); err != nil {
			return err
		}
	}
	if q.Guard < 0 {
		return fmt.Errorf("%w: quota %q guard %s is negative", errInvalidDuration, q.Name, q.Guard)
	}
	if !(q.Headroom >= 0 && q.Headroom <= maxHeadroom) {
		return fmt.Errorf("%w: quota %q headroom %v is not in [0, %v]", errInvalidLimit, q.Name, q.Headroom, maxHeadroom)
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

// find returns the limit named name.
func (q Quota) find(name string) (Limit, bool) {
	for _, nl := range q.limits() {
		if nl.Name == name {
			return nl.Limit, true
		}
	}
	return Limit{}, false
}
