package nixjson

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// Dump returns v printed as nlohmann's dump() does: compact, keys sorted,
// strings escaped (control characters as \uXXXX, other bytes raw). A
// string that is not valid UTF-8 is an error, as in nlohmann.
func Dump(v *Value) ([]byte, error) { return v.AppendDump(nil) }

// AppendDump appends Dump(v) to b.
func (v *Value) AppendDump(b []byte) ([]byte, error) {
	var err error
	switch v.Kind {
	case Null:
		b = append(b, "null"...)
	case Bool:
		b = strconv.AppendBool(b, v.Bool)
	case Int:
		b = strconv.AppendInt(b, v.Int, 10)
	case Uint:
		b = strconv.AppendUint(b, v.Uint, 10)
	case Float:
		b = AppendFloat(b, v.Float)
	case String:
		b, err = appendString(b, v.Str)
	case Array:
		b = append(b, '[')
		for i, e := range v.Elems {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = e.AppendDump(b); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	case Object:
		b = append(b, '{')
		for i, k := range v.SortedKeys() {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendString(b, k); err != nil {
				return nil, err
			}
			b = append(b, ':')
			if b, err = v.Keys[k].AppendDump(b); err != nil {
				return nil, err
			}
		}
		b = append(b, '}')
	default:
		return nil, fmt.Errorf("nixjson: value of unknown kind %d", v.Kind)
	}
	return b, err
}

func appendString(b []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("[json.exception.type_error.316] invalid UTF-8 byte in string %.40q", s)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b = append(b, `\"`...)
		case '\\':
			b = append(b, `\\`...)
		case '\b':
			b = append(b, `\b`...)
		case '\f':
			b = append(b, `\f`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		default:
			if c < 0x20 {
				const hex = "0123456789abcdef"
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			} else {
				b = append(b, c)
			}
		}
	}
	return append(b, '"'), nil
}

// AppendFloat appends f as nlohmann's to_chars prints a double: the
// shortest digits that read back as f, in plain notation (with ".0" when
// integral) for decimal exponents -4 < n <= 15, else d.ddde±XX.
// Non-finite numbers print as null.
func AppendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	if math.Signbit(f) {
		b = append(b, '-')
		f = -f
	}
	if f == 0 {
		return append(b, "0.0"...)
	}
	// Shortest round-trip digits and exponent: "d.ddddde±XX".
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mant, exp := e, 0
	for i := 0; i < len(e); i++ {
		if e[i] == 'e' {
			mant = e[:i]
			exp, _ = strconv.Atoi(e[i+1:])
			break
		}
	}
	digits := make([]byte, 0, 17)
	for i := 0; i < len(mant); i++ {
		if mant[i] != '.' {
			digits = append(digits, mant[i])
		}
	}
	k := len(digits)
	n := exp + 1 // position of the decimal point relative to the digits
	const minExp, maxExp = -4, 15
	switch {
	case k <= n && n <= maxExp:
		b = append(b, digits...)
		for range n - k {
			b = append(b, '0')
		}
		return append(b, '.', '0')
	case 0 < n && n <= maxExp:
		b = append(b, digits[:n]...)
		b = append(b, '.')
		return append(b, digits[n:]...)
	case minExp < n && n <= 0:
		b = append(b, '0', '.')
		for range -n {
			b = append(b, '0')
		}
		return append(b, digits...)
	}
	b = append(b, digits[0])
	if k > 1 {
		b = append(b, '.')
		b = append(b, digits[1:]...)
	}
	b = append(b, 'e')
	x := n - 1
	if x < 0 {
		b = append(b, '-')
		x = -x
	} else {
		b = append(b, '+')
	}
	if x < 10 {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, int64(x), 10)
}
