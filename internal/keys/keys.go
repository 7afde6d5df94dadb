// Package keys builds the Redis keys redquota uses.
//
// Every key has the shape <prefix>:{<tag>}:<kind>[:<name>], but for the
// cache's values, <prefix>:v:{<tag>}[:<name>]: their one prefix is what the
// near cache's tracking watches, and no other key starts with it. The tag is the part
// Redis Cluster hashes, so every key of one decision shares it and lands in one
// slot. User-supplied parts are escaped so that '{', '}', ':' or '%' in them can
// neither move a key to another slot nor make two different inputs collide.
package keys

import (
	"errors"
	"fmt"
	"strings"
)

// MaxPartLen is the longest user-supplied key part, in bytes, before escaping.
const MaxPartLen = 512

// ErrEmpty is returned for an empty user-supplied key part.
var ErrEmpty = errors.New("empty key")

// ErrTooLong is returned for a key part longer than MaxPartLen bytes.
var ErrTooLong = fmt.Errorf("key longer than %d bytes", MaxPartLen)

// Check reports whether s is usable as a key part.
func Check(s string) error {
	if s == "" {
		return ErrEmpty
	}
	if len(s) > MaxPartLen {
		return ErrTooLong
	}
	return nil
}

// needsEscape reports whether c must be percent-encoded.
func needsEscape(c byte) bool {
	return c == '{' || c == '}' || c == ':' || c == '%'
}

// Escape percent-encodes '{', '}', ':' and '%' so the result can sit inside a
// hash tag or between separators. It is injective and allocates only when s
// holds a byte that needs escaping.
func Escape(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Unescape reverses Escape. It returns an error for malformed input.
func Unescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("keys: truncated escape in %q", s)
		}
		v, ok1 := unhex(s[i+1])
		w, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("keys: bad escape in %q", s)
		}
		b.WriteByte(v<<4 | w)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Tag returns "<prefix>:{<escaped tag>}", the common head of every key of one slot.
func Tag(prefix, tag string) string {
	return prefix + ":{" + Escape(tag) + "}"
}

// Join appends ":"-separated, escaped parts to a head built by Tag.
func Join(head string, parts ...string) string {
	n := len(head)
	for _, p := range parts {
		n += 1 + len(p) + 8
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(head)
	for _, p := range parts {
		b.WriteByte(':')
		b.WriteString(Escape(p))
	}
	return b.String()
}
