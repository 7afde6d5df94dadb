package cache

import (
	"errors"
	"fmt"

	"github.com/redquota/redquota/internal/keys"
	"github.com/redquota/redquota/internal/reach"
)

// Errors a caller can branch on with errors.Is. Every error returned is
// wrapped with what was at fault (a key, a tag, a TTL); the message says which.
var (
	// ErrInvalid is returned, before anything is sent to Redis, for bad input:
	// an empty key, group, tag, index or pattern; one longer than 512 bytes;
	// a TTL below one millisecond that is not NoExpiry; a destination that
	// is nil or not a pointer; an encoded value larger than
	// Options.MaxValueSize; tags on a Cache without a group; a nil load
	// function; and, from every call, a nil client given to New.
	ErrInvalid = errors.New("invalid argument")
	// ErrCodec is returned when the codec cannot encode a value, or a stored
	// value cannot be decoded into the destination; it wraps the codec's
	// own error.
	ErrCodec = errors.New("codec failed")
	// ErrAuth is returned, wrapping Redis's reply, when Redis refuses the
	// client's credentials (WRONGPASS, NOAUTH, a missing password) or its ACL
	// user's permissions (NOPERM).
	ErrAuth = reach.ErrAuth
	// ErrCircuitOpen is returned, at once and without a Redis call, while the
	// circuit breaker is open after repeated Redis failures. The error also
	// wraps the last of those failures (a refused connection, a timeout...).
	ErrCircuitOpen = errors.New("cache: circuit breaker open, Redis calls suspended")
)

// What an ErrInvalid or ErrCodec is about, wrapped beside it so that the
// telemetry classes of TELEMETRY_NAMES.md (encode, decode, value_too_large)
// stay apart; not part of the API.
var (
	errEncode   = errors.New("cannot encode value")
	errDecode   = errors.New("cannot decode value")
	errTooLarge = errors.New("encoded value larger than MaxValueSize")
	errBadTTL   = errors.New("TTL must be at least 1ms, or NoExpiry")
	errBadDst   = errors.New("destination is nil or not a pointer")
	errNoGroup  = errors.New("tags need a group: use Group or Options.Group")
	errEmptyTag = errors.New("empty tag")
	errNilLoad  = errors.New("nil load function")
)

// errNilClient is the error of every call of a Cache New was given a nil
// client: bad input, and reach.ErrNilClient, the limiter's too.
var errNilClient = fmt.Errorf("cache: %w: %w", ErrInvalid, reach.ErrNilClient)

// maxKeyLen is the longest key, group, tag or index name, in bytes (512).
const maxKeyLen = keys.MaxPartLen

// invalid wraps why, an error of bad input, with ErrInvalid and what: "key
// \"k\"", "TTL 0s"...
func invalid(what string, why error) error {
	if what == "" {
		return fmt.Errorf("cache: %w: %w", ErrInvalid, why)
	}
	return fmt.Errorf("cache: %s: %w: %w", what, ErrInvalid, why)
}
