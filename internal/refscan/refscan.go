// Package refscan finds which candidate store paths a byte stream refers
// to, by searching it for their 32-character nix32 hash parts, as Nix's
// reference scanner does.
//
// Invariant: the search window slides byte by byte across Write calls, so
// a hash part split over any number of writes is found; a missed reference
// would let garbage collection delete a live path.
package refscan

import (
	"sort"
)

// HashLen is the length of a store path's hash part.
const HashLen = 32

var isNix32 [256]bool

func init() {
	for _, c := range []byte("0123456789abcdfghijklmnpqrsvwxyz") {
		isNix32[c] = true
	}
}

// Scanner is an io.Writer that records which hash parts appear in what is
// written to it. It is not safe for concurrent use.
type Scanner struct {
	want  map[[HashLen]byte]bool // candidates; true once found
	found []string
	tail  []byte // last up to HashLen-1 bytes written, for matches across writes
}

// New returns a Scanner looking for hashParts. Strings that are not 32
// nix32 characters can never match and are ignored.
func New(hashParts []string) *Scanner {
	s := &Scanner{want: make(map[[HashLen]byte]bool, len(hashParts)), tail: make([]byte, 0, 2*HashLen)}
	for _, h := range hashParts {
		if !valid(h) {
			continue
		}
		var k [HashLen]byte
		copy(k[:], h)
		s.want[k] = false
	}
	return s
}

func valid(h string) bool {
	if len(h) != HashLen {
		return false
	}
	for i := 0; i < len(h); i++ {
		if !isNix32[h[i]] {
			return false
		}
	}
	return true
}

// Write scans p. It never fails.
func (s *Scanner) Write(p []byte) (int, error) {
	if len(s.want) == 0 {
		return len(p), nil
	}
	// Windows that start in the tail and end in p.
	if len(s.tail) > 0 {
		n := min(len(p), HashLen-1)
		joined := append(s.tail, p[:n]...)
		s.scan(joined)
		s.tail = joined[:len(s.tail)]
	}
	s.scan(p)
	// Keep the last HashLen-1 bytes of everything seen.
	if len(p) >= HashLen-1 {
		s.tail = append(s.tail[:0], p[len(p)-(HashLen-1):]...)
	} else {
		s.tail = append(s.tail, p...)
		if len(s.tail) > HashLen-1 {
			s.tail = append(s.tail[:0], s.tail[len(s.tail)-(HashLen-1):]...)
		}
	}
	return len(p), nil
}

// scan looks for candidates in every window of b. Like Nix's scanner it
// checks a window's bytes from the end, and on a byte outside the nix32
// alphabet skips every window containing it.
func (s *Scanner) scan(b []byte) {
	for i := 0; i+HashLen <= len(b); {
		j := HashLen - 1
		for ; j >= 0; j-- {
			if !isNix32[b[i+j]] {
				break
			}
		}
		if j >= 0 {
			i += j + 1
			continue
		}
		k := [HashLen]byte(b[i : i+HashLen])
		if found, ok := s.want[k]; ok && !found {
			s.want[k] = true
			s.found = append(s.found, string(k[:]))
		}
		i++
	}
}

// Found returns the hash parts seen so far, sorted.
func (s *Scanner) Found() []string {
	out := append([]string(nil), s.found...)
	sort.Strings(out)
	return out
}
