package middleware

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redquota/redquota/limiter"
)

// Usage is what a server reports it has counted of one limit of a rule's quota.
type Usage struct {
	// Limit names the limit of the rule's quota.
	Limit string
	// Used is how many units the server has counted in its current window. When
	// it is more than our count, the Transport raises ours to it with
	// limiter.Sync (never lowering it); above the limit it is taken as the limit.
	Used int
	// Hold, when positive, says the server has no units left for this long: the
	// Transport holds the quota for it, capped by Options.MaxHold.
	Hold time.Duration
}

// UsageParser reads usage from a response's header. q is the quota of the rule
// that matched the request. A parser returns what it could read together with
// an error wrapping ErrBadHeader for what it could not; the Transport uses the
// former and reports the latter to Options.OnError.
//
// For a fixed-window limit (limiter.FixedWindow), when a request went out in
// one window and its answer came back in the next, the count may be the
// previous window's: the Transport then syncs it only if the answer's Date
// header places the request in the current window (or there is no usable
// Date, or the window is not whole seconds: then it syncs, to be safe).
type UsageParser interface {
	ParseUsage(h http.Header, q limiter.Quota) ([]Usage, error)
}

// BinanceUsage reads Binance's X-MBX-USED-WEIGHT-<interval> and
// X-MBX-ORDER-COUNT-<interval> headers, where interval is a count and a unit
// letter: S, M, H or D (second, minute, hour, day), in either case, e.g.
// X-MBX-USED-WEIGHT-1M. Headers of intervals not mapped are ignored.
//
// A value that is not a non-negative decimal integer is ignored and reported;
// a valid value beyond the limit (even one too large for an int) counts as the
// limit: the server considers us full.
type BinanceUsage struct {
	// Weight maps an interval of X-MBX-USED-WEIGHT-<interval>, e.g. "1m", to
	// the name of a limit of the rule's quota.
	Weight map[string]string
	// Orders maps an interval of X-MBX-ORDER-COUNT-<interval>, e.g. "10s" or
	// "1d", to the name of a limit of the rule's quota.
	Orders map[string]string
}

const (
	binanceWeight = "x-mbx-used-weight-"
	binanceOrders = "x-mbx-order-count-"
)

// normInterval turns "1M", "01m" into "1m"; ok is false for anything else.
func normInterval(s string) (string, bool) {
	if len(s) < 2 {
		return "", false
	}
	unit := strings.ToLower(s[len(s)-1:])
	if !strings.Contains("smhd", unit) || !allDigits(s[:len(s)-1]) {
		return "", false
	}
	n, err := strconv.ParseUint(s[:len(s)-1], 10, 32)
	if err != nil || n == 0 {
		return "", false
	}
	return strconv.FormatUint(n, 10) + unit, true
}

func normMap(m map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(m))
	for k, v := range m {
		n, ok := normInterval(k)
		if !ok {
			return nil, fmt.Errorf("interval %q is not <n><s|m|h|d>", k)
		}
		out[n] = v
	}
	return out, nil
}

func (b BinanceUsage) validate(q limiter.Quota) error {
	for _, m := range []map[string]string{b.Weight, b.Orders} {
		n, err := normMap(m)
		if err != nil {
			return err
		}
		if err := knownLimits(q, n); err != nil {
			return err
		}
	}
	return nil
}

func knownLimits(q limiter.Quota, m map[string]string) error {
	for _, name := range m {
		if _, ok := q.Find(name); !ok {
			return fmt.Errorf("%w: %q is not a limit of quota %q", limiter.ErrUnknownLimit, name, q.Name)
		}
	}
	return nil
}

// ParseUsage implements UsageParser.
func (b BinanceUsage) ParseUsage(h http.Header, q limiter.Quota) ([]Usage, error) {
	weight, err1 := normMap(b.Weight)
	orders, err2 := normMap(b.Orders)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("%w: BinanceUsage: %w", ErrInvalidRule, err)
	}
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	var out []Usage
	var errs []error
	for _, k := range names {
		lk := strings.ToLower(k)
		var m map[string]string
		switch {
		case strings.HasPrefix(lk, binanceWeight):
			m = weight
		case strings.HasPrefix(lk, binanceOrders):
			m = orders
		default:
			continue
		}
		iv, ok := normInterval(lk[len(binanceWeight):]) // both prefixes have the same length
		if !ok {
			continue
		}
		limit, ok := m[iv]
		if !ok {
			continue
		}
		n, err := parseCount(k, h.Get(k))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, Usage{Limit: limit, Used: n})
	}
	return out, errors.Join(errs...)
}

// IETFUsage reads the RateLimit and RateLimit-Policy fields of
// draft-ietf-httpapi-ratelimit-headers (Structured Field Lists), e.g.
//
//	RateLimit-Policy: "default";q=100;w=60
//	RateLimit: "default";r=50;t=30
//
// For each policy it maps, the server has used q − r units, where q comes from
// the RateLimit-Policy member of the same name or, without one, is the mapped
// limit's Limit.Max. When r is 0 and t is positive, the quota is held for t
// seconds. A field that is not a valid Structured Field List is ignored as a
// whole (as RFC 9651 requires) and reported; so is a member without a valid
// non-negative integer r or q. Policies not mapped are ignored.
type IETFUsage struct {
	// Policies maps a policy name (the member's String or Token) to the name
	// of a limit of the rule's quota.
	Policies map[string]string
}

func (u IETFUsage) validate(q limiter.Quota) error { return knownLimits(q, u.Policies) }

// ParseUsage implements UsageParser.
func (u IETFUsage) ParseUsage(h http.Header, q limiter.Quota) ([]Usage, error) {
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
			l, found := q.Find(limit)
			if !found {
				errs = append(errs, fmt.Errorf("%w: %q is not a limit of quota %q", limiter.ErrUnknownLimit, limit, q.Name))
				continue
			}
			size = int64(l.Max())
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

// XRateLimit reads the de facto X-RateLimit-Remaining, X-RateLimit-Limit and
// X-RateLimit-Reset headers into one limit of the rule's quota. The server has
// used Limit − Remaining units, Limit being X-RateLimit-Limit or, without it,
// the limit's Limit.Max. When Remaining is 0, the quota is held until
// X-RateLimit-Reset: a number of seconds, or a Unix time in seconds when it is
// at least 1e9 (servers use both; a delay of 31 years is not plausible).
//
// A value that is not a non-negative decimal integer is ignored and reported;
// a valid value too large for an int is taken as the largest int (a huge
// Remaining therefore means nothing is used).
type XRateLimit struct {
	// Limit names the limit of the rule's quota the headers describe.
	Limit string
}

func (x XRateLimit) validate(q limiter.Quota) error {
	return knownLimits(q, map[string]string{"": x.Limit})
}

// unixThreshold is the X-RateLimit-Reset value from which it is read as a Unix time.
const unixThreshold = 1_000_000_000

// ParseUsage implements UsageParser.
func (x XRateLimit) ParseUsage(h http.Header, q limiter.Quota) ([]Usage, error) {
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
		l, ok := q.Find(x.Limit)
		if !ok {
			return nil, fmt.Errorf("%w: %q is not a limit of quota %q", limiter.ErrUnknownLimit, x.Limit, q.Name)
		}
		size = l.Max()
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
