package exchanges

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redquota/redquota/internal/bound"
)

// Errors of Binance rate limits, from exchangeInfo or from code. Every one is
// returned inside a *rateLimitError, and errors.Is(err, ErrInvalid) holds for
// all of them; the message names the entry, the field and the problem.
var (
	// errMissingField: a rate limit (or the document's rateLimits) lacks a field.
	errMissingField = errors.New("missing field")
	// errUnknownInterval: an interval other than SECOND, MINUTE, HOUR or DAY.
	errUnknownInterval = errors.New("unknown interval")
	// errInvalidValue: a limit or intervalNum that is not a positive integer, or
	// a field of the wrong JSON type.
	errInvalidValue = errors.New("invalid value")
	// errOutOfRange: a limit above bound.Rate, or a period longer than
	// bound.Period (intervalNum × interval).
	errOutOfRange = errors.New("value out of range")
	// errDuplicateRateLimit: two rate limits of the same type and interval.
	errDuplicateRateLimit = errors.New("duplicate rate limit")
)

// rateLimitError says which rate limit is unusable and why.
type rateLimitError struct {
	// Index is the rate limit's position in rateLimits (or RateLimits); -1 for
	// the document as a whole.
	Index int
	// Field is the offending field, e.g. "interval"; empty for the whole entry.
	Field string
	// Err is errMissingField, errUnknownInterval, errInvalidValue,
	// errOutOfRange or errDuplicateRateLimit, possibly wrapped with detail.
	Err error
}

// Error describes the problem.
func (e *rateLimitError) Error() string {
	var where string
	switch {
	case e.Index < 0:
		where = "exchangeInfo"
	case e.Field == "":
		where = fmt.Sprintf("rateLimits[%d]", e.Index)
	default:
		where = fmt.Sprintf("rateLimits[%d].%s", e.Index, e.Field)
	}
	return fmt.Sprintf("exchanges: invalid rate limits: %s: %v", where, e.Err)
}

