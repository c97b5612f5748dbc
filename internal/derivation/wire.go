package derivation

import (
	"fmt"
	"slices"

	"github.com/silo-cache/silo/internal/storepath"
)

// WireReader reads the worker protocol's primitives (worker.Decoder is one).
type WireReader interface {
	Uint64() (uint64, error)
	String() (string, error)
	Strings() ([]string, error)
}

// WireWriter writes the worker protocol's primitives (worker.Encoder is one).
type WireWriter interface {
	Uint64(uint64)
	String(string)
	Strings([]string)
}

// ReadBasic reads a BasicDerivation in the wire form of the BuildDerivation
// op (Nix's readDerivation over a Source): outputs, input sources,
// platform, builder, arguments and environment; no input derivations.
// The name comes from drvPath, as in Nix.
func ReadBasic(r WireReader, drvPath storepath.Path, xp Features) (*Derivation, error) {
	name, err := NameFromPath(drvPath)
	if err != nil {
		return nil, err
	}
	dir := drvPath.Dir()
	d := &Derivation{Dir: dir, Name: name, Outputs: map[string]Output{}, InputDrvs: map[storepath.Path][]string{}, Env: map[string]string{}}
	n, err := r.Uint64()
	if err != nil {
		return nil, fmt.Errorf("read derivation %s: %w", drvPath, err)
	}
	for range n {
		var f [4]string
		for k := range f {
			if f[k], err = r.String(); err != nil {
				return nil, fmt.Errorf("read derivation %s: output: %w", drvPath, err)
			}
		}
		o, err := parseOutput(dir, f[1], f[2], f[3], xp)
		if err != nil {
			return nil, fmt.Errorf("read derivation %s: output %q: %w", drvPath, f[0], err)
		}
		if _, dup := d.Outputs[f[0]]; !dup {
			d.Outputs[f[0]] = o
		}
	}
	srcs, err := r.Strings()
	if err != nil {
		return nil, fmt.Errorf("read derivation %s: input sources: %w", drvPath, err)
	}
	for _, s := range srcs {
		p, err := dir.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("read derivation %s: input source: %w", drvPath, err)
		}
		d.InputSrcs = append(d.InputSrcs, p)
	}
	slices.SortFunc(d.InputSrcs, storepath.Compare)
	d.InputSrcs = slices.Compact(d.InputSrcs)
	if d.Platform, err = r.String(); err != nil {
		return nil, fmt.Errorf("read derivation %s: platform: %w", drvPath, err)
	}
	if d.Builder, err = r.String(); err != nil {
		return nil, fmt.Errorf("read derivation %s: builder: %w", drvPath, err)
	}
	if d.Args, err = r.Strings(); err != nil {
		return nil, fmt.Errorf("read derivation %s: arguments: %w", drvPath, err)
	}
	if len(d.Args) == 0 {
		d.Args = nil
	}
	if n, err = r.Uint64(); err != nil {
		return nil, fmt.Errorf("read derivation %s: environment: %w", drvPath, err)
	}
	for range n {
		k, err := r.String()
		if err != nil {
			return nil, fmt.Errorf("read derivation %s: environment: %w", drvPath, err)
		}
		v, err := r.String()
		if err != nil {
			return nil, fmt.Errorf("read derivation %s: environment %q: %w", drvPath, k, err)
		}
		d.Env[k] = v
	}
	return d, nil
}

// WriteBasic writes d in the BasicDerivation wire form (Nix's
// writeDerivation to a Sink). Input derivations are not part of it.
func WriteBasic(w WireWriter, d *Derivation) error {
	names := d.OutputNames()
	w.Uint64(uint64(len(names)))
	for _, name := range names {
		o := d.Outputs[name]
		var path, algo, h string
		switch o.Kind {
		case InputAddressed:
			path = o.Path.String()
		case CAFixed:
			p, _, err := d.OutputPath(name)
			if err != nil {
				return err
			}
			path, algo, h = p.String(), o.methodAlgo(), o.Hash.Base16()
		case CAFloating:
			algo = o.methodAlgo()
		case Deferred:
		case Impure:
			algo, h = o.methodAlgo(), "impure"
		default:
			return fmt.Errorf("derivation %q: output %q has no valid kind", d.Name, name)
		}
		w.String(name)
		w.String(path)
		w.String(algo)
		w.String(h)
	}
	srcs := slices.Clone(d.InputSrcs)
	slices.SortFunc(srcs, storepath.Compare)
	srcs = slices.Compact(srcs)
	ss := make([]string, len(srcs))
	for i, p := range srcs {
		ss[i] = p.String()
	}
	w.Strings(ss)
	w.String(d.Platform)
	w.String(d.Builder)
	w.Strings(d.Args)
	keys := sortedKeys(d.Env)
	w.Uint64(uint64(len(keys)))
	for _, k := range keys {
		w.String(k)
		w.String(d.Env[k])
	}
	return nil
}
