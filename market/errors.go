package market

import (
	"errors"

	"github.com/redquota/redquota/cache"
)

// Errors for bad input, returned before anything is sent to Redis; test for
// them with errors.Is.
var (
	// ErrEmptyName is returned for an empty exchange, symbol, strategy or
	// endpoint. It is cache.ErrEmptyKey.
	ErrEmptyName = cache.ErrEmptyKey
	// ErrUnknownInterval is returned for a candle interval not in Intervals().
	ErrUnknownInterval = errors.New("unknown candle interval")
	// ErrBadPrice is returned for a NaN or infinite price.
	ErrBadPrice = errors.New("price is NaN or infinite")
	// ErrBadSize is returned for a negative, NaN or infinite size or volume.
	ErrBadSize = errors.New("size or volume is negative, NaN or infinite")
	// ErrUnsortedBook is returned for an order book whose bids are not in
	// strictly falling or asks in strictly rising price order.
	ErrUnsortedBook = errors.New("order book levels out of order")
	// ErrBadConfidence is returned for a signal confidence outside [0, 1].
	ErrBadConfidence = errors.New("confidence outside [0, 1]")
)
