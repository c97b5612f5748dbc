package derivation

import (
	"context"
	"fmt"
	"slices"

	"github.com/silo-cache/silo/internal/storepath"
)

// InputOutputs tells the real path of output out of input derivation
// drvPath, if it is known (built or substituted).
type InputOutputs func(drvPath storepath.Path, out string) (storepath.Path, bool)

// Resolve is Nix's Derivation::tryResolve: a derivation whose inputs are
// known paths instead of derivations. Every downstream placeholder of an
// input output is replaced by its path (in the builder, arguments and
// environment names and values), those paths become input sources, input
// derivations are dropped, and deferred outputs get the paths their new
// modulo hash gives. It returns false (with the output Nix warns about)
// when an input output is not known.
func (h *Hasher) Resolve(ctx context.Context, d *Derivation, known InputOutputs) (*Derivation, string, error) {
	r := d.Clone()
	r.InputDrvs = map[storepath.Path][]string{}
	rewrites := map[string]string{}
	for _, drvPath := range sortedPaths(d.InputDrvs) {
		for _, out := range d.InputDrvs[drvPath] {
			p, ok := known(drvPath, out)
			if !ok {
				return nil, fmt.Sprintf("output '%s' of input '%s' missing, aborting the resolving", out, drvPath), nil
			}
			rewrites[DownstreamPlaceholder(drvPath, out)] = p.String()
			r.InputSrcs = append(r.InputSrcs, p)
		}
	}
	slices.SortFunc(r.InputSrcs, storepath.Compare)
	r.InputSrcs = slices.Compact(r.InputSrcs)
	r.Builder = Rewrite(r.Builder, rewrites)
	for i, a := range r.Args {
		r.Args[i] = Rewrite(a, rewrites)
	}
	env := make(map[string]string, len(r.Env))
	for _, k := range sortedKeys(r.Env) {
		nk := Rewrite(k, rewrites)
		if _, dup := env[nk]; !dup { // std::map::emplace keeps the first
			env[nk] = Rewrite(r.Env[k], rewrites)
		}
	}
	r.Env = env
	dh, err := h.HashModulo(ctx, r, true)
	if err != nil {
		return nil, "", err
	}
	for _, name := range r.OutputNames() {
		if r.Outputs[name].Kind != Deferred {
			continue
		}
		p, err := MakeOutputPath(r.Dir, name, dh.Hashes[name], r.Name)
		if err != nil {
			return nil, "", err
		}
		r.Env[name] = p.String()
		r.Outputs[name] = Output{Kind: InputAddressed, Path: p}
	}
	return r, "", nil
}
