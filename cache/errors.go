package cache

import (
	"errors"

	"github.com/redquota/redquota/internal/keys"
	"github.com/redquota/redquota/internal/reach"
)

// Errors for bad input. They are returned, wrapped with the key or tag at fault,
// before anything is sent to Redis; test for them with errors.Is.
var (
	// ErrEmptyKey is returned for an empty key, group, index or pattern.
	ErrEmptyKey = keys.ErrEmpty
	// ErrKeyTooLong is returned for a key, group, tag or index longer than MaxKeyLen bytes.
	ErrKeyTooLong = keys.ErrTooLong
	// ErrEmptyTag is returned for an empty tag.
	ErrEmptyTag = errors.New("empty tag")
	// ErrInvalidDst is returned for a destination that is nil or not a pointer
	// (or, for GetMany, not a map with string keys).
	ErrInvalidDst = errors.New("destination is nil or not a pointer")
	// ErrValueTooLarge is returned for a value whose encoding exceeds Options.MaxValueSize.
	ErrValueTooLarge = errors.New("encoded value larger than MaxValueSize")
	// ErrBadTTL is returned for a TTL below one millisecond that is not NoExpiry.
	ErrBadTTL = errors.New("TTL must be at least 1ms, or NoExpiry")
	// ErrEncode is returned when the codec cannot encode a value.
	ErrEncode = errors.New("cannot encode value")
	// ErrDecode is returned when a stored value cannot be decoded into the destination.
	ErrDecode = errors.New("cannot decode value")
	// ErrNilClient is returned by every call of a Cache New was given a nil client.
	ErrNilClient = reach.ErrNilClient
	// ErrAuth is returned, wrapping Redis's reply, when Redis refuses the
	// client's credentials (WRONGPASS, NOAUTH, a missing password).
	ErrAuth = reach.ErrAuth
	// ErrNoGroup is returned by tag operations on a Cache that has no group.
	ErrNoGroup = errors.New("tags need a group: use Group or Options.Group")
)

// ErrCircuitOpen is returned, at once and without a Redis call, while the circuit
// breaker is open after repeated Redis failures. The error also wraps the last
// of those failures (a refused connection, a timeout...).
var ErrCircuitOpen = errors.New("cache: circuit breaker open, Redis calls suspended")

// MaxKeyLen is the longest key, group, tag or index name, in bytes.
const MaxKeyLen = keys.MaxPartLen
