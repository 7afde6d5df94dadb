package exchanges

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/redquota/redquota/middleware"
)

// BinanceUsage returns the parser of Binance's X-MBX-USED-WEIGHT-<interval> and
// X-MBX-ORDER-COUNT-<interval> headers, where interval is a count and a unit
// letter: S, M, H or D (second, minute, hour, day), in either case, e.g.
// X-MBX-USED-WEIGHT-1M, for a rule of your own (the Binance presets set one
// up for their quotas). weight maps an interval of
// X-MBX-USED-WEIGHT-<interval>, e.g. "1m", to the name of a limit of a quota
// the request charged (the IP's); orders maps an interval of
// X-MBX-ORDER-COUNT-<interval>, e.g. "10s" or "1d", to the name of a limit
// of a quota the request charged (the account's). Headers of intervals not
// mapped are ignored; an interval that is not <n><s|m|h|d> fails every
// answer's parse with an error wrapping middleware.ErrInvalid.
//
// A header of a limit the request charged nothing (an order's weight, 0 since
// 2026-04-02) is ignored: the Transport syncs a count through the charge.
// A value that is not a non-negative decimal integer is ignored and reported;
// a valid value beyond the limit (even one too large for an int) counts as the
// limit: the server considers us full.
func BinanceUsage(weight, orders map[string]string) middleware.UsageParser {
	return middleware.UsageParser{Parse: binanceUsage{Weight: weight, Orders: orders}.ParseUsage}
}

// binanceUsage is BinanceUsage's parser.
type binanceUsage struct{ Weight, Orders map[string]string }

const (
	hdrWeight = "x-mbx-used-weight-"
	hdrOrders = "x-mbx-order-count-"
)

// normInterval turns "1M", "01m" into "1m"; ok is false for anything else.
func normInterval(s string) (string, bool) {
	if len(s) < 2 {
		return "", false
	}
	unit := strings.ToLower(s[len(s)-1:])
	digits := s[:len(s)-1]
	if !strings.Contains("smhd", unit) || strings.Trim(digits, "0123456789") != "" {
		return "", false
	}
	n, err := strconv.ParseUint(digits, 10, 32)
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

// ParseUsage is the parser's Parse.
func (b binanceUsage) ParseUsage(a *middleware.Answer) ([]middleware.Usage, error) {
	weight, err1 := normMap(b.Weight)
	orders, err2 := normMap(b.Orders)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("%w: BinanceUsage: %w", middleware.ErrInvalid, err)
	}
	names := make([]string, 0, len(a.Header))
	for k := range a.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	var out []middleware.Usage
	var errs []error
	for _, k := range names {
		lk := strings.ToLower(k)
		var m map[string]string
		switch {
		case strings.HasPrefix(lk, hdrWeight):
			m = weight
		case strings.HasPrefix(lk, hdrOrders):
			m = orders
		default:
			continue
		}
		iv, ok := normInterval(lk[len(hdrWeight):]) // both prefixes have the same length
		if !ok {
			continue
		}
		limit, ok := m[iv]
		if !ok || !chargedLimit(a, limit) {
			continue
		}
		n, err := parseCount(k, a.Header.Get(k))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, middleware.Usage{Limit: limit, Used: n})
	}
	return out, errors.Join(errs...)
}

// chargedLimit reports whether a's request charged limit a positive cost.
// Without charges (a parser used on its own) every limit counts as charged.
func chargedLimit(a *middleware.Answer, limit string) bool {
	if len(a.Charges) == 0 {
		return true
	}
	for _, c := range a.Charges {
		if c.Cost[limit] > 0 {
			return true
		}
	}
	return false
}

// parseCount reads a non-negative decimal count, saturating at math.MaxInt;
// anything else is an error wrapping middleware.ErrBadHeader.
func parseCount(name, v string) (int, error) {
	s := strings.TrimSpace(v)
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%w: %s: %q is not a non-negative integer", middleware.ErrBadHeader, name, truncate(v, 64))
	}
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil || n > math.MaxInt {
		return math.MaxInt, nil
	}
	return int(n), nil
}
