package cache

import (
	"bytes"
	"encoding/json"

	gojson "github.com/goccy/go-json"
	"github.com/vmihailenco/msgpack/v5"
)

// A Codec turns values into bytes and back. Implementations must be safe for
// concurrent use.
//
// The cache gives Unmarshal the bytes of a reply read for that call alone,
// which nothing else refers to afterwards: a decoded value may keep
// references into data.
//
// Whatever the codec, []byte and string values bypass it: Set stores their bytes
// as they are, and Get into a *[]byte or *string returns the stored bytes as they
// are. Read such values back into a *[]byte or *string.
type Codec interface {
	// Marshal encodes v.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into v, a non-nil pointer.
	Unmarshal(data []byte, v any) error
}

// The codecs the cache offers. Options.Codec takes either, or a Codec of the
// caller's own.
var (
	// JSON is the default Codec. It encodes with encoding/json, so the stored
	// bytes are encoding/json's, and decodes with github.com/goccy/go-json,
	// which follows encoding/json's rules (struct tags, case-insensitive field
	// names, json.Unmarshaler, json.Number and json.RawMessage, U+FFFD for
	// invalid UTF-8, an error for a number that overflows its destination, the
	// nesting limit) and is several times faster: with encoding/json, decoding
	// ten values cost about as much as the MGET that read them.
	// FuzzCodecDecode checks it against encoding/json.
	//
	// Numbers round-trip exactly: into a typed destination (float64, int64, a
	// struct field) as that type, and into an *any, *map[string]any or *[]any
	// as json.Number, so 9223372036854775807 does not become a float. An any
	// nested inside a struct field gets float64, as with encoding/json; give
	// such fields a type, or json.Number. A decoding error is go-json's, not
	// encoding/json's type: branch on ErrCodec, which wraps it.
	//
	// A value the cache reads from Redis is decoded without copying its
	// strings: a string field without escapes refers to the bytes read, which
	// nothing ever writes, so decoding a ticker or an order book of string
	// prices allocates for none of them. A decoded string then keeps alive the
	// whole value it came from (for a 200-byte ticker, 200 bytes), as with
	// sonic. Set Options.CopyStrings to copy each string instead.
	// JSON.Unmarshal, called directly, always copies: its caller may reuse
	// data.
	JSON Codec = jsonCodec{}
	// Msgpack is a compact binary Codec, github.com/vmihailenco/msgpack/v5.
	// Integers keep their width (int64 max round-trips into an any) and
	// floats are stored as IEEE 754, so they round-trip exactly too. A value
	// is walked once before it is decoded: a corrupt length prefix (an array
	// "of 1.7 billion" elements in 7 bytes) would make the decoder allocate
	// for the declared length before finding the data missing, and take the
	// process down; the walk allocates nothing per declared element and fails
	// at the end of the data instead.
	Msgpack Codec = msgpackCodec{}
)

// jsonCodec is JSON; copyStrings is Options.CopyStrings.
type jsonCodec struct{ copyStrings bool }

func (jsonCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (jsonCodec) Unmarshal(data []byte, v any) error {
	switch v.(type) {
	case *any, *map[string]any, *[]any:
		d := gojson.NewDecoder(bytes.NewReader(data))
		d.UseNumber()
		return d.Decode(v)
	}
	return gojson.Unmarshal(data, v)
}

// noCopy is the option list of unmarshalString, made once: a slice built
// for each call would be an allocation.
var noCopy = []gojson.DecodeOptionFunc{gojson.DecodeNoCopyString()}

// unmarshalString decodes s, a reply from Redis, where it is: s is
// immutable, and go-json never writes its input (it scans a copy in a pooled
// buffer). Decoded strings refer to s unless j.copyStrings.
func (j jsonCodec) unmarshalString(s string, v any) error {
	data := replyBytes(s)
	switch v.(type) {
	case *any, *map[string]any, *[]any:
		return j.Unmarshal(data, v)
	}
	if j.copyStrings {
		return gojson.Unmarshal(data, v)
	}
	return gojson.UnmarshalWithOption(data, v, noCopy...)
}

// msgpackCodec is Msgpack.
type msgpackCodec struct{}

func (msgpackCodec) Marshal(v any) ([]byte, error) { return msgpack.Marshal(v) }

func (msgpackCodec) Unmarshal(data []byte, v any) error {
	if err := msgpack.NewDecoder(bytes.NewReader(data)).Skip(); err != nil {
		return err
	}
	return msgpack.Unmarshal(data, v)
}
