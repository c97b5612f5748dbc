package storepath

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nix32"
)

// MakePath is Nix's makeStorePath: the path whose hash part is the
// sha256 of "<typ>:<h as algo:base16>:<d>:<name>", folded to 20 bytes.
// typ is "text", "source" or "output:out", followed by ":<ref>" for each
// reference (and ":self") where Nix adds them.
func (d Dir) MakePath(typ string, h hash.Hash, name string) (Path, error) {
	if err := ValidateName(name); err != nil {
		return Path{}, fmt.Errorf("make store path: %w", err)
	}
	if h.IsZero() {
		return Path{}, fmt.Errorf("make store path %q: no hash given", name)
	}
	s := typ + ":" + h.Algo().String() + ":" + h.Base16() + ":" + string(d) + ":" + name
	sum := sha256.Sum256([]byte(s))
	var folded [20]byte
	for i, b := range sum {
		folded[i%len(folded)] ^= b
	}
	return Path{dir: d, base: nix32.Encode(folded[:]) + "-" + name}, nil
}

// MakeTextPath is Nix's makeTextPath: the path of a text file written to
// the store (builtins.toFile, a .drv) whose contents hash to contentSHA256
// and which refers to refs.
func (d Dir) MakeTextPath(name string, contentSHA256 hash.Hash, refs []Path) (Path, error) {
	if contentSHA256.Algo() != hash.SHA256 {
		return Path{}, fmt.Errorf("make text path %q: content hash must be sha256, got %q", name, contentSHA256.Algo())
	}
	typ, err := d.makeType("text", refs, false)
	if err != nil {
		return Path{}, fmt.Errorf("make text path %q: %w", name, err)
	}
	return d.MakePath(typ, contentSHA256, name)
}

// MakeSourcePath is the path of a tree added recursively with sha256
// ("nix-store --add"), whose NAR serialisation hashes to narSHA256. refs
// must not contain the path itself: say selfRef instead.
func (d Dir) MakeSourcePath(name string, narSHA256 hash.Hash, refs []Path, selfRef bool) (Path, error) {
	if narSHA256.Algo() != hash.SHA256 {
		return Path{}, fmt.Errorf("make source path %q: NAR hash must be sha256, got %q", name, narSHA256.Algo())
	}
	typ, err := d.makeType("source", refs, selfRef)
	if err != nil {
		return Path{}, fmt.Errorf("make source path %q: %w", name, err)
	}
	return d.MakePath(typ, narSHA256, name)
}

// MakeFixedOutputPath is Nix's makeFixedOutputPath: the path of a
// fixed-output derivation's output or of a file added with "nix-store
// --add-fixed". h hashes the NAR serialisation when recursive, the file's
// contents otherwise. A recursive sha256 hash gives the source path (and
// may have references); every other combination gives an "output:out"
// path, which cannot have references.
func (d Dir) MakeFixedOutputPath(name string, recursive bool, h hash.Hash, refs []Path, selfRef bool) (Path, error) {
	if h.IsZero() {
		return Path{}, fmt.Errorf("make fixed-output path %q: no hash given", name)
	}
	if recursive && h.Algo() == hash.SHA256 {
		return d.MakeSourcePath(name, h, refs, selfRef)
	}
	if len(refs) > 0 || selfRef {
		return Path{}, fmt.Errorf("make fixed-output path %q: only recursive sha256 paths may have references", name)
	}
	method := ""
	if recursive {
		method = "r:"
	}
	inner := hash.Sum(hash.SHA256, []byte("fixed:out:"+method+h.Algo().String()+":"+h.Base16()+":"))
	return d.MakePath("output:out", inner, name)
}

// makeType appends the references to typ the way Nix does: sorted and
// without duplicates (Nix keeps them in a set), each as a full path in d.
func (d Dir) makeType(typ string, refs []Path, selfRef bool) (string, error) {
	sorted := slices.Clone(refs)
	slices.SortFunc(sorted, Compare)
	sorted = slices.Compact(sorted)
	var b strings.Builder
	b.WriteString(typ)
	for _, r := range sorted {
		if r.IsZero() {
			return "", fmt.Errorf("%w: empty reference", ErrInvalid)
		}
		if r.dir != d {
			return "", fmt.Errorf("%w: reference %s is not in the store directory %s", ErrInvalid, r, d)
		}
		b.WriteString(":")
		b.WriteString(r.String())
	}
	if selfRef {
		b.WriteString(":self")
	}
	return b.String(), nil
}
