package derivation

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/storepath"
)

// Resolver reads the derivations a derivation depends on.
type Resolver interface {
	// ReadDerivation returns the derivation stored at drvPath, whether or
	// not the path is registered valid (Nix's readInvalidDerivation).
	ReadDerivation(ctx context.Context, drvPath storepath.Path) (*Derivation, error)
}

// HashKind says whether a modulo hash is final (Regular) or depends on
// outputs not yet known (Deferred: floating or impure inputs).
type HashKind uint8

const (
	Regular HashKind = iota + 1
	DeferredHash
)

// DrvHash is the result of hashDerivationModulo: one hash per output.
type DrvHash struct {
	Hashes map[string]hash.Hash
	Kind   HashKind
}

// Hasher computes hashDerivationModulo, remembering the hash of every
// input derivation it reads (as Nix's drvHashes). A .drv's store path is
// the hash of its contents, so a remembered hash never goes stale. It is
// safe for concurrent use; the memo grows with the derivations seen.
type Hasher struct {
	r        Resolver
	mu       sync.Mutex
	memo     map[storepath.Path]DrvHash
	visiting map[storepath.Path]bool
}

// NewHasher returns a Hasher reading input derivations through r.
func NewHasher(r Resolver) *Hasher {
	return &Hasher{r: r, memo: map[storepath.Path]DrvHash{}, visiting: map[storepath.Path]bool{}}
}

// Remember records the unmasked modulo hash of drvPath, as Nix's evaluator
// does right after writing a derivation.
func (h *Hasher) Remember(drvPath storepath.Path, dh DrvHash) {
	h.mu.Lock()
	h.memo[drvPath] = dh
	h.mu.Unlock()
}

// impureHash is Nix's impureOutputHash: sha256("impure").
var impureHash = hash.Sum(hash.SHA256, []byte("impure"))

// HashModulo is Nix's hashDerivationModulo(drv, maskOutputs).
func (h *Hasher) HashModulo(ctx context.Context, d *Derivation, maskOutputs bool) (DrvHash, error) {
	typ, err := d.Type()
	if err != nil {
		return DrvHash{}, fmt.Errorf("derivation %q: %w", d.Name, err)
	}
	outs := d.OutputNames()
	switch typ {
	case TypeFixed:
		hs := make(map[string]hash.Hash, len(outs))
		for _, name := range outs {
			o := d.Outputs[name]
			p, _, err := d.OutputPath(name)
			if err != nil {
				return DrvHash{}, err
			}
			hs[name] = hash.Sum(hash.SHA256, []byte("fixed:out:"+o.methodAlgo()+":"+o.Hash.Base16()+":"+p.String()))
		}
		return DrvHash{Hashes: hs, Kind: Regular}, nil
	case TypeImpure:
		hs := make(map[string]hash.Hash, len(outs))
		for _, name := range outs {
			hs[name] = impureHash
		}
		return DrvHash{Hashes: hs, Kind: DeferredHash}, nil
	}
	kind := Regular
	if typ == TypeFloating {
		kind = DeferredHash
	}
	// Replace each input derivation by the base16 of its own modulo hash,
	// grouping the wanted output names per hash.
	grouped := map[string][]string{}
	for _, drvPath := range sortedPaths(d.InputDrvs) {
		res, err := h.pathHash(ctx, drvPath)
		if err != nil {
			return DrvHash{}, err
		}
		if res.Kind == DeferredHash {
			kind = DeferredHash
		}
		for _, out := range d.InputDrvs[drvPath] {
			oh, ok := res.Hashes[out]
			if !ok {
				return DrvHash{}, fmt.Errorf("derivation %q uses output %q of %s, which has no such output", d.Name, out, drvPath)
			}
			k := oh.Base16()
			grouped[k] = append(grouped[k], out)
		}
	}
	inputs := make([]hashedInput, 0, len(grouped))
	for _, k := range sortedKeys(grouped) {
		inputs = append(inputs, hashedInput{hash: k, outs: sortUnique(grouped[k])})
	}
	text, err := d.appendATerm(make([]byte, 0, 4096), maskOutputs, inputs)
	if err != nil {
		return DrvHash{}, err
	}
	sum := hash.Sum(hash.SHA256, text)
	hs := make(map[string]hash.Hash, len(outs))
	for _, name := range outs {
		hs[name] = sum
	}
	return DrvHash{Hashes: hs, Kind: kind}, nil
}

