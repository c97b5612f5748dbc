// Package nixjson reads and writes JSON as Nix 2.8 does through its JSON
// library (nlohmann::json): objects keep their keys sorted by bytes, a
// repeated key keeps its last value, numbers stay signed, unsigned or
// floating-point as written, strings must be valid UTF-8, and Dump prints
// compactly with nlohmann's number and escape rules. Nix writes
// .attrs.json this way, so silo must too, byte for byte.
//
// Invariant: Dump(Parse(Dump(v))) == Dump(v); Parse never recurses deeper
// than MaxDepth (nlohmann has no limit; silo refuses instead of crashing).
package nixjson

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of arrays and objects Parse accepts.
const MaxDepth = 10000

// ErrSyntax is wrapped by parse errors.
var ErrSyntax = errors.New("invalid JSON")

// Kind is the type of a Value.
type Kind uint8

const (
	Null Kind = iota
	Bool
	Int   // signed integer (negative literals)
	Uint  // unsigned integer (non-negative literals)
	Float // any literal with a fraction or exponent, or too large an integer
	String
	Array
	Object
)

var kindNames = [...]string{"null", "boolean", "number", "number", "number", "string", "array", "object"}

// String names the kind as nlohmann's type_name does.
func (k Kind) String() string { return kindNames[k] }

// Value is one JSON value. The zero Value is null.
type Value struct {
	Kind  Kind
	Bool  bool
	Int   int64
	Uint  uint64
	Float float64
	Str   string
	Elems []*Value          // Array
	Keys  map[string]*Value // Object
}

// NewString returns a string value.
func NewString(s string) *Value { return &Value{Kind: String, Str: s} }

// NewObject returns an empty object.
func NewObject() *Value { return &Value{Kind: Object, Keys: map[string]*Value{}} }

// NewArray returns an array of vs.
func NewArray(vs ...*Value) *Value { return &Value{Kind: Array, Elems: vs} }

// Find returns the member key of an object, or nil (also for non-objects,
// as nlohmann's find returns end()).
func (v *Value) Find(key string) *Value {
	if v == nil || v.Kind != Object {
		return nil
	}
	return v.Keys[key]
}

// Set sets member key of an object.
func (v *Value) Set(key string, val *Value) { v.Keys[key] = val }

// SortedKeys returns an object's keys in the order nlohmann iterates them.
func (v *Value) SortedKeys() []string {
	keys := make([]string, 0, len(v.Keys))
	for k := range v.Keys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Iter returns what iterating v in C++ visits: an array's elements, an
// object's values in key order, nothing for null, v itself otherwise.
func (v *Value) Iter() []*Value {
	switch v.Kind {
	case Array:
		return v.Elems
	case Object:
		out := make([]*Value, 0, len(v.Keys))
		for _, k := range v.SortedKeys() {
			out = append(out, v.Keys[k])
		}
		return out
	case Null:
		return nil
	}
	return []*Value{v}
}

// IsNumber reports whether v is any kind of number.
func (v *Value) IsNumber() bool { return v.Kind == Int || v.Kind == Uint || v.Kind == Float }

// GetString is nlohmann's get<std::string>().
func (v *Value) GetString() (string, error) {
	if v.Kind != String {
		return "", fmt.Errorf("[json.exception.type_error.302] type must be string, but is %s", v.Kind)
	}
	return v.Str, nil
}

// GetUint64 is nlohmann's get<uint64_t>(): any number or Boolean, cast.
func (v *Value) GetUint64() (uint64, error) {
	switch v.Kind {
	case Uint:
		return v.Uint, nil
	case Int:
		return uint64(v.Int), nil
	case Float:
		return floatToUint64(v.Float), nil
	case Bool:
		if v.Bool {
			return 1, nil
		}
		return 0, nil
	}
	return 0, fmt.Errorf("[json.exception.type_error.302] type must be number, but is %s", v.Kind)
}

func floatToUint64(f float64) uint64 {
	// C++ leaves out-of-range conversions undefined; x86-64 gives these.
	switch {
	case f != f || f <= -1:
		if f > math.MinInt64 {
			return uint64(int64(f))
		}
		return 1 << 63
	case f >= 1<<64:
		return 0
	case f >= 1<<63:
		return uint64(f)
	}
	return uint64(f)
}

// Parse parses data as nlohmann::json::parse does (strict: one value,
// nothing but whitespace after it).
func Parse(data []byte) (*Value, error) {
	p := parser{s: data}
	p.ws()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.s) {
		return nil, p.errorf("expected end of input")
	}
	return v, nil
}

type parser struct {
	s []byte
	i int
}

func (p *parser) errorf(format string, a ...any) error {
	return fmt.Errorf("%w at byte %d: %s", ErrSyntax, p.i, fmt.Sprintf(format, a...))
}

func (p *parser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) lit(word string) bool {
	if len(p.s)-p.i >= len(word) && string(p.s[p.i:p.i+len(word)]) == word {
		p.i += len(word)
		return true
	}
	return false
}

