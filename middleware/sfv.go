package middleware

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// A minimal parser of Structured Field Lists (RFC 9651, §4.2), enough to read
// the IETF RateLimit and RateLimit-Policy fields, and a serializer of the few
// types Handler writes. A field that does not parse is ignored as a whole, as
// RFC 9651 requires.

// sfToken is a Token bare item, kept apart from a String.
type sfToken string

// sfItem is a List member: a bare item (int64, float64, string, sfToken,
// []byte or bool) with parameters. Inner lists are parsed and marked inner.
type sfItem struct {
	value  any
	params []sfParam
	inner  bool
}

type sfParam struct {
	key   string
	value any
}

// param returns the value of the parameter key, if present.
func (it sfItem) param(key string) (any, bool) {
	for _, p := range it.params {
		if p.key == key {
			return p.value, true
		}
	}
	return nil, false
}

// name returns the item's value when it is a String or a Token.
func (it sfItem) name() (string, bool) {
	switch v := it.value.(type) {
	case string:
		return v, !it.inner
	case sfToken:
		return string(v), !it.inner
	}
	return "", false
}

var errSF = errors.New("invalid structured field")

type sfParser struct {
	s string
	i int
}

// parseSFList parses the field lines of a List field, joined with commas.
func parseSFList(lines []string) ([]sfItem, error) {
	p := &sfParser{s: strings.Join(lines, ",")}
	p.skipSP()
	var out []sfItem
	if p.eof() {
		return nil, nil
	}
	for {
		it, err := p.member()
		if err != nil {
			return nil, err
		}
		out = append(out, it)
		p.skipOWS()
		if p.eof() {
			return out, nil
		}
		if p.s[p.i] != ',' {
			return nil, p.fail("expected ','")
		}
		p.i++
		p.skipOWS()
		if p.eof() {
			return nil, p.fail("trailing ','")
		}
	}
}

func (p *sfParser) eof() bool { return p.i >= len(p.s) }

func (p *sfParser) fail(msg string) error {
	return errors.Join(errSF, errors.New(msg+" at offset "+strconv.Itoa(p.i)))
}

func (p *sfParser) skipSP() {
	for !p.eof() && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *sfParser) skipOWS() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *sfParser) member() (sfItem, error) {
	if !p.eof() && p.s[p.i] == '(' {
		p.i++
		for {
			p.skipSP()
			if p.eof() {
				return sfItem{}, p.fail("unterminated inner list")
			}
			if p.s[p.i] == ')' {
				p.i++
				break
			}
			if _, err := p.item(); err != nil {
				return sfItem{}, err
			}
			if !p.eof() && p.s[p.i] != ' ' && p.s[p.i] != ')' {
				return sfItem{}, p.fail("bad inner list")
			}
		}
		params, err := p.params()
		return sfItem{inner: true, params: params}, err
	}
	return p.item()
}

func (p *sfParser) item() (sfItem, error) {
	v, err := p.bare()
	if err != nil {
		return sfItem{}, err
	}
	params, err := p.params()
	return sfItem{value: v, params: params}, err
}

func (p *sfParser) params() ([]sfParam, error) {
	var out []sfParam
	for !p.eof() && p.s[p.i] == ';' {
		p.i++
		p.skipSP()
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		var v any = true
		if !p.eof() && p.s[p.i] == '=' {
			p.i++
			if v, err = p.bare(); err != nil {
				return nil, err
			}
		}
		replaced := false
		for j := range out {
			if out[j].key == k { // a later duplicate overrides (RFC 9651 §4.2.3.2)
				out[j].value, replaced = v, true
			}
		}
		if !replaced {
			out = append(out, sfParam{k, v})
		}
	}
	return out, nil
}

func (p *sfParser) key() (string, error) {
	start := p.i
	if p.eof() || !(isLCAlpha(p.s[p.i]) || p.s[p.i] == '*') {
		return "", p.fail("bad key")
	}
	for !p.eof() {
		c := p.s[p.i]
		if !(isLCAlpha(c) || isDigit(c) || c == '_' || c == '-' || c == '.' || c == '*') {
			break
		}
		p.i++
	}
	return p.s[start:p.i], nil
}

func (p *sfParser) bare() (any, error) {
	if p.eof() {
		return nil, p.fail("missing item")
	}
	c := p.s[p.i]
	switch {
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		return p.str()
	case c == '*' || isAlpha(c):
		return p.token(), nil
	case c == ':':
		return p.bytes()
	case c == '?':
		if p.i+1 < len(p.s) && (p.s[p.i+1] == '0' || p.s[p.i+1] == '1') {
			p.i += 2
			return p.s[p.i-1] == '1', nil
		}
		return nil, p.fail("bad boolean")
	}
	return nil, p.fail("unknown item type")
}

func (p *sfParser) number() (any, error) {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	digits, dot := 0, -1
	for !p.eof() {
		c := p.s[p.i]
		if isDigit(c) {
			digits++
		} else if c == '.' && dot < 0 {
			if digits > 12 {
				return nil, p.fail("decimal too long")
			}
			dot = digits
		} else {
			break
		}
		p.i++
		if digits > 15 {
			return nil, p.fail("number too long")
		}
	}
	if digits == 0 || dot == digits {
		return nil, p.fail("bad number")
	}
	s := p.s[start:p.i]
	if dot < 0 {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, p.fail("bad integer")
		}
		return n, nil
	}
	if digits-dot > 3 {
		return nil, p.fail("decimal fraction too long")
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, p.fail("bad decimal")
	}
	return f, nil
}

func (p *sfParser) str() (any, error) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.eof() {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '\\':
			if p.eof() || (p.s[p.i] != '"' && p.s[p.i] != '\\') {
				return nil, p.fail("bad escape")
			}
			b.WriteByte(p.s[p.i])
			p.i++
		case c == '"':
			return b.String(), nil
		case c < 0x20 || c > 0x7e:
			return nil, p.fail("bad string character")
		default:
			b.WriteByte(c)
		}
	}
	return nil, p.fail("unterminated string")
}

func (p *sfParser) token() sfToken {
	start := p.i
	p.i++
	for !p.eof() && (isTChar(p.s[p.i]) || p.s[p.i] == ':' || p.s[p.i] == '/') {
		p.i++
	}
	return sfToken(p.s[start:p.i])
}

func (p *sfParser) bytes() (any, error) {
	p.i++
	end := strings.IndexByte(p.s[p.i:], ':')
	if end < 0 {
		return nil, p.fail("unterminated byte sequence")
	}
	b, err := base64.StdEncoding.DecodeString(p.s[p.i : p.i+end])
	if err != nil {
		return nil, p.fail("bad base64")
	}
	p.i += end + 1
	return b, nil
}

func isDigit(c byte) bool   { return c >= '0' && c <= '9' }
func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || c >= 'A' && c <= 'Z' }

func isTChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// sfString serializes s as a String; bytes outside printable ASCII, which a
// String cannot hold, become '?'.
func sfString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// sfInt serializes n as an Integer, clamped to the 15 digits allowed.
func sfInt(n int64) string {
	const most = 999_999_999_999_999
	return strconv.FormatInt(min(max(n, -most), most), 10)
}
