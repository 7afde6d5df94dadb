package limiter

import (
	"errors"
	"fmt"

	"github.com/redquota/redquota/internal/bound"
	"github.com/redquota/redquota/internal/keys"
	"github.com/redquota/redquota/internal/reach"
)

// Errors callers can branch on with errors.Is. Errors for bad input are
// returned before anything is sent to Redis.
var (
	// ErrInvalid: bad input, reported before anything is sent to Redis. The
	// message says what was wrong: an invalid limit (rate ≤ 0, a period out of
	// range, an unknown algorithm...), a cost ≤ 0 or above what the limit can
	// ever allow at once, an empty key or name, one longer than 512 bytes, a
	// quota with no limits where limits are needed or more than 16 of them, a
	// duplicate or unknown limit name, a hold of ≤ 0 or more than a week where
	// a positive one is needed, a Wait of a reservation Cancel gave back,
	// a Leaser over a SlidingWindow limit (the exact
	// sliding log cannot count units spent after they were charged without
	// overshooting).
	ErrInvalid = errors.New("limiter: invalid input")
	// ErrWouldExceedDeadline: Wait or Reserve would have to wait past the context's deadline.
	// Nothing was charged.
	ErrWouldExceedDeadline = errors.New("limiter: wait would pass the context deadline")
	// ErrUnavailable: Redis could not be reached, did not answer within
	// Options.Timeout, could not serve (a replica's READONLY, OOM, LOADING…),
	// or the breaker was open after such failures: the error of a decision
	// under FailClosed, and of every other call (Hold, Sync, Cancel,
	// Inspect…) whatever the policy. Also: the policy is FailLocal and the
	// cost is more than this process's share of the limit
	// (Options.LocalShare) can ever allow at once (nothing was charged).
	ErrUnavailable = errors.New("limiter: redis unavailable")
	// ErrBadReply: a script answered with a reply of the wrong shape.
	ErrBadReply = errors.New("limiter: malformed script reply")
	// ErrNilClient: every call of a Limiter New was given a nil client.
	ErrNilClient = reach.ErrNilClient
	// ErrAuth: Redis refused the client's credentials (WRONGPASS, NOAUTH, a
	// missing password) or its ACL user's permissions (NOPERM: the message
	// then says the credentials were accepted). A configuration error: returned whatever the
	// failure policy, never answered as if Redis were down.
	ErrAuth = reach.ErrAuth
	// ErrLeaserClosed: a decision asked of a Leaser after Close.
	ErrLeaserClosed = errors.New("limiter: leaser closed")
)

// The kinds of ErrInvalid, which the package's checks wrap with the details.
var (
	// errInvalidLimit: a Limit with rate ≤ 0, period ≤ 0 or out of range, burst < 0, or an unknown algorithm.
	errInvalidLimit = invalid("invalid limit", nil)
	// errInvalidCost: n ≤ 0, a negative cost, or charges that take nothing.
	errInvalidCost = invalid("invalid cost", nil)
	// errExceedsLimit: n is more than the limit can ever allow at once.
	errExceedsLimit = invalid("cost exceeds what the limit can ever allow", nil)
	// errEmptyKey: an empty key, quota name, limit name or group.
	errEmptyKey = invalid("empty key", keys.ErrEmpty)
	// errKeyTooLong: a key, quota name, limit name or group longer than maxKeyLen bytes.
	errKeyTooLong = invalid(fmt.Sprintf("key longer than %d bytes", maxKeyLen), keys.ErrTooLong)
	// errEmptyQuota: a quota with no limits where limits are needed (Sync, a
	// charge with a named cost).
	errEmptyQuota = invalid("quota has no limits", nil)
	// errUnknownLimit: a cost names a limit the quota does not have, or Sync names one.
	errUnknownLimit = invalid("unknown limit in quota", nil)
	// errDuplicateLimit: two limits of a quota share a name, or a quota is charged twice in one call.
	errDuplicateLimit = invalid("duplicate limit name in quota", nil)
	// errInvalidDuration: a negative duration, or a hold out of range.
	errInvalidDuration = invalid("invalid duration", nil)
	// errLeaseAlgorithm: a Leaser over a SlidingWindow limit.
	errLeaseAlgorithm = invalid("sliding window limits cannot be leased", nil)
	// errExceedsLocalShare: FailLocal and a cost above what the local share
	// can ever allow at once; wraps ErrUnavailable (not ErrInvalid).
	errExceedsLocalShare = &kindError{msg: "cost exceeds the local share of the limit", is: []error{ErrUnavailable}}
)

// kindError is one kind of a sentinel error: its own text, and the sentinels
// errors.Is finds in it.
type kindError struct {
	msg string
	is  []error
}

func (e *kindError) Error() string   { return "limiter: " + e.msg }
func (e *kindError) Unwrap() []error { return e.is }

// invalid returns a kind of ErrInvalid (and of also, when not nil).
func invalid(msg string, also error) error {
	e := &kindError{msg: msg, is: []error{ErrInvalid}}
	if also != nil {
		e.is = append(e.is, also)
	}
	return e
}

// checkPart checks a user-supplied key part (a key, a quota, limit or group
// name), naming what in the error.
func checkPart(what, s string) error {
	switch err := keys.Check(s); {
	case err == nil:
		return nil
	case errors.Is(err, keys.ErrTooLong):
		return fmt.Errorf("%w: %s", errKeyTooLong, what)
	default:
		return fmt.Errorf("%w: %s", errEmptyKey, what)
	}
}

// Bounds on input (internal/bound), documented in ErrInvalid's comment and on
// the names they bound.
const (
	maxKeyLen      = bound.KeyLen
	maxPeriod      = bound.Period
	maxRate        = bound.Rate
	maxHold        = bound.Hold
	maxQuotaLimits = bound.QuotaLimits
)

// maxReplyLimits is the most limits one reply may carry (maxQuotaLimits).
const maxReplyLimits = maxQuotaLimits
