package market

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Prices, sizes and volumes are float64. encoding/json writes the shortest
// decimal that reads back as the same float64, so a value round-trips through
// the cache bit for bit (45000.50 stays 45000.5). Decimal-exact arithmetic is the
// caller's business: convert at the edge.

// Ticker is the latest price summary of a symbol.
type Ticker struct {
	Symbol string    `json:"symbol" msgpack:"symbol"`
	Price  float64   `json:"price" msgpack:"price"`
	Volume float64   `json:"volume" msgpack:"volume"`
	High   float64   `json:"high" msgpack:"high"`
	Low    float64   `json:"low" msgpack:"low"`
	Bid    float64   `json:"bid" msgpack:"bid"`
	Ask    float64   `json:"ask" msgpack:"ask"`
	Time   time.Time `json:"time" msgpack:"time"`
}

// Level is one price level of an order book. In JSON it is the pair
// [price, size], as exchanges send it.
type Level struct {
	Price float64 `msgpack:"p"`
	Size  float64 `msgpack:"s"`
}

// MarshalJSON writes [price, size].
func (l Level) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]float64{l.Price, l.Size})
}

// UnmarshalJSON reads [price, size].
func (l *Level) UnmarshalJSON(b []byte) error {
	var a [2]float64
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	l.Price, l.Size = a[0], a[1]
	return nil
}

// OrderBook is a snapshot of a symbol's book: bids best (highest) first, asks
// best (lowest) first.
//
// Set rejects a book whose levels are out of order (ErrInvalid),
// since readers take Bids[0] and Asks[0] as the best prices. It accepts a crossed
// book (best bid at or above best ask): exchanges publish those during auctions
// and in fast markets, and the cache stores what the exchange said.
type OrderBook struct {
	Symbol string    `json:"symbol" msgpack:"symbol"`
	Bids   []Level   `json:"bids" msgpack:"bids"`
	Asks   []Level   `json:"asks" msgpack:"asks"`
	Time   time.Time `json:"time" msgpack:"time"`
}

// Trade is one executed trade.
type Trade struct {
	ID     string    `json:"id,omitempty" msgpack:"id"`
	Symbol string    `json:"symbol" msgpack:"symbol"`
	Price  float64   `json:"price" msgpack:"price"`
	Size   float64   `json:"size" msgpack:"size"`
	Side   string    `json:"side,omitempty" msgpack:"side"` // "buy" or "sell", the taker's side
	Time   time.Time `json:"time" msgpack:"time"`
}

// Candle is one OHLCV bar starting at Start.
type Candle struct {
	Start  time.Time `json:"start" msgpack:"start"`
	Open   float64   `json:"open" msgpack:"open"`
	High   float64   `json:"high" msgpack:"high"`
	Low    float64   `json:"low" msgpack:"low"`
	Close  float64   `json:"close" msgpack:"close"`
	Volume float64   `json:"volume" msgpack:"volume"`
}

// Signal is a strategy's trading signal for a symbol.
type Signal struct {
	Action     string    `json:"action" msgpack:"action"` // e.g. "BUY", "SELL", "HOLD"
	Price      float64   `json:"price" msgpack:"price"`
	Confidence float64   `json:"confidence" msgpack:"confidence"` // 0 to 1
	Strategy   string    `json:"strategy" msgpack:"strategy"`
	Symbol     string    `json:"symbol,omitempty" msgpack:"symbol"`
	Time       time.Time `json:"time" msgpack:"time"`
}

// Interval is a candle interval, as exchanges name it (Binance's set): "1s",
// "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
// "3d", "1w", "1M" (a calendar month). Another is ErrInvalid.
type Interval string

