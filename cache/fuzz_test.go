package cache

import (
	"testing"
)

// Decoding arbitrary bytes (a corrupted or foreign value in Redis) is an
// error or a value, never a panic, for every codec and common destinations.
func FuzzCodecDecode(f *testing.F) {
	for _, s := range []string{`{"price":45000.50}`, `9223372036854775807`, `[1,2,3]`, `"x"`, "\x81\xa1a\x01", "\xc1", "", "{", "null"} {
		f.Add([]byte(s))
	}
	type ticker struct {
		Symbol string  `json:"symbol" msgpack:"symbol"`
		Price  float64 `json:"price" msgpack:"price"`
		Volume int64   `json:"volume" msgpack:"volume"`
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range []Codec{JSON{}, Msgpack{}} {
			var a any
			_ = c.Unmarshal(data, &a)
			var tk ticker
			_ = c.Unmarshal(data, &tk)
			var m map[string]float64
			_ = c.Unmarshal(data, &m)
			var n int64
			_ = c.Unmarshal(data, &n)
		}
	})
}
