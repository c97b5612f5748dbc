package narinfo

import (
	"fmt"
	"strings"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/storepath"
)

// CA is a content address as Nix 2.8 writes it in a narinfo's CA field:
// "text:sha256:<hash>" or "fixed:[r:]<algo>:<hash>".
type CA struct {
	Text      bool // "text:": a text file (builtins.toFile, .drv); Hash is sha256
	Recursive bool // "fixed:r:": Hash is of the NAR, not of a flat file
	Hash      hash.Hash
}

// ParseCA parses a content address as Nix's parseContentAddress does: the
// hash may be base16, nix32 or base64, and is printed back as nix32.
func ParseCA(s string) (CA, error) {
	method, rest, ok := strings.Cut(s, ":")
	if !ok {
		return CA{}, fmt.Errorf("content address %q is not <method>:<algo>:<hash>", trunc(s))
	}
	var ca CA
	switch method {
	case "text":
		ca.Text = true
	case "fixed":
		if r, ok := strings.CutPrefix(rest, "r:"); ok {
			ca.Recursive, rest = true, r
		}
	default:
		return CA{}, fmt.Errorf("content address %q: method %q is neither text nor fixed", trunc(s), method)
	}
	algoName, digest, ok := strings.Cut(rest, ":")
	if !ok {
		return CA{}, fmt.Errorf("content address %q: want <algo>:<hash> after %q", trunc(s), method)
	}
	algo, err := hash.ParseAlgo(algoName)
	if err != nil {
		return CA{}, fmt.Errorf("content address %q: %w", trunc(s), err)
	}
	if ca.Text && algo != hash.SHA256 {
		return CA{}, fmt.Errorf("content address %q: text hashes must be sha256", trunc(s))
	}
	if strings.ContainsAny(digest, ":-") { // a bare digest, not another prefixed or SRI hash
		return CA{}, fmt.Errorf("content address %q: digest %q is not base16, nix32 or base64", trunc(s), trunc(digest))
	}
	ca.Hash, err = hash.ParseAs(digest, algo)
	if err != nil {
		return CA{}, fmt.Errorf("content address: %w", err)
	}
	return ca, nil
}

// String renders ca as Nix does.
func (ca CA) String() string {
	switch {
	case ca.Text:
		return "text:" + ca.Hash.String()
	case ca.Recursive:
		return "fixed:r:" + ca.Hash.String()
	}
	return "fixed:" + ca.Hash.String()
}

// Path computes the store path named name in dir with this content address
// and references. A reference equal to self is a self-reference, as Nix
// treats it.
func (ca CA) Path(dir storepath.Dir, name string, refs []storepath.Path, self storepath.Path) (storepath.Path, error) {
	if ca.Text {
		return dir.MakeTextPath(name, ca.Hash, refs)
	}
	var others []storepath.Path
	selfRef := false
	for _, r := range refs {
		if !self.IsZero() && r == self {
			selfRef = true
		} else {
			others = append(others, r)
		}
	}
	return dir.MakeFixedOutputPath(name, ca.Recursive, ca.Hash, others, selfRef)
}
