// Package narinfo parses and prints .narinfo files exactly as Nix 2.8
// reads and writes them (src/libstore/nar-info.cc), and computes and checks
// their signatures.
//
// Parse accepts what Nix accepts, with these deliberate exceptions, each
// rejected with its line number (tests check each against the real Nix):
//   - a blank line or a line without ": " after the field name (Nix skips
//     any one byte after the colon, and reads a colon-less line together
//     with the next line as one unknown field, losing that field);
//   - a NarHash that is not sha256;
//   - a Sig that is not "name:base64" of 64 bytes (Nix keeps it, and fails
//     only when its key is trusted);
//   - a StorePath not in canonical form (Nix cleans "//" and a final "/").
//
// Like Nix, Parse ignores unknown fields, lets a repeated field override
// the earlier one (but rejects a second non-empty References or CA), drops
// repeated references and signatures, requires every line to end in a
// newline, and requires StorePath, URL, NarHash and a non-zero NarSize.
// Input is capped at MaxSize. String prints the fields in the order of
// Nix's NarInfo::to_string, so a file written by Nix round-trips byte for
// byte; fields are kept in the order read (Nix writes sets, sorted).
package narinfo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// MaxSize is the largest narinfo Parse reads. Real ones are well under
// 100 KiB even with thousands of references.
const MaxSize = 1 << 20

// ErrInvalid is wrapped by every parsing error.
var ErrInvalid = errors.New("invalid narinfo")

// NarInfo is the metadata of one store path in a binary cache.
type NarInfo struct {
	StorePath storepath.Path
	URL       string // of the (compressed) NAR, relative to the cache
	// Compression as written; "" means the field is absent, which Nix
	// reads as bzip2.
	Compression string
	FileHash    hash.Hash // of the compressed NAR; zero = absent
	FileSize    uint64    // zero = absent
	NarHash     hash.Hash // sha256 of the NAR
	NarSize     uint64
	References  []storepath.Path // printed as base names, in this order
	Deriver     storepath.Path   // zero = absent
	System      string           // "" = absent
	Sigs        []signature.Signature
	CA          string // content address, in Nix's rendering; "" = absent
}

// field names, in the order Nix prints them.
const (
	fStorePath   = "StorePath"
	fURL         = "URL"
	fCompression = "Compression"
	fFileHash    = "FileHash"
	fFileSize    = "FileSize"
	fNarHash     = "NarHash"
	fNarSize     = "NarSize"
	fReferences  = "References"
	fDeriver     = "Deriver"
	fSystem      = "System"
	fSig         = "Sig"
	fCA          = "CA"
)

// Parse reads a narinfo whose paths lie in dir. Errors wrap ErrInvalid
// and name the line and field.
func Parse(dir storepath.Dir, r io.Reader) (*NarInfo, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read narinfo: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxSize)
	}
	return parse(dir, data)
}

// ParseString is Parse of a string.
func ParseString(dir storepath.Dir, s string) (*NarInfo, error) {
	return Parse(dir, strings.NewReader(s))
}

func parse(dir storepath.Dir, data []byte) (*NarInfo, error) {
	n := &NarInfo{}
	var (
		refsSet, caSet bool
		seenSig        = map[string]bool{}
		seenRef        = map[storepath.Path]bool{}
	)
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		eol := bytes.IndexByte(data, '\n')
		if eol < 0 {
			return nil, fmt.Errorf("%w: line %d: no newline at the end of the file", ErrInvalid, lineNo)
		}
		line := string(data[:eol])
		data = data[eol+1:]
		name, value, ok := strings.Cut(line, ": ")
		if !ok || strings.Contains(name, ":") {
			return nil, fmt.Errorf("%w: line %d: %q is not \"Field: value\"", ErrInvalid, lineNo, trunc(line))
		}
		bad := func(err error) error {
			return fmt.Errorf("%w: line %d: %s: %w", ErrInvalid, lineNo, name, err)
		}
		switch name {
		case fStorePath:
			p, err := dir.Parse(value)
			if err != nil {
				return nil, bad(err)
			}
			n.StorePath = p
		case fURL:
			n.URL = value
		case fCompression:
			n.Compression = value
		case fFileHash:
			h, err := hash.Parse(value)
			if err != nil {
				return nil, bad(err)
			}
			n.FileHash = h
		case fFileSize, fNarSize:
			v, err := parseSize(value)
			if err != nil {
				return nil, bad(err)
			}
			if name == fFileSize {
				n.FileSize = v
			} else {
				n.NarSize = v
			}
		case fNarHash:
			h, err := hash.Parse(value)
			if err != nil {
				return nil, bad(err)
			}
			if h.Algo() != hash.SHA256 {
				return nil, bad(fmt.Errorf("hash is %s, want sha256", h.Algo()))
			}
			n.NarHash = h
		case fReferences:
			if refsSet {
				return nil, bad(errors.New("second References line"))
			}
			for _, base := range strings.Split(value, " ") {
				if base == "" {
					continue // Nix's tokenizer skips runs of spaces
				}
				p, err := dir.ParseBase(base)
				if err != nil {
					return nil, bad(err)
				}
				if !seenRef[p] {
					seenRef[p] = true
					n.References = append(n.References, p)
				}
			}
			refsSet = len(n.References) > 0
		case fDeriver:
			if value == "unknown-deriver" {
				break // as in Nix, this keeps an earlier Deriver
			}
			p, err := dir.ParseBase(value)
			if err != nil {
				return nil, bad(err)
			}
			n.Deriver = p
		case fSystem:
			n.System = value
		case fSig:
			sig, err := signature.ParseSignature(value)
			if err != nil {
				return nil, bad(err)
			}
			if s := sig.String(); !seenSig[s] {
				seenSig[s] = true
				n.Sigs = append(n.Sigs, sig)
			}
		case fCA:
			if caSet {
				return nil, bad(errors.New("second CA line"))
			}
			if value == "" {
				break
			}
			ca, err := ParseCA(value)
			if err != nil {
				return nil, bad(err)
			}
			n.CA = ca.String()
			caSet = true
		}
	}
	var missing []string
	if n.StorePath.IsZero() {
		missing = append(missing, fStorePath)
	}
	if n.URL == "" {
		missing = append(missing, fURL)
	}
	if n.NarHash.IsZero() {
		missing = append(missing, fNarHash)
	}
	if n.NarSize == 0 {
		missing = append(missing, fNarSize)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: missing or empty %s", ErrInvalid, strings.Join(missing, ", "))
	}
	return n, nil
}

