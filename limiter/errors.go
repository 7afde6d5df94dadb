package limiter

import (
	"errors"

	"github.com/redquota/redquota/internal/keys"
	"github.com/redquota/redquota/internal/reach"
)

// Errors callers can branch on with errors.Is. Errors for bad input are
// returned before anything is sent to Redis.
var (
	// ErrInvalidLimit: a Limit with rate ≤ 0, period ≤ 0 or out of range, burst < 0, or an unknown algorithm.
	ErrInvalidLimit = errors.New("limiter: invalid limit")
	// ErrInvalidCost: n ≤ 0, a negative cost, or a quota cost that charges nothing.
	ErrInvalidCost = errors.New("limiter: invalid cost")
	// ErrExceedsLimit: n is more than the limit can ever allow at once (Limit.Max).
	ErrExceedsLimit = errors.New("limiter: cost exceeds what the limit can ever allow")
	// ErrEmptyKey: an empty key or quota name.
	ErrEmptyKey = keys.ErrEmpty
	// ErrKeyTooLong: a key or limit name longer than MaxKeyLen bytes.
	ErrKeyTooLong = keys.ErrTooLong
	// ErrEmptyQuota: a quota with no limits, where limits are needed (Validate,
	// Sync, a charge with a cost). Such a quota can be held, and a charge on
	// it with an empty cost waits for its hold.
	ErrEmptyQuota = errors.New("limiter: quota has no limits")
	// ErrUnknownLimit: a quota cost names a limit the quota does not have, or Sync names one.
	ErrUnknownLimit = errors.New("limiter: unknown limit in quota")
	// ErrDuplicateLimit: two limits of a quota share a name.
	ErrDuplicateLimit = errors.New("limiter: duplicate limit name in quota")
	// ErrWouldExceedDeadline: Wait or Reserve would have to wait past the context's deadline.
	// Nothing was charged.
	ErrWouldExceedDeadline = errors.New("limiter: wait would pass the context deadline")
	// ErrUnavailable: Redis could not be reached and the failure policy is FailClosed.
	ErrUnavailable = errors.New("limiter: redis unavailable")
	// ErrExceedsLocalShare: Redis could not be reached, the failure policy is
	// FailLocal, and the cost is more than this process's share of the limit
	// (Options.LocalShare) can ever allow at once. The error also wraps
	// ErrUnavailable. Nothing was charged.
	ErrExceedsLocalShare = errors.New("limiter: cost exceeds the local share of the limit")
	// ErrBadReply: a script answered with a reply of the wrong shape.
	ErrBadReply = errors.New("limiter: malformed script reply")
	// ErrInvalidDuration: a negative or zero duration where a positive one is needed (Hold).
	ErrInvalidDuration = errors.New("limiter: invalid duration")
	// ErrLeaseAlgorithm: a Leaser over a SlidingWindow limit. The exact sliding log
	// cannot count units spent after they were charged without overshooting; lease
	// GCRA, SlidingWindowCounter or FixedWindow limits instead.
	ErrLeaseAlgorithm = errors.New("limiter: sliding window limits cannot be leased")
	// ErrNilClient: every call of a Limiter New was given a nil client.
	ErrNilClient = reach.ErrNilClient
	// ErrAuth: Redis refused the client's credentials (WRONGPASS, NOAUTH, a
	// missing password). A configuration error: returned whatever the
	// failure policy, never answered as if Redis were down.
	ErrAuth = reach.ErrAuth
	// ErrLeaserClosed: a decision asked of a Leaser after Close.
	ErrLeaserClosed = errors.New("limiter: leaser closed")
)

// MaxKeyLen is the longest key, quota name or limit name, in bytes.
const MaxKeyLen = keys.MaxPartLen
