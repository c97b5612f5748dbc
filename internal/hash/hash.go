// Package hash holds Nix's cryptographic hash values: the algorithms Nix
// knows, and parsing and printing in base16, nix32, base64 and SRI form,
// exactly as Nix accepts and prints them.
package hash

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	gohash "hash"
	"strings"

	"github.com/silo-cache/silo/internal/nix32"
)

// Algo is a hash algorithm Nix knows.
type Algo uint8

// The algorithms, named as Nix names them.
const (
	MD5 Algo = iota + 1
	SHA1
	SHA256
	SHA512
)

var algoNames = [...]string{MD5: "md5", SHA1: "sha1", SHA256: "sha256", SHA512: "sha512"}
var algoSizes = [...]int{MD5: md5.Size, SHA1: sha1.Size, SHA256: sha256.Size, SHA512: sha512.Size}

// ErrInvalid is wrapped by every parsing error.
var ErrInvalid = errors.New("invalid hash")

// ParseAlgo parses an algorithm name ("sha256").
func ParseAlgo(s string) (Algo, error) {
	for a, n := range algoNames {
		if n != "" && n == s {
			return Algo(a), nil
		}
	}
	return 0, fmt.Errorf("%w: unknown algorithm %q (want md5, sha1, sha256 or sha512)", ErrInvalid, s)
}

func (a Algo) valid() bool { return a >= MD5 && a <= SHA512 }

// String returns Nix's name for a.
func (a Algo) String() string {
	if !a.valid() {
		return fmt.Sprintf("Algo(%d)", uint8(a))
	}
	return algoNames[a]
}

// Size returns the digest size of a in bytes.
func (a Algo) Size() int {
	if !a.valid() {
		return 0
	}
	return algoSizes[a]
}

// New returns a fresh hash.Hash computing a.
func (a Algo) New() gohash.Hash {
	switch a {
	case MD5:
		return md5.New()
	case SHA1:
		return sha1.New()
	case SHA256:
		return sha256.New()
	case SHA512:
		return sha512.New()
	}
	panic("hash: New of invalid algorithm")
}

// Hash is a digest together with its algorithm. The zero Hash is "no hash".
// Hash values are comparable and may be used as map keys.
type Hash struct {
	algo Algo
	sum  [sha512.Size]byte
}

// FromBytes builds a Hash from a digest, which must have a's size.
func FromBytes(a Algo, digest []byte) (Hash, error) {
	if !a.valid() {
		return Hash{}, fmt.Errorf("%w: invalid algorithm", ErrInvalid)
	}
	if len(digest) != a.Size() {
		return Hash{}, fmt.Errorf("%w: %s digest has %d bytes, want %d", ErrInvalid, a, len(digest), a.Size())
	}
	var h Hash
	h.algo = a
	copy(h.sum[:], digest)
	return h, nil
}

// Sum hashes data with a.
func Sum(a Algo, data []byte) Hash {
	h := a.New()
	h.Write(data)
	out, _ := FromBytes(a, h.Sum(nil))
	return out
}

// IsZero reports whether h is the zero Hash.
func (h Hash) IsZero() bool { return h.algo == 0 }

// Algo returns h's algorithm.
func (h Hash) Algo() Algo { return h.algo }

// Bytes returns the digest.
func (h Hash) Bytes() []byte { return append([]byte(nil), h.sum[:h.algo.Size()]...) }

// Base16 returns the lower-case hex digest, without algorithm prefix.
func (h Hash) Base16() string { return hex.EncodeToString(h.sum[:h.algo.Size()]) }

// Nix32 returns the nix32 digest, without algorithm prefix.
func (h Hash) Nix32() string { return nix32.Encode(h.sum[:h.algo.Size()]) }

// Base64 returns the padded standard base64 digest, without algorithm prefix.
func (h Hash) Base64() string { return base64.StdEncoding.EncodeToString(h.sum[:h.algo.Size()]) }

// SRI returns "<algo>-<base64>", as `nix hash path` prints by default.
func (h Hash) SRI() string { return h.algo.String() + "-" + h.Base64() }