// pathHash is Nix's pathDerivationModulo: the memoised unmasked hash of
// the derivation at drvPath.
func (h *Hasher) pathHash(ctx context.Context, drvPath storepath.Path) (DrvHash, error) {
	h.mu.Lock()
	if dh, ok := h.memo[drvPath]; ok {
		h.mu.Unlock()
		return dh, nil
	}
	if h.visiting[drvPath] {
		h.mu.Unlock()
		return DrvHash{}, fmt.Errorf("derivation %s depends on itself", drvPath)
	}
	h.visiting[drvPath] = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.visiting, drvPath)
		h.mu.Unlock()
	}()
	if err := ctx.Err(); err != nil {
		return DrvHash{}, err
	}
	d, err := h.r.ReadDerivation(ctx, drvPath)
	if err != nil {
		return DrvHash{}, fmt.Errorf("read input derivation %s: %w", drvPath, err)
	}
	dh, err := h.HashModulo(ctx, d, false)
	if err != nil {
		return DrvHash{}, fmt.Errorf("hash input derivation %s: %w", drvPath, err)
	}
	h.Remember(drvPath, dh)
	return dh, nil
}

// StaticOutputHashes is Nix's staticOutputHashes: the masked modulo hash
// per output, which names a DrvOutput ("sha256:<base16>!<out>").
func (h *Hasher) StaticOutputHashes(ctx context.Context, d *Derivation) (map[string]hash.Hash, error) {
	dh, err := h.HashModulo(ctx, d, true)
	if err != nil {
		return nil, err
	}
	return dh.Hashes, nil
}

// MakeOutputPath is Nix's makeOutputPath: the path of output out of the
// derivation named drvName whose modulo hash is h.
func MakeOutputPath(dir storepath.Dir, out string, h hash.Hash, drvName string) (storepath.Path, error) {
	return dir.MakePath("output:"+out, h, OutputPathName(drvName, out))
}

// FillInputAddressed computes the output paths of an input-addressed
// derivation as Nix's evaluator does (derivationStrict): every output
// becomes deferred with an empty environment variable, the masked modulo
// hash is taken, and, unless an input is deferred, each output gets its
// path in Outputs and Env. It reports whether the paths are known.
func (h *Hasher) FillInputAddressed(ctx context.Context, d *Derivation) (bool, error) {
	for name, o := range d.Outputs {
		if o.Kind != InputAddressed && o.Kind != Deferred {
			return false, fmt.Errorf("derivation %q: output %q is %s, not input-addressed", d.Name, name, o.Kind)
		}
		d.Outputs[name] = Output{Kind: Deferred}
		d.Env[name] = ""
	}
	dh, err := h.HashModulo(ctx, d, true)
	if err != nil {
		return false, err
	}
	if dh.Kind == DeferredHash {
		return false, nil
	}
	for _, name := range d.OutputNames() {
		p, err := MakeOutputPath(d.Dir, name, dh.Hashes[name], d.Name)
		if err != nil {
			return false, fmt.Errorf("derivation %q output %q: %w", d.Name, name, err)
		}
		d.Outputs[name] = Output{Kind: InputAddressed, Path: p}
		d.Env[name] = p.String()
	}
	return true, nil
}

// References returns what the .drv file refers to: its input sources and
// input derivations (never its outputs), sorted.
func (d *Derivation) References() []storepath.Path {
	refs := slices.Clone(d.InputSrcs)
	for p := range d.InputDrvs {
		refs = append(refs, p)
	}
	slices.SortFunc(refs, storepath.Compare)
	return slices.Compact(refs)
}

// StorePath returns the store path Nix writes this derivation to (a text
// path of the ATerm referring to References), with the ATerm itself.
func (d *Derivation) StorePath() (storepath.Path, []byte, error) {
	text, err := d.Print()
	if err != nil {
		return storepath.Path{}, nil, err
	}
	p, err := d.Dir.MakeTextPath(d.Name+Extension, hash.Sum(hash.SHA256, text), d.References())
	if err != nil {
		return storepath.Path{}, nil, fmt.Errorf("derivation %q: %w", d.Name, err)
	}
	return p, text, nil
}

// HashPlaceholder is Nix's hashPlaceholder: the string an output's path is
// written as before it is known ("/" + nix32 sha256 of "nix-output:<out>").
func HashPlaceholder(out string) string {
	sum := sha256.Sum256([]byte("nix-output:" + out))
	return "/" + nix32.Encode(sum[:])
}

// DownstreamPlaceholder is Nix's downstreamPlaceholder: the string a
// derivation uses for output out of a floating input derivation drvPath.
func DownstreamPlaceholder(drvPath storepath.Path, out string) string {
	drvName, _ := cutSuffix(drvPath.Name(), Extension)
	sum := sha256.Sum256([]byte("nix-upstream-output:" + drvPath.HashPart() + ":" + OutputPathName(drvName, out)))
	return "/" + nix32.Encode(sum[:])
}
