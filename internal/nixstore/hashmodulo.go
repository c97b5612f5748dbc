package nixstore

import (
	"bytes"
	gohash "hash"
	"strconv"

	"github.com/silo-cache/silo/internal/hash"
)

// hashModulo hashes a stream with every occurrence of modulus (a path's
// hash part) replaced by NUL bytes, then the positions of those
// occurrences ("|<offset>" each), as Nix's HashModuloSink: the hash of a
// content-addressed path "modulo" its self-references.
type hashModulo struct {
	algo    hash.Algo
	h       gohash.Hash
	modulus []byte
	carry   []byte // the last len(modulus)-1 bytes, not yet hashed
	buf     []byte // reused: carry and the written bytes (never modify p)
	pos     int64  // bytes hashed so far
	matches []int64
}

func newHashModulo(a hash.Algo, modulus string) *hashModulo {
	return &hashModulo{algo: a, h: a.New(), modulus: []byte(modulus)}
}

// Write implements io.Writer; it never fails.
func (m *hashModulo) Write(p []byte) (int, error) {
	if len(m.modulus) == 0 {
		m.h.Write(p)
		m.pos += int64(len(p))
		return len(p), nil
	}
	m.buf = append(append(m.buf[:0], m.carry...), p...)
	s := m.buf
	for j := 0; ; {
		i := bytes.Index(s[j:], m.modulus)
		if i < 0 {
			break
		}
		j += i
		m.matches = append(m.matches, m.pos+int64(j))
		clear(s[j : j+len(m.modulus)])
		j += len(m.modulus)
	}
	keep := min(len(s), len(m.modulus)-1)
	out := len(s) - keep
	m.h.Write(s[:out])
	m.pos += int64(out)
	m.carry = append(m.carry[:0:0], s[out:]...)
	return len(p), nil
}

// Sum returns the hash modulo the self-references.
func (m *hashModulo) Sum() hash.Hash {
	m.h.Write(m.carry)
	m.pos += int64(len(m.carry))
	m.carry = nil
	for _, p := range m.matches {
		m.h.Write([]byte("|" + strconv.FormatInt(p, 10)))
	}
	m.matches = nil
	h, _ := hash.FromBytes(m.algo, m.h.Sum(nil))
	return h
}
