package cache

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// Decoding arbitrary bytes (a corrupted or foreign value in Redis) is an
// error or a value, never a panic, for every codec and common destinations.
// JSON decodes as encoding/json does: an error where it gives one, else the
// same value.
func FuzzCodecDecode(f *testing.F) {
	for _, s := range []string{`{"price":45000.50}`, `9223372036854775807`, `[1,2,3]`, `"x"`, "\x81\xa1a\x01", "\xc1", "", "{", "null",
		`{"volume":21000000000000000000}`, `{"volume":1.5}`, `{"price":1e400}`, `{"PRICE":-0,"price":2}`, `{"price":1} x`,
		"{\"symbol\":\"a\xffb\\u00e9\\ud83d\\ude00\\ud800\"}", `{"in":{"tags":["a"],"m":{"k":1},"n":1.50,"raw":{"x":[1]},"p":{"tags":null},"q":"7"}}`,
		`[{"k":18446744073709551616}, -1.5e-7, true, null, "s"]`, `{"T":"2025-01-15T12:00:00.5+01:00","U":256}`,
		"\xddhYl\x1f\xae\xa8",                                // msgpack array32 declaring 1.7e9 elements: ran the decoder out of memory
		"\xdf\xff\xff\xff\xff\x01", "\xc6\xff\xff\xff\xff"} { // map32 and bin32 declaring 4e9
		f.Add([]byte(s))
	}
	type ticker struct {
		Symbol string  `json:"symbol" msgpack:"symbol"`
		Price  float64 `json:"price" msgpack:"price"`
		Volume int64   `json:"volume" msgpack:"volume"`
	}
	type inner struct {
		Tags []string       `json:"tags"`
		M    map[string]int `json:"m"`
		N    json.Number    `json:"n"`
		Raw  json.RawMessage
		P    *inner `json:"p"`
		Q    int    `json:"q,string"`
	}
	type outer struct {
		ticker
		In inner `json:"in"`
		U  uint8
		A  any
		T  time.Time // a json.Unmarshaler
	}
	dsts := []func() any{
		func() any { return new(ticker) },
		func() any { return new(outer) },
		func() any { return new(any) },
		func() any { return new(map[string]any) },
		func() any { return new([]any) },
		func() any { return new(map[string]float64) },
		func() any { return new(int64) },
		func() any { return new(string) },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range []Codec{JSON, Msgpack} {
			var a any
			_ = c.Unmarshal(data, &a)
			var tk ticker
			_ = c.Unmarshal(data, &tk)
			var m map[string]float64
			_ = c.Unmarshal(data, &m)
			var n int64
			_ = c.Unmarshal(data, &n)
		}
		// The cache decodes a reply with unmarshalString, whose strings may
		// refer to it: the same values as Unmarshal, with or without copies.
		decoders := map[string]func(data []byte, v any) error{
			"Unmarshal":                   JSON.Unmarshal,
			"unmarshalString":             func(d []byte, v any) error { return jsonCodec{}.unmarshalString(string(d), v) },
			"unmarshalString CopyStrings": func(d []byte, v any) error { return jsonCodec{copyStrings: true}.unmarshalString(string(d), v) },
		}
		for _, mk := range dsts {
			want := mk()
			werr := encodingJSON(data, want)
			for name, decode := range decoders {
				got := mk()
				err := decode(data, got)
				if (err == nil) != (werr == nil) {
					t.Fatalf("%s %q into %T: error %v, encoding/json's %v", name, data, got, err, werr)
				}
				if err == nil && !reflect.DeepEqual(got, want) {
					t.Fatalf("%s %q into %T: %#v, encoding/json gives %#v", name, data, got, got, want)
				}
			}
		}
	})
}

// encodingJSON decodes as JSON did with encoding/json alone: json.Number in an
// *any, *map[string]any or *[]any.
func encodingJSON(data []byte, v any) error {
	switch v.(type) {
	case *any, *map[string]any, *[]any:
		d := json.NewDecoder(bytes.NewReader(data))
		d.UseNumber()
		return d.Decode(v)
	}
	return json.Unmarshal(data, v)
}