// parseSize parses a decimal size as Nix's string2Int<uint64_t> does:
// digits with an optional leading '+'.
func parseSize(s string) (uint64, error) {
	digits := strings.TrimPrefix(s, "+")
	if digits == "" || strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, fmt.Errorf("%q is not a decimal number", trunc(s))
	}
	v, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", trunc(s))
	}
	return v, nil
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// String returns the narinfo in Nix's format, fields in the order Nix's
// NarInfo::to_string prints them. Absent optional fields are left out;
// References is always printed, empty or not.
func (n *NarInfo) String() string {
	var b strings.Builder
	w := func(name, value string) {
		b.WriteString(name)
		b.WriteString(": ")
		b.WriteString(value)
		b.WriteByte('\n')
	}
	w(fStorePath, n.StorePath.String())
	w(fURL, n.URL)
	if n.Compression != "" {
		w(fCompression, n.Compression)
	}
	if !n.FileHash.IsZero() {
		w(fFileHash, n.FileHash.String())
	}
	if n.FileSize != 0 {
		w(fFileSize, strconv.FormatUint(n.FileSize, 10))
	}
	w(fNarHash, n.NarHash.String())
	w(fNarSize, strconv.FormatUint(n.NarSize, 10))
	refs := make([]string, len(n.References))
	for i, r := range n.References {
		refs[i] = r.Base()
	}
	w(fReferences, strings.Join(refs, " "))
	if !n.Deriver.IsZero() {
		w(fDeriver, n.Deriver.Base())
	}
	if n.System != "" {
		w(fSystem, n.System)
	}
	for _, s := range n.Sigs {
		w(fSig, s.String())
	}
	if n.CA != "" {
		w(fCA, n.CA)
	}
	return b.String()
}

// WriteTo writes n.String() to w.
func (n *NarInfo) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	k, err := bw.WriteString(n.String())
	if err == nil {
		err = bw.Flush()
	}
	return int64(k), err
}

// Fingerprint is what Nix signs for a store path:
// "1;<path>;<narHash as algo:nix32>;<narSize>;<references, full paths,
// sorted, comma-separated>". Nix keeps references in a set, so they are
// sorted and deduplicated here whatever order they are given in. Nix
// refuses to fingerprint a path with narSize 0.
func Fingerprint(p storepath.Path, narHash hash.Hash, narSize uint64, refs []storepath.Path) string {
	sorted := slices.Clone(refs)
	slices.SortFunc(sorted, storepath.Compare)
	sorted = slices.Compact(sorted)
	var b strings.Builder
	b.WriteString("1;")
	b.WriteString(p.String())
	b.WriteString(";")
	b.WriteString(narHash.String())
	b.WriteString(";")
	b.WriteString(strconv.FormatUint(narSize, 10))
	b.WriteString(";")
	for i, r := range sorted {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// Fingerprint returns the fingerprint of n's path, NAR and references.
func (n *NarInfo) Fingerprint() string {
	return Fingerprint(n.StorePath, n.NarHash, n.NarSize, n.References)
}

// Sign adds k's signature, replacing any earlier signature by a key of
// the same name.
func (n *NarInfo) Sign(k signature.SecretKey) {
	sig := k.Sign(n.Fingerprint())
	for i, s := range n.Sigs {
		if s.KeyName == sig.KeyName {
			n.Sigs[i] = sig
			return
		}
	}
	n.Sigs = append(n.Sigs, sig)
}

// Verify reports whether one of n's signatures is valid and by a key in
// ks. Nix also trusts a path without signatures whose CA field proves its
// path (see ContentAddressed); Verify does not.
func (n *NarInfo) Verify(ks *signature.KeySet) bool {
	return ks.Verify(n.Fingerprint(), n.Sigs)
}

// ContentAddressed reports whether n's CA field is present and the store
// path follows from it, its name and its references: Nix trusts such
// paths without any signature.
func (n *NarInfo) ContentAddressed() bool {
	if n.CA == "" || n.StorePath.IsZero() {
		return false
	}
	ca, err := ParseCA(n.CA)
	if err != nil {
		return false
	}
	p, err := ca.Path(n.StorePath.Dir(), n.StorePath.Name(), n.References, n.StorePath)
	return err == nil && p == n.StorePath
}
