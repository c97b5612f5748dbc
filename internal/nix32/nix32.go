// Package nix32 implements Nix's base-32 encoding of hashes.
//
// It is not RFC 4648 base32: the alphabet omits e, o, u and t, and characters
// are emitted from the most significant 5-bit group of the little-endian
// number down, exactly as Nix's printHash32 does.
package nix32

import (
	"errors"
	"fmt"
)

// Alphabet is Nix's base-32 alphabet.
const Alphabet = "0123456789abcdfghijklmnpqrsvwxyz"

// ErrInvalid is wrapped by every decoding error.
var ErrInvalid = errors.New("invalid nix32 string")

var decodeTable = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(Alphabet); i++ {
		t[Alphabet[i]] = int8(i)
	}
	return t
}()

// EncodedLen returns the length of the encoding of n bytes.
func EncodedLen(n int) int {
	if n == 0 {
		return 0
	}
	return (n*8-1)/5 + 1
}

// DecodedLen returns the number of bytes an encoding of length n decodes to,
// or -1 if no byte length encodes to n characters.
func DecodedLen(n int) int {
	b := n * 5 / 8
	if EncodedLen(b) == n {
		return b
	}
	return -1
}

// Encode returns the nix32 encoding of b.
func Encode(b []byte) string {
	n := EncodedLen(len(b))
	out := make([]byte, n)
	AppendEncode(out[:0], b)
	return string(out)
}

// AppendEncode appends the nix32 encoding of b to dst.
func AppendEncode(dst, b []byte) []byte {
	for n := EncodedLen(len(b)) - 1; n >= 0; n-- {
		bit := uint(n * 5)
		i, j := bit/8, bit%8
		c := b[i] >> j
		if int(i) < len(b)-1 {
			c |= b[i+1] << (8 - j)
		}
		dst = append(dst, Alphabet[c&0x1f])
	}
	return dst
}

// Decode decodes a nix32 string. The length of the result is DecodedLen(len(s)).
// It rejects characters outside the alphabet and encodings whose high bits
// overflow the decoded length, as Nix does.
func Decode(s string) ([]byte, error) {
	size := DecodedLen(len(s))
	if size < 0 {
		return nil, fmt.Errorf("%w: length %d is not the length of any encoding", ErrInvalid, len(s))
	}
	out := make([]byte, size)
	for n := 0; n < len(s); n++ {
		c := s[len(s)-n-1]
		d := decodeTable[c]
		if d < 0 {
			return nil, fmt.Errorf("%w: character %q at position %d", ErrInvalid, c, len(s)-n-1)
		}
		bit := uint(n * 5)
		i, j := bit/8, bit%8
		out[i] |= byte(d) << j
		carry := byte(uint(d) >> (8 - j))
		if int(i) < size-1 {
			out[i+1] |= carry
		} else if carry != 0 {
			return nil, fmt.Errorf("%w: %q overflows %d bytes", ErrInvalid, s, size)
		}
	}
	return out, nil
}

// IsValid reports whether s consists only of nix32 alphabet characters.
// It does not check the length.
func IsValid(s string) bool {
	for i := 0; i < len(s); i++ {
		if decodeTable[s[i]] < 0 {
			return false
		}
	}
	return true
}
