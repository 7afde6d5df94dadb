package middleware

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/redquota/redquota/limiter"
)

// Usage is what an answer says of one quota the request was charged: how
// much of a limit the server has counted, or that it has nothing left for a
// while.
type Usage struct {
	// Quota names the charged quota this is about (its Name; a quota applied
	// to a key keeps its template's name). Default "": the charged quota that
	// has Limit or, for a Hold without Limit, every quota the request charged.
	Quota string
	// Limit names the limit of that quota.
	Limit string
	// Used is how many units the server has counted in its current window.
	// When it is more than our count, the Transport raises ours to it (never
	// lowering it; above the limit it is taken as the limit), in the window
	// the request was charged in only: the limiter decides, on Redis's clock,
	// and a count arriving after that window ended changes nothing. A limit
	// whose count goes down (limiter.Limit.Lowers) may be lowered too, not
	// below what may still reach the server (see there); for such a limit
	// a Used of 0, without Hold or Refused, is a count of 0.
	Used int
	// Hold, when positive, says the server has no units left for this long:
	// the Transport holds the quota for it, capped by Options.MaxHold.
	Hold time.Duration
	// Refused says this answer is this quota's refusal of the request
	// (Binance's -1015 for its account's ORDERS limits): the hold a 429 or 418
	// calls for (Retry-After, FallbackHold, BanHold) then holds this quota
	// only, not every quota the request charged.
	Refused bool
}

// Answer is an answer to a request a rule matched, as the rule's usage
// parsers see it: before the caller does.
type Answer struct {
	// Request is the request sent (its body already consumed).
	Request *http.Request
	// StatusCode and Header are the answer's.
	StatusCode int
	Header     http.Header
	// Body is the start of the answer's body, at most Rule.PeekBody bytes; the
	// caller still reads all of it.
	Body []byte
	// Charges are the quotas and costs the request was charged.
	Charges []limiter.Charge
}

// limit finds the limit called name among the charged quotas.
func (a *Answer) limit(name string) (limiter.Limit, bool) {
	for _, c := range a.Charges {
		if l, ok := findLimit(c.Quota, name); ok {
			return l, true
		}
	}
	return limiter.Limit{}, false
}

// UsageParser learns from an answer what the server has counted and what it
// asks us to hold: IETFUsage, XRateLimit, the exchanges' parsers, or your
// own, UsageParser{Parse: f}.
type UsageParser struct {
	// Parse returns what it could read of a, together with an error wrapping
	// ErrBadHeader for what it could not; the Transport uses the former and
	// reports the latter to Options.OnError. A parser without Parse makes its
	// rule invalid.
	Parse func(a *Answer) ([]Usage, error)
	// limits are the limits of the rule's quota the parser names, checked
	// when the Transport is built (a rule with Charges is not checked).
	limits []string
}

func knownLimits(q limiter.Quota, names []string) error {
	for _, name := range names {
		if _, ok := findLimit(q, name); !ok {
			return fmt.Errorf("%w: %q is not a limit of quota %q", limiter.ErrInvalid, name, q.Name)
		}
	}
	return nil
}

// IETFUsage returns the parser of the RateLimit and RateLimit-Policy fields of
// draft-ietf-httpapi-ratelimit-headers (Structured Field Lists), e.g.
//
//	RateLimit-Policy: "default";q=100;w=60
//	RateLimit: "default";r=50;t=30
//
// For each policy it maps, the server has used q − r units, where q comes from
// the RateLimit-Policy member of the same name or, without one, is the mapped
// limit's maximum (Burst, or Rate). When r is 0 and t is positive, the quota is held for t
// seconds. A field that is not a valid Structured Field List is ignored as a
// whole (as RFC 9651 requires) and reported; so is a member without a valid
// non-negative integer r or q. policies maps a policy name (the member's
// String or Token) to the name of a limit of the rule's quota; policies not
// mapped are ignored.
func IETFUsage(policies map[string]string) UsageParser {
	u := ietfUsage{Policies: maps.Clone(policies)}
	p := UsageParser{Parse: u.parse}
	for _, l := range u.Policies {
		p.limits = append(p.limits, l)
	}
	slices.Sort(p.limits) // the first unknown one named is then always the same
	return p
}

type ietfUsage struct{ Policies map[string]string }

