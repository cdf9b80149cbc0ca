package audit

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	"github.com/auditarch/auditarch/audit/raw"
)

// Record is one kernel audit record exactly as received (package raw).
type Record = raw.Record

// Header is the stamp at the start of every record. Serial is the kernel's 32-bit event serial: records of
// one event share it; it wraps from 2^32-1 to 1 (the kernel skips 0).
type Header struct {
	Sec    int64
	Msec   int32
	Serial uint32
}

// ErrMalformed is wrapped by every error about a record whose text cannot be tokenized.
var ErrMalformed = errors.New("malformed audit record")

// ParseHeader reads the "audit(SECONDS.MILLIS:SERIAL): " stamp and returns it with the offset of the body.
// It is on the hot path: no allocation, no regular expression.
func ParseHeader(text []byte) (Header, int, error) {
	var h Header
	const prefix = "audit("
	if len(text) < len(prefix) || string(text[:len(prefix)]) != prefix {
		return h, 0, fmt.Errorf("%w: no audit( stamp", ErrMalformed)
	}
	i := len(prefix)
	sec, i, ok := digits(text, i, 19)
	// Fix: 19 digits can exceed int64 (9223372036854775808 became a negative Sec); reject the overflow.
	if !ok || sec > math.MaxInt64 || i >= len(text) || text[i] != '.' {
		return h, 0, fmt.Errorf("%w: bad seconds in stamp", ErrMalformed)
	}
	ms, i, ok := digits(text, i+1, 3)
	if !ok || i >= len(text) || text[i] != ':' {
		return h, 0, fmt.Errorf("%w: bad milliseconds in stamp", ErrMalformed)
	}
	ser, i, ok := digits(text, i+1, 10)
	if !ok || ser > 1<<32-1 || i >= len(text) || text[i] != ')' {
		return h, 0, fmt.Errorf("%w: bad serial in stamp", ErrMalformed)
	}
	i++
	if i < len(text) && text[i] == ':' {
		i++
	}
	for i < len(text) && text[i] == ' ' {
		i++
	}
	h.Sec, h.Msec, h.Serial = int64(sec), int32(ms), uint32(ser)
	return h, i, nil
}

// digits parses 1..max decimal digits at text[i:].
func digits(text []byte, i, max int) (uint64, int, bool) {
	var v uint64
	start := i
	for i < len(text) && text[i] >= '0' && text[i] <= '9' {
		if i-start == max {
			return 0, i, false
		}
		v = v*10 + uint64(text[i]-'0')
		i++
	}
	return v, i, i > start
}

// Fields iterates over the key=value pairs of a record body. Values are returned raw: quoted values keep
// their quotes, so callers can tell a quoted string from a hex-encoded one (see Value). It allocates nothing.
//
//	for f := NewFields(body); f.Next(); { use(f.Key, f.Value) }
type Fields struct {
	b     []byte
	Key   []byte
	Value []byte
}

// NewFields starts an iteration over body.
func NewFields(body []byte) Fields { return Fields{b: body} }

// Next advances to the next pair and reports whether there was one. Tokens without '=' are skipped.
func (f *Fields) Next() bool {
	b := f.b
	for {
		for len(b) > 0 && isFieldSep(b[0]) {
			b = b[1:]
		}
		if len(b) == 0 {
			f.b = b
			return false
		}
		// key runs to '=' or a separator.
		// Fix: stop at '\n' and NUL too (was only ' '), the same separators skipped between pairs.
		k := 0
		for k < len(b) && b[k] != '=' && !isFieldSep(b[k]) {
			k++
		}
		if k == len(b) || isFieldSep(b[k]) {
			b = b[k:]
			continue
		}
		f.Key = b[:k]
		b = b[k+1:]
		end := 0
		switch {
		case len(b) > 0 && b[0] == '"':
			if j := bytes.IndexByte(b[1:], '"'); j >= 0 {
				end = j + 2
			} else {
				end = len(b)
			}
		case len(b) > 0 && b[0] == '\'':
			// msg='...' in user and config records holds nested pairs; the value is the whole span.
			if j := bytes.IndexByte(b[1:], '\''); j >= 0 {
				end = j + 2
			} else {
				end = len(b)
			}
		default:
			// Fix: an unquoted value also ends at '\n' or NUL (was only ' '): a record ending "res=1\x00"
			// gave the value "1\x00". The kernel never writes either byte raw inside a value.
			for end < len(b) && !isFieldSep(b[end]) {
				end++
			}
		}
		f.Value = b[:end]
		f.b = b[end:]
		return true
	}
}

// isFieldSep reports whether c separates pairs: space, newline, or NUL (trailing NULs and newlines occur
// after the last pair).
func isFieldSep(c byte) bool { return c <= ' ' && (c == ' ' || c == '\n' || c == 0) } // one compare for most bytes

// Lookup returns the raw value of the first field named key, scanning body from the start.
func Lookup(body []byte, key string) ([]byte, bool) {
	for f := NewFields(body); f.Next(); {
		if string(f.Key) == key {
			return f.Value, true
		}
	}
	return nil, false
}