// Unwrap returns ErrInvalid and the specific error.
func (e *rateLimitError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// BinanceRateLimit is one entry of the rateLimits of Binance's GET
// /api/v3/exchangeInfo, e.g.
//
//	{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
//
// Field meanings: https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits
// ("General Info on Limits") and .../enums ("Rate limiters", "Rate limit intervals").
type BinanceRateLimit struct {
	// RateLimitType is REQUEST_WEIGHT (the IP's request weight: every
	// endpoint costs its weight), RAW_REQUESTS (the IP's count of requests,
	// whatever their weight) or ORDERS (the account's count of orders placed,
	// its unfilled order count).
	RateLimitType string `json:"rateLimitType"`
	// Interval is SECOND, MINUTE, HOUR or DAY.
	Interval string `json:"interval"`
	// IntervalNum is how many Intervals a window lasts: 5 MINUTE is 5 minutes.
	IntervalNum int `json:"intervalNum"`
	// Limit is how many units fit in one window.
	Limit int `json:"limit"`
}

var binanceIntervals = map[string]struct {
	d      time.Duration
	letter string
}{
	"SECOND": {time.Second, "s"},
	"MINUTE": {time.Minute, "m"},
	"HOUR":   {time.Hour, "h"},
	"DAY":    {24 * time.Hour, "d"},
}

// period is the window's length; 0 for an unknown interval.
func (r BinanceRateLimit) period() time.Duration {
	return binanceIntervals[r.Interval].d * time.Duration(r.IntervalNum)
}

// header is the interval as Binance's usage headers spell it (lower-cased):
// "1m" for X-MBX-USED-WEIGHT-1M, "10s" for X-MBX-ORDER-COUNT-10S.
func (r BinanceRateLimit) header() string {
	return strconv.Itoa(r.IntervalNum) + binanceIntervals[r.Interval].letter
}

// name is the name of the rate limit's limit in the preset's quota: "weight",
// "raw" or "orders" and the interval, e.g. "weight-1m", "orders-10s".
func (r BinanceRateLimit) name() string {
	kind := strings.ToLower(r.RateLimitType)
	switch r.RateLimitType {
	case binanceTypeWeight:
		kind = "weight"
	case binanceTypeRaw:
		kind = "raw"
	case binanceTypeOrders:
		kind = "orders"
	}
	return kind + "-" + r.header()
}

// validate reports why r cannot be used, as the error of its index i.
func (r BinanceRateLimit) validate(i int) error {
	bad := func(field string, err error) error { return &rateLimitError{Index: i, Field: field, Err: err} }
	switch r.RateLimitType {
	case binanceTypeWeight, binanceTypeRaw, binanceTypeOrders:
	case "":
		return bad("rateLimitType", errMissingField)
	default:
		return bad("rateLimitType", fmt.Errorf("%w: %q", errInvalidValue, r.RateLimitType))
	}
	iv, ok := binanceIntervals[r.Interval]
	switch {
	case r.Interval == "":
		return bad("interval", errMissingField)
	case !ok:
		return bad("interval", fmt.Errorf("%w: %q", errUnknownInterval, r.Interval))
	case r.IntervalNum <= 0:
		return bad("intervalNum", fmt.Errorf("%w: %d must be > 0", errInvalidValue, r.IntervalNum))
	case int64(r.IntervalNum) > int64(bound.Period/iv.d):
		return bad("intervalNum", fmt.Errorf("%w: %d %s is longer than %s", errOutOfRange, r.IntervalNum, r.Interval, bound.Period))
	case r.Limit <= 0:
		return bad("limit", fmt.Errorf("%w: %d must be > 0", errInvalidValue, r.Limit))
	case r.Limit > bound.Rate:
		return bad("limit", fmt.Errorf("%w: %d above %d", errOutOfRange, r.Limit, bound.Rate))
	}
	return nil
}

// validateBinanceRateLimits reports why rls cannot be used, as a
// *rateLimitError: an empty list, a missing or unknown field, a limit or
// interval out of range, or two limits of one type and interval.
func validateBinanceRateLimits(rls []BinanceRateLimit) error {
	if len(rls) == 0 {
		return &rateLimitError{Index: -1, Field: "rateLimits", Err: fmt.Errorf("%w: no rate limits", errMissingField)}
	}
	seen := map[string]int{}
	for i, r := range rls {
		if err := r.validate(i); err != nil {
			return err
		}
		if j, dup := seen[r.name()]; dup {
			return &rateLimitError{Index: i, Err: fmt.Errorf("%w: same type and interval as rateLimits[%d]", errDuplicateRateLimit, j)}
		}
		seen[r.name()] = i
	}
	return nil
}

// rawRateLimit is an entry as found, so that missing fields and wrong types
// can be told apart from zeros.
type rawRateLimit struct {
	RateLimitType *string          `json:"rateLimitType"`
	Interval      *string          `json:"interval"`
	IntervalNum   *json.RawMessage `json:"intervalNum"`
	Limit         *json.RawMessage `json:"limit"`
}

// parseBinanceExchangeInfo reads the rateLimits of a GET /api/v3/exchangeInfo
// document (other fields are ignored) into rate limits for
// BinanceOptions.RateLimits. Entries of a rateLimitType the preset does not
// model are skipped (Binance may add types); every other problem is an error
// wrapping ErrInvalid, a *rateLimitError naming the entry and field:
// malformed JSON, no rateLimits, a missing field, an unknown interval, a limit
// or intervalNum that is not a positive integer, absurd values (beyond
// bound.Rate or bound.Period), or duplicates.
func parseBinanceExchangeInfo(doc []byte) ([]BinanceRateLimit, error) {
	var info struct {
		RateLimits *[]json.RawMessage `json:"rateLimits"`
	}
	if err := json.Unmarshal(doc, &info); err != nil {
		return nil, &rateLimitError{Index: -1, Err: fmt.Errorf("%w: %w", errInvalidValue, err)}
	}
	if info.RateLimits == nil {
		return nil, &rateLimitError{Index: -1, Field: "rateLimits", Err: errMissingField}
	}
	var out []BinanceRateLimit
	for i, msg := range *info.RateLimits {
		var raw rawRateLimit
		if err := json.Unmarshal(msg, &raw); err != nil {
			return nil, &rateLimitError{Index: i, Err: fmt.Errorf("%w: %w", errInvalidValue, err)}
		}
		bad := func(field string, err error) error { return &rateLimitError{Index: i, Field: field, Err: err} }
		switch {
		case raw.RateLimitType == nil:
			return nil, bad("rateLimitType", errMissingField)
		case raw.Interval == nil:
			return nil, bad("interval", errMissingField)
		case raw.IntervalNum == nil:
			return nil, bad("intervalNum", errMissingField)
		case raw.Limit == nil:
			return nil, bad("limit", errMissingField)
		}
		switch *raw.RateLimitType {
		case binanceTypeWeight, binanceTypeRaw, binanceTypeOrders:
		default:
			continue // a type we do not model
		}
		num, err := count(*raw.IntervalNum)
		if err != nil {
			return nil, bad("intervalNum", err)
		}
		lim, err := count(*raw.Limit)
		if err != nil {
			return nil, bad("limit", err)
		}
		r := BinanceRateLimit{RateLimitType: *raw.RateLimitType, Interval: *raw.Interval, IntervalNum: num, Limit: lim}
		if err := r.validate(i); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := validateBinanceRateLimits(out); err != nil {
		return nil, err
	}
	return out, nil
}

// count reads a JSON number that must be a positive integer no larger than
// bound.Rate (anything larger is out of range for every field). A number
// in a string ("6000") is not a number.
func count(n json.RawMessage) (int, error) {
	s := strings.TrimSpace(string(n))
	v, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil && len(s) > 0 && (s[0] == '-' || s[0] >= '0' && s[0] <= '9') && errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("%w: %s", errOutOfRange, s)
	case err != nil:
		return 0, fmt.Errorf("%w: %.32s is not an integer", errInvalidValue, s)
	case v <= 0:
		return 0, fmt.Errorf("%w: %d must be > 0", errInvalidValue, v)
	case v > bound.Rate:
		return 0, fmt.Errorf("%w: %d above %d", errOutOfRange, v, bound.Rate)
	}
	return int(v), nil
}

// BinanceFromExchangeInfo is Binance(opts) with opts.ExchangeInfo read from
// the exchange at start-up, in one call: GET base+"/api/v3/exchangeInfo"
// (base such as "https://api.binance.com"), sent with c
// (http.DefaultClient when nil). The
// exchange's own figures are the source of truth
// (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits);
// RAW_REQUESTS went from 61000 to 300000 per 5 minutes on 2026-04-02 while the
// enums page kept the old figure. The call's weight (20) is not charged to the
// preset's quotas: the next answer's X-MBX-USED-WEIGHT header counts it. An
// answer other than 200 is an error; so is a document without usable
// rateLimits (an error wrapping ErrInvalid).
func BinanceFromExchangeInfo(ctx context.Context, c *http.Client, base string, opts BinanceOptions) (Preset, error) {
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/api/v3/exchangeInfo", nil)
	if err != nil {
		return Preset{}, fmt.Errorf("exchanges: exchangeInfo: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return Preset{}, fmt.Errorf("exchanges: exchangeInfo: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Preset{}, fmt.Errorf("exchanges: exchangeInfo: status %d", resp.StatusCode)
	}
	// exchangeInfo lists every symbol: megabytes; bounded all the same.
	doc, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return Preset{}, fmt.Errorf("exchanges: exchangeInfo: %w", err)
	}
	opts.ExchangeInfo = doc
	return Binance(opts)
}

// loadExchangeInfo replaces o.RateLimits by the rateLimits of
// o.ExchangeInfo, when set.
func (o *BinanceOptions) loadExchangeInfo() error {
	if o.ExchangeInfo == nil {
		return nil
	}
	rls, err := parseBinanceExchangeInfo(o.ExchangeInfo)
	if err != nil {
		return err
	}
	o.RateLimits = rls
	return nil
}