func (u ietfUsage) parse(a *Answer) ([]Usage, error) {
	h := a.Header
	lines := h.Values("RateLimit")
	if len(lines) == 0 {
		return nil, nil
	}
	var errs []error
	quotas := map[string]int64{}
	if pl := h.Values("RateLimit-Policy"); len(pl) > 0 {
		items, err := parseSFList(pl)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: RateLimit-Policy: %w", ErrBadHeader, err))
		}
		for _, it := range items {
			name, ok := it.name()
			if !ok || u.Policies[name] == "" {
				continue
			}
			qv, ok := nonNegInt(it, "q")
			if !ok {
				errs = append(errs, fmt.Errorf("%w: RateLimit-Policy %q: q is not a non-negative integer", ErrBadHeader, name))
				continue
			}
			quotas[name] = qv
		}
	}
	items, err := parseSFList(lines)
	if err != nil {
		errs = append(errs, fmt.Errorf("%w: RateLimit: %w", ErrBadHeader, err))
	}
	var out []Usage
	for _, it := range items {
		name, ok := it.name()
		if !ok {
			continue
		}
		limit := u.Policies[name]
		if limit == "" {
			continue
		}
		r, ok := nonNegInt(it, "r")
		if !ok {
			errs = append(errs, fmt.Errorf("%w: RateLimit %q: r is not a non-negative integer", ErrBadHeader, name))
			continue
		}
		size, ok := quotas[name]
		if !ok {
			l, found := a.limit(limit)
			if !found {
				errs = append(errs, fmt.Errorf("%w: %q is not a limit of a charged quota", limiter.ErrInvalid, limit))
				continue
			}
			size = int64(most(l))
		}
		us := Usage{Limit: limit, Used: int(max(size-r, 0))}
		if t, ok := nonNegInt(it, "t"); ok && r == 0 && t > 0 {
			us.Hold = seconds(t)
		}
		out = append(out, us)
	}
	return out, errors.Join(errs...)
}

func nonNegInt(it sfItem, key string) (int64, bool) {
	v, ok := it.param(key)
	if !ok {
		return 0, false
	}
	n, ok := v.(int64)
	return n, ok && n >= 0
}

// XRateLimit returns the parser of the de facto X-RateLimit-Remaining, X-RateLimit-Limit and
// X-RateLimit-Reset headers into limit, a limit of the rule's quota. The server has
// used Limit − Remaining units, Limit being X-RateLimit-Limit or, without it,
// the limit's maximum (Burst, or Rate). When Remaining is 0, the quota is held until
// X-RateLimit-Reset: a number of seconds, or a Unix time in seconds when it is
// at least 1e9 (servers use both; a delay of 31 years is not plausible).
//
// A value that is not a non-negative decimal integer is ignored and reported;
// a valid value too large for an int is taken as the largest int (a huge
// Remaining therefore means nothing is used).
func XRateLimit(limit string) UsageParser {
	return UsageParser{Parse: xRateLimit{Limit: limit}.parse, limits: []string{limit}}
}

type xRateLimit struct{ Limit string }

// unixThreshold is the X-RateLimit-Reset value from which it is read as a Unix time.
const unixThreshold = 1_000_000_000

func (x xRateLimit) parse(a *Answer) ([]Usage, error) {
	h := a.Header
	rv := h.Get("X-RateLimit-Remaining")
	if rv == "" {
		return nil, nil
	}
	rem, err := parseCount("X-RateLimit-Remaining", rv)
	if err != nil {
		return nil, err
	}
	var size int
	if lv := h.Get("X-RateLimit-Limit"); lv != "" {
		if size, err = parseCount("X-RateLimit-Limit", lv); err != nil {
			return nil, err
		}
	} else {
		l, ok := a.limit(x.Limit)
		if !ok {
			return nil, fmt.Errorf("%w: %q is not a limit of a charged quota", limiter.ErrInvalid, x.Limit)
		}
		size = most(l)
	}
	u := Usage{Limit: x.Limit, Used: max(size-rem, 0)}
	if rs := h.Get("X-RateLimit-Reset"); rem == 0 && rs != "" {
		n, err := parseCount("X-RateLimit-Reset", rs)
		if err != nil {
			return []Usage{u}, err
		}
		switch {
		case n >= unixThreshold:
			u.Hold = time.Until(time.Unix(int64(min(n, math.MaxInt32*4)), 0))
		case n > 0:
			u.Hold = time.Duration(n) * time.Second
		}
		u.Hold = max(u.Hold, 0)
	}
	return []Usage{u}, nil
}
