// Package storepath holds Nix store paths and computes them as Nix does.
//
// A Path is a store directory (a Dir value, never a global: Nix's own tests
// use other directories) plus a base name "<32 nix32 chars>-<name>". Every
// Path other than the zero value has been validated: its hash part is 32
// nix32 characters, its name obeys ValidateName, and it lies directly in its
// directory. The Make* functions compute the paths Nix 2.8's makeStorePath,
// makeTextPath and makeFixedOutputPath compute, byte for byte.
package storepath

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/silo-cache/silo/internal/nix32"
)

// ErrInvalid is wrapped by every error about a malformed store path,
// store directory or name.
var ErrInvalid = errors.New("invalid store path")

// HashLen is the length of a store path's hash part in nix32 characters
// (20 bytes).
const HashLen = 32

// MaxNameLen is the longest name Nix allows in a store path.
const MaxNameLen = 211

// Dir is a store directory: absolute, cleaned, without trailing slash.
// Use DefaultDir or a Dir from NewDir; the zero Dir is no directory.
type Dir string

// DefaultDir is Nix's default store directory.
const DefaultDir Dir = "/nix/store"

// NewDir validates a store directory. It must be absolute and already
// clean ("/nix/store", not "/nix/store/" or "/nix//store").
func NewDir(s string) (Dir, error) {
	if !strings.HasPrefix(s, "/") {
		return "", fmt.Errorf("%w: store directory %q is not absolute", ErrInvalid, s)
	}
	if s == "/" || path.Clean(s) != s {
		return "", fmt.Errorf("%w: store directory %q is not a clean path (want e.g. %q)", ErrInvalid, s, path.Clean(s))
	}
	return Dir(s), nil
}

// Path is a store path. The zero Path is "no path". Paths are comparable
// and may be used as map keys.
type Path struct {
	dir  Dir
	base string
}

// Parse parses a full store path, which must lie directly in d (no
// subpath inside a store object, no "." or ".." components).
func (d Dir) Parse(full string) (Path, error) {
	prefix := string(d) + "/"
	if !strings.HasPrefix(full, prefix) {
		return Path{}, fmt.Errorf("%w: %q is not in the store directory %s", ErrInvalid, full, d)
	}
	base := full[len(prefix):]
	if strings.Contains(base, "/") {
		return Path{}, fmt.Errorf("%w: %q is not directly in the store directory %s (a path inside a store object?)", ErrInvalid, full, d)
	}
	p, err := d.ParseBase(base)
	if err != nil {
		return Path{}, err
	}
	return p, nil
}

// ParseBase parses a store path's base name "<hash>-<name>" and places it in d.
func (d Dir) ParseBase(base string) (Path, error) {
	if len(base) < HashLen+2 {
		return Path{}, fmt.Errorf("%w: %q is too short to be a store path (want <32 nix32 chars>-<name>)", ErrInvalid, base)
	}
	if base[HashLen] != '-' {
		return Path{}, fmt.Errorf("%w: %q: hash part is not followed by '-'", ErrInvalid, base)
	}
	if h := base[:HashLen]; !nix32.IsValid(h) {
		return Path{}, fmt.Errorf("%w: %q: hash part %q has characters outside the nix32 alphabet", ErrInvalid, base, h)
	}
	if err := ValidateName(base[HashLen+1:]); err != nil {
		return Path{}, fmt.Errorf("store path %q: %w", base, err)
	}
	return Path{dir: d, base: base}, nil
}

// ValidateName checks a store path name as Nix does: 1 to 211 characters
// from [A-Za-z0-9+-._?=]. Like current Nix, it also rejects the names
// that would read as "." or ".." ("." and ".." themselves, and names
// starting ".-" or "..-"). Other names starting with '.' (".bashrc") are
// valid: Nix 2.8 creates such paths ("nix-store --add .bashrc").
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalid)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: name %.20q... is %d characters long, at most %d allowed", ErrInvalid, name, len(name), MaxNameLen)
	case name == "." || name == ".." || strings.HasPrefix(name, ".-") || strings.HasPrefix(name, "..-"):
		return fmt.Errorf("%w: name %q would read as \".\" or \"..\"", ErrInvalid, name)
	}
	for i := 0; i < len(name); i++ {
		if !nameChar(name[i]) {
			return fmt.Errorf("%w: name %q has character %q at position %d (allowed: A-Z a-z 0-9 + - . _ ? =)", ErrInvalid, name, name[i], i)
		}
	}
	return nil
}

func nameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '+' || c == '-' || c == '.' || c == '_' || c == '?' || c == '='
}

// String returns the full path, or "" for the zero Path.
func (p Path) String() string {
	if p.IsZero() {
		return ""
	}
	return string(p.dir) + "/" + p.base
}

// Base returns "<hash>-<name>".
func (p Path) Base() string { return p.base }

// HashPart returns the 32 nix32 characters naming the path in caches
// ("<hashpart>.narinfo").
func (p Path) HashPart() string {
	if p.IsZero() {
		return ""
	}
	return p.base[:HashLen]
}

// Name returns the part after the hash and '-'.
func (p Path) Name() string {
	if p.IsZero() {
		return ""
	}
	return p.base[HashLen+1:]
}

// Dir returns the store directory p lies in.
func (p Path) Dir() Dir { return p.dir }

// IsZero reports whether p is the zero Path.
func (p Path) IsZero() bool { return p.base == "" }

// IsDerivation reports whether p names a derivation (".drv").
func (p Path) IsDerivation() bool { return strings.HasSuffix(p.base, ".drv") }

// Compare orders paths as Nix orders StorePathSet: by base name (then by
// directory, which Nix never mixes). It suits slices.SortFunc.
func Compare(a, b Path) int {
	if c := strings.Compare(a.base, b.base); c != 0 {
		return c
	}
	return strings.Compare(string(a.dir), string(b.dir))
}
