package derivation

import (
	"context"
	"fmt"
	"strings"

	"github.com/silo-cache/silo/internal/nixjson"
	"github.com/silo-cache/silo/internal/storepath"
)

// OutputChecks are the restrictions a derivation puts on one output:
// allowedReferences & co. (lists of store paths or output names; nil when
// not given) and, with structured attributes, maxSize and maxClosureSize.
type OutputChecks struct {
	IgnoreSelfRefs       bool // without structured attributes: a closure check ignores the output itself
	MaxSize              *uint64
	MaxClosureSize       *uint64
	AllowedReferences    []string
	AllowedRequisites    []string
	DisallowedReferences []string
	DisallowedRequisites []string
}

// Checks returns the checks for output out, or nil if there are none
// (structured attributes without outputChecks.<out>).
func (a *Attrs) Checks(out string) (*OutputChecks, error) {
	if a.structured == nil {
		c := &OutputChecks{IgnoreSelfRefs: true}
		for _, f := range []struct {
			name string
			dst  *[]string
		}{
			{"allowedReferences", &c.AllowedReferences}, {"allowedRequisites", &c.AllowedRequisites},
			{"disallowedReferences", &c.DisallowedReferences}, {"disallowedRequisites", &c.DisallowedRequisites},
		} {
			v, ok, err := a.Strings(f.name)
			if err != nil {
				return nil, err
			}
			if ok && v == nil {
				v = []string{}
			}
			*f.dst = v
		}
		return c, nil
	}
	o := a.structured.Find("outputChecks").Find(out)
	if o == nil {
		return nil, nil
	}
	c := &OutputChecks{}
	for _, f := range []struct {
		name string
		dst  **uint64
	}{{"maxSize", &c.MaxSize}, {"maxClosureSize", &c.MaxClosureSize}} {
		if v := o.Find(f.name); v != nil {
			n, err := v.GetUint64()
			if err != nil {
				return nil, fmt.Errorf("outputChecks.%s.%s of derivation '%s': %w", out, f.name, a.drvPath, err)
			}
			*f.dst = &n
		}
	}
	for _, f := range []struct {
		name string
		dst  *[]string
	}{
		{"allowedReferences", &c.AllowedReferences}, {"allowedRequisites", &c.AllowedRequisites},
		{"disallowedReferences", &c.DisallowedReferences}, {"disallowedRequisites", &c.DisallowedRequisites},
	} {
		v := o.Find(f.name)
		if v == nil {
			continue
		}
		list := []string{}
		for _, e := range v.Iter() {
			if e.Kind != nixjson.String {
				return nil, fmt.Errorf("attribute '%s' of derivation '%s' must be a list of strings", f.name, a.drvPath)
			}
			list = append(list, e.Str)
		}
		*f.dst = list
	}
	return c, nil
}

