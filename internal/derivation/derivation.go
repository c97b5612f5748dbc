// Package derivation reads and writes Nix store derivations (.drv files)
// byte for byte as Nix 2.8 does, and computes what Nix computes from them:
// the derivation type, hashDerivationModulo, output paths, the .drv's own
// store path, placeholders, the attributes a build reads (structured
// attributes, passAsFile, exportReferencesGraph, output checks, system
// features) and the BasicDerivation wire form of the worker protocol.
//
// Invariants:
//   - Print(Parse(b)) == b for every .drv Nix writes; for any input Parse
//     accepts, Parse(Print(d)) == d (FuzzParse checks both directions).
//   - A Derivation's store paths all carry the derivation's store
//     directory; the store directory is a value, never /nix/store implied.
//   - Nothing here touches the store: input derivations are read through
//     the Resolver a Hasher is given, path metadata through PathInfos.
package derivation

import (
	"errors"
	"fmt"
	"slices"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/storepath"
)

// Extension is the suffix of a derivation's store path name.
const Extension = ".drv"

// ErrFormat is wrapped by errors about a malformed .drv (Nix's FormatError).
var ErrFormat = errors.New("malformed derivation")

// Kind says how an output's path is determined.
type Kind uint8

const (
	// InputAddressed: the path is fixed in the .drv (hashDerivationModulo).
	InputAddressed Kind = iota + 1
	// CAFixed: fixed-output; the path follows from the declared hash.
	CAFixed
	// CAFloating: content-addressed, path known only after the build
	// (experimental feature ca-derivations).
	CAFloating
	// Deferred: input-addressed, but the path depends on floating inputs.
	Deferred
	// Impure: a new path every build (experimental impure-derivations).
	Impure
)