// intervals are the known candle intervals and their lengths; "1M", a calendar
// month, has none.
var intervals = map[Interval]time.Duration{
	"1s": time.Second,
	"1m": time.Minute, "3m": 3 * time.Minute, "5m": 5 * time.Minute, "15m": 15 * time.Minute,
	"30m": 30 * time.Minute, "1h": time.Hour, "2h": 2 * time.Hour, "4h": 4 * time.Hour,
	"6h": 6 * time.Hour, "8h": 8 * time.Hour, "12h": 12 * time.Hour, "1d": 24 * time.Hour,
	"3d": 72 * time.Hour, "1w": 7 * 24 * time.Hour, "1M": 0,
}

// allIntervals are the known candle intervals, in order of length.
var allIntervals = []Interval{"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"}

// duration returns the interval's length, or an ErrInvalid error. A calendar
// month ("1M") has no fixed length: it returns 31 days, the longest.
func (i Interval) duration() (time.Duration, error) {
	d, ok := intervals[i]
	if !ok {
		return 0, fmt.Errorf("market: interval %q: %w: unknown candle interval", string(i), ErrInvalid)
	}
	if i == "1M" {
		return 31 * 24 * time.Hour, nil
	}
	return d, nil
}

// monday is a Monday 00:00 UTC: weeks start there, as on exchanges.
var monday = time.Date(1970, 1, 5, 0, 0, 0, 0, time.UTC)

// next returns the start of the candle after the one open at t, on UTC
// boundaries as exchanges draw them: multiples of the interval since the Unix
// epoch, weeks from Monday 00:00, months from the 1st.
func (i Interval) next(t time.Time) (time.Time, error) {
	d, err := i.duration()
	if err != nil {
		return time.Time{}, err
	}
	t = t.UTC()
	switch i {
	case "1M":
		return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC), nil
	case "1w":
		return t.Add(d - t.Sub(monday)%d), nil
	}
	return t.Add(d - t.Sub(time.Unix(0, 0))%d), nil
}

// finite reports an error for a NaN or infinite price.
func finite(what string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("market: %s %v: %w: price is NaN or infinite", what, v, ErrInvalid)
	}
	return nil
}

// size reports an error for a NaN, infinite or negative size.
func size(what string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("market: %s %v: %w: size or volume is negative, NaN or infinite", what, v, ErrInvalid)
	}
	return nil
}

func (t *Ticker) validate() error {
	for _, p := range []struct {
		n string
		v float64
	}{{"price", t.Price}, {"high", t.High}, {"low", t.Low}, {"bid", t.Bid}, {"ask", t.Ask}} {
		if err := finite(p.n, p.v); err != nil {
			return err
		}
	}
	return size("volume", t.Volume)
}

func (b *OrderBook) validate() error {
	for side, levels := range [2][]Level{b.Bids, b.Asks} {
		for i, l := range levels {
			if err := finite("level price", l.Price); err != nil {
				return err
			}
			if err := size("level size", l.Size); err != nil {
				return err
			}
			if i > 0 {
				prev := levels[i-1].Price
				if (side == 0 && l.Price >= prev) || (side == 1 && l.Price <= prev) {
					return fmt.Errorf("market: %s level %d at %v after %v: %w: order book levels out of order", [2]string{"bid", "ask"}[side], i, l.Price, prev, ErrInvalid)
				}
			}
		}
	}
	return nil
}

func (t *Trade) validate() error {
	if err := finite("trade price", t.Price); err != nil {
		return err
	}
	return size("trade size", t.Size)
}

func (c *Candle) validate() error {
	for _, p := range []struct {
		n string
		v float64
	}{{"open", c.Open}, {"high", c.High}, {"low", c.Low}, {"close", c.Close}} {
		if err := finite(p.n, p.v); err != nil {
			return err
		}
	}
	return size("candle volume", c.Volume)
}

func (s *Signal) validate() error {
	if err := finite("signal price", s.Price); err != nil {
		return err
	}
	if math.IsNaN(s.Confidence) || s.Confidence < 0 || s.Confidence > 1 {
		return fmt.Errorf("market: confidence %v: %w: confidence outside [0, 1]", s.Confidence, ErrInvalid)
	}
	return nil
}