// CheckOutputs is Nix's checkOutputs after a build: outputs maps each
// output name to its new path info; paths that are not outputs are looked
// up in s. The error texts are Nix's (tests grep the offending paths).
func (a *Attrs) CheckOutputs(ctx context.Context, s Store, outputs map[string]*PathInfo) error {
	byPath := map[storepath.Path]*PathInfo{}
	for _, info := range outputs {
		byPath[info.Path] = info
	}
	info := func(p storepath.Path) (*PathInfo, error) {
		if i, ok := byPath[p]; ok {
			return i, nil
		}
		return s.PathInfo(ctx, p)
	}
	closure := func(p storepath.Path) (map[storepath.Path]bool, uint64, error) {
		done := map[storepath.Path]bool{}
		var size uint64
		todo := []storepath.Path{p}
		for len(todo) > 0 {
			q := todo[0]
			todo = todo[1:]
			if done[q] {
				continue
			}
			done[q] = true
			i, err := info(q)
			if err != nil {
				return nil, 0, err
			}
			size += i.NarSize
			todo = append(todo, i.References...)
		}
		return done, size, nil
	}
	for _, out := range sortedKeys(outputs) {
		oi := outputs[out]
		c, err := a.Checks(out)
		if err != nil {
			return err
		}
		if c == nil {
			continue
		}
		if c.MaxSize != nil && oi.NarSize > *c.MaxSize {
			return fmt.Errorf("path '%s' is too large at %d bytes; limit is %d bytes", oi.Path, oi.NarSize, *c.MaxSize)
		}
		if c.MaxClosureSize != nil {
			_, size, err := closure(oi.Path)
			if err != nil {
				return err
			}
			if size > *c.MaxClosureSize {
				return fmt.Errorf("closure of path '%s' is too large at %d bytes; limit is %d bytes", oi.Path, size, *c.MaxClosureSize)
			}
		}
		check := func(spec []string, allowed, recursive bool) error {
			if spec == nil {
				return nil
			}
			set := map[storepath.Path]bool{}
			for _, sp := range spec {
				if p, err := a.drv.Dir.Parse(sp); err == nil {
					set[p] = true
				} else if o, ok := outputs[sp]; ok {
					set[o.Path] = true
				} else {
					return fmt.Errorf("derivation contains an illegal reference specifier '%s'", sp)
				}
			}
			used := map[storepath.Path]bool{}
			if recursive {
				if used, _, err = closure(oi.Path); err != nil {
					return err
				}
				if c.IgnoreSelfRefs {
					delete(used, oi.Path)
				}
			} else {
				for _, r := range oi.References {
					used[r] = true
				}
			}
			var bad []string
			for _, p := range sortedPaths(used) {
				if set[p] != allowed {
					bad = append(bad, "\n  "+p.String())
				}
			}
			if len(bad) > 0 {
				return fmt.Errorf("output '%s' is not allowed to refer to the following paths:%s", oi.Path, strings.Join(bad, ""))
			}
			return nil
		}
		for _, f := range []struct {
			spec               []string
			allowed, recursive bool
		}{
			{c.AllowedReferences, true, false}, {c.AllowedRequisites, true, true},
			{c.DisallowedReferences, false, false}, {c.DisallowedRequisites, false, true},
		} {
			if err := check(f.spec, f.allowed, f.recursive); err != nil {
				return err
			}
		}
	}
	return nil
}

// CheckDerivationOutputs is the check Nix's registerValidPaths makes of a
// .drv before registering it (LocalStore::checkDerivationOutputs): every
// input-addressed output path must be what hashDerivationModulo gives, and
// the environment variable of every known output must name its path.
func CheckDerivationOutputs(ctx context.Context, h *Hasher, drvPath storepath.Path, d *Derivation) error {
	if _, err := d.Type(); err != nil {
		return fmt.Errorf("derivation '%s': %w", drvPath, err)
	}
	envHasRightPath := func(actual storepath.Path, name string) error {
		v, ok := d.Env[name]
		if ok {
			if p, err := d.Dir.Parse(v); err == nil && p == actual {
				return nil
			}
		}
		return fmt.Errorf("derivation '%s' has incorrect environment variable '%s', should be '%s'", drvPath, name, actual)
	}
	var modulo *DrvHash
	for _, name := range d.OutputNames() {
		o := d.Outputs[name]
		switch o.Kind {
		case InputAddressed:
			if modulo == nil {
				dh, err := h.HashModulo(ctx, d, true)
				if err != nil {
					return err
				}
				modulo = &dh
			}
			want, err := MakeOutputPath(d.Dir, name, modulo.Hashes[name], d.Name)
			if err != nil {
				return err
			}
			if o.Path != want {
				return fmt.Errorf("derivation '%s' has incorrect output '%s', should be '%s'", drvPath, o.Path, want)
			}
			if err := envHasRightPath(o.Path, name); err != nil {
				return err
			}
		case CAFixed:
			p, _, err := d.OutputPath(name)
			if err != nil {
				return err
			}
			if err := envHasRightPath(p, name); err != nil {
				return err
			}
		}
	}
	return nil
}