func (k Kind) String() string {
	switch k {
	case InputAddressed:
		return "input-addressed"
	case CAFixed:
		return "fixed"
	case CAFloating:
		return "floating"
	case Deferred:
		return "deferred"
	case Impure:
		return "impure"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Output is one output of a derivation.
type Output struct {
	Kind Kind
	// Path is set for InputAddressed outputs only; a CAFixed output's path
	// is computed (OutputPath), as Nix ignores the path written in the .drv.
	Path storepath.Path
	// Recursive is the ingestion method of CA kinds: NAR ("r:") or flat.
	Recursive bool
	// HashAlgo is the hash algorithm of CA kinds.
	HashAlgo hash.Algo
	// Hash is the declared hash of a CAFixed output.
	Hash hash.Hash
}

// methodAlgo renders "[r:]algo" as Nix's printMethodAlgo does.
func (o Output) methodAlgo() string {
	if o.Recursive {
		return "r:" + o.HashAlgo.String()
	}
	return o.HashAlgo.String()
}

// Derivation is a store derivation. Maps and sets print sorted; InputSrcs
// and the output-name lists of InputDrvs are kept sorted and unique.
type Derivation struct {
	// Dir is the store directory of every path in the derivation.
	Dir storepath.Dir
	// Name is the derivation's name: its store path name without ".drv".
	Name      string
	Outputs   map[string]Output
	InputDrvs map[storepath.Path][]string
	InputSrcs []storepath.Path
	Platform  string
	Builder   string
	Args      []string
	Env       map[string]string
}

// NameFromPath returns the derivation name of a .drv store path.
func NameFromPath(drvPath storepath.Path) (string, error) {
	name, ok := cutSuffix(drvPath.Name(), Extension)
	if !ok || name == "" {
		return "", fmt.Errorf("%s is not a derivation (its name does not end in %s)", drvPath, Extension)
	}
	return name, nil
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}

// OutputPathName is the store path name of output out of a derivation
// named drvName: drvName for "out", drvName-out otherwise.
func OutputPathName(drvName, out string) string {
	if out == "out" {
		return drvName
	}
	return drvName + "-" + out
}

// IsBuiltin reports whether the builder is one of Nix's builtin builders.
func (d *Derivation) IsBuiltin() bool { return len(d.Builder) >= 8 && d.Builder[:8] == "builtin:" }

// OutputNames returns the output names, sorted.
func (d *Derivation) OutputNames() []string { return sortedKeys(d.Outputs) }

// OutputPath returns the path of output out if it is known before the
// build (input-addressed or fixed-output), and false otherwise.
func (d *Derivation) OutputPath(out string) (storepath.Path, bool, error) {
	o, ok := d.Outputs[out]
	if !ok {
		return storepath.Path{}, false, fmt.Errorf("derivation %q has no output %q", d.Name, out)
	}
	switch o.Kind {
	case InputAddressed:
		return o.Path, true, nil
	case CAFixed:
		p, err := d.Dir.MakeFixedOutputPath(OutputPathName(d.Name, out), o.Recursive, o.Hash, nil, false)
		if err != nil {
			return storepath.Path{}, false, fmt.Errorf("derivation %q output %q: %w", d.Name, out, err)
		}
		return p, true, nil
	}
	return storepath.Path{}, false, nil
}

// Clone returns a deep copy of d.
func (d *Derivation) Clone() *Derivation {
	c := *d
	c.Outputs = make(map[string]Output, len(d.Outputs))
	for k, v := range d.Outputs {
		c.Outputs[k] = v
	}
	c.InputDrvs = make(map[storepath.Path][]string, len(d.InputDrvs))
	for k, v := range d.InputDrvs {
		c.InputDrvs[k] = slices.Clone(v)
	}
	c.InputSrcs = slices.Clone(d.InputSrcs)
	c.Args = slices.Clone(d.Args)
	c.Env = make(map[string]string, len(d.Env))
	for k, v := range d.Env {
		c.Env[k] = v
	}
	return &c
}

// Type is the classification of a derivation by its outputs (Nix's
// DerivationType).
type Type uint8

const (
	TypeInputAddressed Type = iota + 1
	TypeDeferred            // input-addressed, outputs deferred
	TypeFixed               // fixed-output (content-addressed, not sandboxed)
	TypeFloating            // floating content-addressed
	TypeImpure
)

// IsCA reports whether outputs are content-addressed (impure counts).
func (t Type) IsCA() bool { return t == TypeFixed || t == TypeFloating || t == TypeImpure }

// IsFixed reports whether this is a fixed-output derivation.
func (t Type) IsFixed() bool { return t == TypeFixed }

// HasKnownOutputPaths reports whether output paths are known before building.
func (t Type) HasKnownOutputPaths() bool { return t == TypeInputAddressed || t == TypeFixed }

// IsSandboxed reports whether the build is cut off from the network.
func (t Type) IsSandboxed() bool {
	return t == TypeInputAddressed || t == TypeDeferred || t == TypeFloating
}

// IsPure reports whether the outputs are a function of the inputs.
func (t Type) IsPure() bool { return t != TypeImpure }

func (t Type) String() string {
	switch t {
	case TypeInputAddressed:
		return "input-addressed"
	case TypeDeferred:
		return "deferred input-addressed"
	case TypeFixed:
		return "fixed-output"
	case TypeFloating:
		return "floating content-addressed"
	case TypeImpure:
		return "impure"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Type classifies d with Nix's rules and error messages.
func (d *Derivation) Type() (Type, error) {
	var count [Impure + 1]int
	var floatingAlgo hash.Algo
	for _, name := range sortedKeys(d.Outputs) {
		o := d.Outputs[name]
		if o.Kind < InputAddressed || o.Kind > Impure {
			return 0, fmt.Errorf("output %q has no valid kind", name)
		}
		count[o.Kind]++
		if o.Kind == CAFloating {
			if floatingAlgo == 0 {
				floatingAlgo = o.HashAlgo
			} else if floatingAlgo != o.HashAlgo {
				return 0, errors.New("all floating outputs must use the same hash type")
			}
		}
	}
	kinds := 0
	var only Kind
	for k := InputAddressed; k <= Impure; k++ {
		if count[k] > 0 {
			kinds++
			only = k
		}
	}
	switch {
	case kinds == 0:
		return 0, errors.New("must have at least one output")
	case kinds > 1:
		return 0, errors.New("can't mix derivation output types")
	}
	switch only {
	case InputAddressed:
		return TypeInputAddressed, nil
	case CAFixed:
		if count[CAFixed] > 1 {
			return 0, errors.New("only one fixed output is allowed for now")
		}
		if _, ok := d.Outputs["out"]; !ok {
			return 0, errors.New(`single fixed output must be named "out"`)
		}
		return TypeFixed, nil
	case CAFloating:
		return TypeFloating, nil
	case Deferred:
		return TypeDeferred, nil
	}
	return TypeImpure, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortedPaths[V any](m map[storepath.Path]V) []storepath.Path {
	keys := make([]storepath.Path, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, storepath.Compare)
	return keys
}