func (p *parser) value(depth int) (*Value, error) {
	if p.i >= len(p.s) {
		return nil, p.errorf("unexpected end of input")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		return NewString(s), nil
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	case p.lit("true"):
		return &Value{Kind: Bool, Bool: true}, nil
	case p.lit("false"):
		return &Value{Kind: Bool}, nil
	case p.lit("null"):
		return &Value{}, nil
	}
	return nil, p.errorf("unexpected character %q", p.s[p.i])
}

func (p *parser) array(depth int) (*Value, error) {
	if depth > MaxDepth {
		return nil, p.errorf("nested deeper than %d", MaxDepth)
	}
	p.i++
	v := &Value{Kind: Array, Elems: []*Value{}}
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return v, nil
	}
	for {
		p.ws()
		e, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		v.Elems = append(v.Elems, e)
		p.ws()
		if p.i >= len(p.s) {
			return nil, p.errorf("unexpected end of input in array")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return v, nil
		default:
			return nil, p.errorf("expected ',' or ']'")
		}
	}
}

func (p *parser) object(depth int) (*Value, error) {
	if depth > MaxDepth {
		return nil, p.errorf("nested deeper than %d", MaxDepth)
	}
	p.i++
	v := NewObject()
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return v, nil
	}
	for {
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return nil, p.errorf("expected an object key")
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return nil, p.errorf("expected ':'")
		}
		p.i++
		p.ws()
		e, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		v.Keys[k] = e // a repeated key keeps its last value
		p.ws()
		if p.i >= len(p.s) {
			return nil, p.errorf("unexpected end of input in object")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return v, nil
		default:
			return nil, p.errorf("expected ',' or '}'")
		}
	}
}

func (p *parser) number() (*Value, error) {
	start := p.i
	isFloat := false
	digits := func() int {
		n := 0
		for p.i < len(p.s) && '0' <= p.s[p.i] && p.s[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.s[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.s) && p.s[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return nil, p.errorf("invalid number")
	}
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		isFloat = true
		if digits() == 0 {
			return nil, p.errorf("invalid number: no digits after '.'")
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		isFloat = true
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, p.errorf("invalid number: no digits in exponent")
		}
	}
	lit := string(p.s[start:p.i])
	if !isFloat {
		if lit[0] == '-' {
			if n, err := strconv.ParseInt(lit, 10, 64); err == nil {
				return &Value{Kind: Int, Int: n}, nil
			}
		} else if n, err := strconv.ParseUint(lit, 10, 64); err == nil {
			return &Value{Kind: Uint, Uint: n}, nil
		}
	}
	f, err := strconv.ParseFloat(lit, 64)
	if math.IsInf(f, 0) {
		return nil, p.errorf("number overflow parsing '%s'", lit)
	}
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil, p.errorf("invalid number %q", lit)
	}
	return &Value{Kind: Float, Float: f}, nil
}

func (p *parser) str() (string, error) {
	p.i++ // the opening quote
	var b []byte
	for {
		if p.i >= len(p.s) {
			return "", p.errorf("unterminated string")
		}
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return string(b), nil
		case c < 0x20:
			return "", p.errorf("control character U+%04X must be escaped", c)
		case c == '\\':
			r, err := p.escape()
			if err != nil {
				return "", err
			}
			b = utf8.AppendRune(b, r)
		case c < utf8.RuneSelf:
			b = append(b, c)
			p.i++
		default:
			r, n := utf8.DecodeRune(p.s[p.i:])
			if r == utf8.RuneError && n <= 1 {
				return "", p.errorf("invalid string: ill-formed UTF-8 byte")
			}
			b = append(b, p.s[p.i:p.i+n]...)
			p.i += n
		}
	}
}

func (p *parser) escape() (rune, error) {
	p.i++
	if p.i >= len(p.s) {
		return 0, p.errorf("unterminated escape")
	}
	c := p.s[p.i]
	p.i++
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, err := p.hex4()
		if err != nil {
			return 0, err
		}
		switch {
		case 0xD800 <= r && r <= 0xDBFF:
			if !p.lit(`\u`) {
				return 0, p.errorf("surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF")
			}
			lo, err := p.hex4()
			if err != nil {
				return 0, err
			}
			if lo < 0xDC00 || lo > 0xDFFF {
				return 0, p.errorf("surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF")
			}
			return 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00), nil
		case 0xDC00 <= r && r <= 0xDFFF:
			return 0, p.errorf("surrogate U+DC00..U+DFFF must follow U+D800..U+DBFF")
		}
		return r, nil
	}
	return 0, p.errorf("invalid escape \\%c", c)
}

func (p *parser) hex4() (rune, error) {
	if len(p.s)-p.i < 4 {
		return 0, p.errorf("'\\u' must be followed by 4 hex digits")
	}
	var r rune
	for _, c := range p.s[p.i : p.i+4] {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, p.errorf("'\\u' must be followed by 4 hex digits")
		}
		r = r<<4 | rune(d)
	}
	p.i += 4
	return r, nil
}
