package middleware

import (
	"errors"
	"fmt"
	"time"
)

// Errors callers can branch on with errors.Is.
var (
	// ErrInvalidRule: a rule with an invalid quota, no cost, a cost naming a
	// limit its quota does not have, a negative cost, or a usage parser naming an
	// unknown limit. Requests the rule matches fail with it and are not sent.
	ErrInvalidRule = errors.New("middleware: invalid rule")
	// ErrRateLimited: the request was not sent because the quota had no room for
	// it in time: at once with Options.FailFast, or before the request context's
	// deadline. The error is a *LimitedError carrying RetryAfter.
	ErrRateLimited = errors.New("middleware: rate limited")
	// ErrBadHeader: a response header the Transport reads (Retry-After or a
	// usage header) was malformed and was ignored or replaced by a fallback.
	// It never fails a request; it is passed to Options.OnError.
	ErrBadHeader = errors.New("middleware: malformed rate-limit header")
	// ErrUnmatched: a Strict Transport refused, unsent, a request that no rule
	// matched.
	ErrUnmatched = errors.New("middleware: request matches no rule")
)

// LimitedError is the error of a request that was not sent for lack of room in
// its quota. errors.Is(err, ErrRateLimited) holds for it.
type LimitedError struct {
	// Quota names the quota that denied (its Name; a quota applied to a key
	// keeps its template's name).
	Quota string
	// DeniedBy names the limit that must wait longest, or limiter.HoldName when
	// a hold (a 429 or 418 seen by any process) denied the request.
	DeniedBy string
	// RetryAfter is how long until the request's cost would fit.
	RetryAfter time.Duration
	// Err is the limiter's reason when there is one: limiter.ErrWouldExceedDeadline
	// when the turn (or the turn after a hold placed while it waited) would
	// come after the request context's deadline; nil for a FailFast denial.
	Err error
}

// Error describes the denial.
func (e *LimitedError) Error() string {
	s := fmt.Sprintf("middleware: rate limited by quota %q (%s), retry after %s", e.Quota, e.DeniedBy, e.RetryAfter)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is reports whether target is ErrRateLimited.
func (e *LimitedError) Is(target error) bool { return target == ErrRateLimited }

// Unwrap returns the limiter's reason, if any.
func (e *LimitedError) Unwrap() error { return e.Err }