// String returns "<algo>:<nix32>", the form used in narinfo files and
// signature fingerprints.
func (h Hash) String() string {
	if h.IsZero() {
		return ""
	}
	return h.algo.String() + ":" + h.Nix32()
}

// Format names a printed form of a hash.
type Format uint8

// The printed forms.
const (
	FormatSRI Format = iota
	FormatNix32
	FormatBase16
	FormatBase64
)

// ParseFormat parses a format name as `nix hash` spells it ("sri",
// "nix32", "base32", "base16", "base64").
func ParseFormat(s string) (Format, error) {
	switch s {
	case "sri":
		return FormatSRI, nil
	case "nix32", "base32":
		return FormatNix32, nil
	case "base16", "hex":
		return FormatBase16, nil
	case "base64":
		return FormatBase64, nil
	}
	return 0, fmt.Errorf("unknown hash format %q (want sri, nix32, base16 or base64)", s)
}

// Format prints h in form f. Only SRI carries the algorithm name.
func (h Hash) Format(f Format) string {
	switch f {
	case FormatNix32:
		return h.Nix32()
	case FormatBase16:
		return h.Base16()
	case FormatBase64:
		return h.Base64()
	}
	return h.SRI()
}

// Parse parses a hash that names its algorithm: "<algo>:<digest>" with the
// digest in base16, nix32 or base64 (told apart by length, as Nix does), or
// SRI "<algo>-<base64>".
func Parse(s string) (Hash, error) {
	if i := strings.IndexByte(s, ':'); i >= 0 {
		a, err := ParseAlgo(s[:i])
		if err != nil {
			return Hash{}, fmt.Errorf("parse hash %q: %w", s, err)
		}
		return parseDigest(s, s[i+1:], a, false)
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		a, err := ParseAlgo(s[:i])
		if err != nil {
			return Hash{}, fmt.Errorf("parse hash %q: %w", s, err)
		}
		return parseDigest(s, s[i+1:], a, true)
	}
	return Hash{}, fmt.Errorf("parse hash %q: %w: no algorithm prefix (want e.g. sha256:... or sha256-...)", s, ErrInvalid)
}

// ParseAs parses a hash of algorithm a: either a bare digest in base16,
// nix32 or base64, or any form Parse accepts, whose algorithm must be a.
func ParseAs(s string, a Algo) (Hash, error) {
	// No bare digest form contains ':' or '-', so either marks a prefixed hash.
	if strings.ContainsAny(s, ":-") {
		h, err := Parse(s)
		if err != nil {
			return Hash{}, err
		}
		if h.algo != a {
			return Hash{}, fmt.Errorf("parse hash %q: %w: algorithm %s, want %s", s, ErrInvalid, h.algo, a)
		}
		return h, nil
	}
	return parseDigest(s, s, a, false)
}

func parseDigest(whole, d string, a Algo, sri bool) (Hash, error) {
	size := a.Size()
	var (
		raw []byte
		err error
	)
	switch {
	case sri:
		// Nix also takes SRI digests without their '=' padding.
		enc := base64.StdEncoding
		if len(d)%4 != 0 {
			enc = base64.RawStdEncoding
		}
		raw, err = enc.Strict().DecodeString(d)
		if err == nil && len(raw) != size {
			err = fmt.Errorf("SRI digest has %d bytes, want %d", len(raw), size)
		}
	case len(d) == 2*size:
		raw, err = hex.DecodeString(d)
	case len(d) == nix32.EncodedLen(size):
		raw, err = nix32.Decode(d)
	case len(d) == base64.StdEncoding.EncodedLen(size):
		raw, err = base64.StdEncoding.Strict().DecodeString(d)
	default:
		err = fmt.Errorf("digest length %d fits no encoding of a %s hash", len(d), a)
	}
	if err != nil {
		return Hash{}, fmt.Errorf("parse hash %q: %w: %v", whole, ErrInvalid, err)
	}
	return FromBytes(a, raw)
}
