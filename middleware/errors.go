package middleware

import (
	"errors"
	"fmt"
	"time"
)

// Errors callers can branch on with errors.Is.
var (
	// ErrInvalid: bad input, and the message says which: a rule with an
	// invalid quota, no cost, a cost naming a limit its quota does not have,
	// a negative cost, or a usage parser naming an unknown limit
	// (NewTransport fails with it); a nil limiter; or, on a Strict
	// Transport, a request that no rule matched (refused, unsent).
	ErrInvalid = errors.New("middleware: invalid")
	// ErrRateLimited: the request was not sent because the quota had no room for
	// it in time: at once with Options.FailFast, or before the request context's
	// deadline. errors.As finds a *LimitedError in it, carrying RetryAfter.
	ErrRateLimited = errors.New("middleware: rate limited")
	// ErrBadHeader: a response header the Transport reads (Retry-After or a
	// usage header) was malformed and was ignored or replaced by a fallback.
	// It never fails a request; it is passed to Options.OnError.
	ErrBadHeader = errors.New("middleware: malformed rate-limit header")
)

// errUnmatched is ErrInvalid for a request a Strict Transport refused because
// no rule matched it.
var errUnmatched = fmt.Errorf("%w: request matches no rule", ErrInvalid)

// LimitedError says why a request was not sent for lack of room in its
// quota: errors.As finds it in the error a Transport returns, for which
// errors.Is(err, ErrRateLimited) holds, and errors.Is(err, e.Err) too.
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

// rateLimited is the error a Transport returns for a *LimitedError: its
// message, with errors.Is and errors.As reaching the *LimitedError,
// ErrRateLimited and the limiter's reason.
type rateLimited struct{ *LimitedError }

func (r rateLimited) Unwrap() []error {
	errs := []error{r.LimitedError, ErrRateLimited}
	if r.Err != nil {
		errs = append(errs, r.Err)
	}
	return errs
}
