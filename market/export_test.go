package market

import "time"

// SetClock makes m read the time of candle boundaries from now.
func SetClock(m *Market, now func() time.Time) { m.now = now }
