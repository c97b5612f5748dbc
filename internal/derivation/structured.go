package derivation

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nixjson"
	"github.com/silo-cache/silo/internal/storepath"
)

// PathInfo is the metadata of a valid store path that builds consult.
type PathInfo struct {
	Path       storepath.Path
	NarHash    hash.Hash
	NarSize    uint64
	References []storepath.Path
	CA         string // rendered content address, "" for none
}

// Store is what exporting a references graph needs from the store.
type Store interface {
	Resolver
	// PathInfo returns the metadata of a valid path, or an error.
	PathInfo(ctx context.Context, p storepath.Path) (*PathInfo, error)
}

// Closure returns the paths reachable from roots by references, roots
// included, sorted (Nix's computeFSClosure).
func Closure(ctx context.Context, s Store, roots []storepath.Path) ([]storepath.Path, error) {
	seen := map[storepath.Path]bool{}
	todo := slices.Clone(roots)
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		info, err := s.PathInfo(ctx, p)
		if err != nil {
			return nil, err
		}
		todo = append(todo, info.References...)
	}
	return sortedPaths(seen), nil
}

// ExportReferences is Nix's exportReferences: the closure of paths, each
// of which must be in inputPaths, plus the closures of the outputs of
// every derivation in it.
func ExportReferences(ctx context.Context, s Store, paths []storepath.Path, inputPaths map[storepath.Path]bool) ([]storepath.Path, error) {
	for _, p := range paths {
		if !inputPaths[p] {
			return nil, fmt.Errorf("cannot export references of path '%s' because it is not in the input closure of the derivation", p)
		}
	}
	closure, err := Closure(ctx, s, paths)
	if err != nil {
		return nil, err
	}
	roots := slices.Clone(closure)
	for _, p := range closure {
		if !p.IsDerivation() {
			continue
		}
		d, err := s.ReadDerivation(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, out := range d.OutputNames() {
			op, known, err := d.OutputPath(out)
			if err != nil {
				return nil, err
			}
			if !known {
				return nil, fmt.Errorf("exportReferences on CA derivations is not yet implemented")
			}
			roots = append(roots, op)
		}
	}
	return Closure(ctx, s, roots)
}

// ValidityRegistration is the text of an exportReferencesGraph file for a
// derivation without structured attributes (Nix's makeValidityRegistration
// without derivers or hashes): per path its name, an empty deriver line,
// the number of references and the references.
func ValidityRegistration(ctx context.Context, s Store, paths []storepath.Path) ([]byte, error) {
	var b []byte
	for _, p := range paths {
		info, err := s.PathInfo(ctx, p)
		if err != nil {
			return nil, err
		}
		refs := slices.Clone(info.References)
		slices.SortFunc(refs, storepath.Compare)
		b = append(b, p.String()...)
		b = append(b, "\n\n"...)
		b = strconv.AppendInt(b, int64(len(refs)), 10)
		b = append(b, '\n')
		for _, r := range refs {
			b = append(b, r.String()...)
			b = append(b, '\n')
		}
	}
	return b, nil
}

// pathInfoJSON is Nix's pathInfoToJSON(paths, includeImpureInfo=false,
// showClosureSize=true) as parsed back into JSON.
func pathInfoJSON(ctx context.Context, s Store, paths []storepath.Path) (*nixjson.Value, error) {
	arr := nixjson.NewArray()
	for _, p := range paths {
		info, err := s.PathInfo(ctx, p)
		if err != nil {
			return nil, err
		}
		o := nixjson.NewObject()
		o.Set("path", nixjson.NewString(p.String()))
		o.Set("narHash", nixjson.NewString(info.NarHash.String()))
		o.Set("narSize", &nixjson.Value{Kind: nixjson.Uint, Uint: info.NarSize})
		refs := slices.Clone(info.References)
		slices.SortFunc(refs, storepath.Compare)
		ra := nixjson.NewArray()
		for _, r := range refs {
			ra.Elems = append(ra.Elems, nixjson.NewString(r.String()))
		}
		o.Set("references", ra)
		if info.CA != "" {
			o.Set("ca", nixjson.NewString(info.CA))
		}
		closure, err := Closure(ctx, s, []storepath.Path{p})
		if err != nil {
			return nil, err
		}
		var size uint64
		for _, c := range closure {
			ci, err := s.PathInfo(ctx, c)
			if err != nil {
				return nil, err
			}
			size += ci.NarSize
		}
		o.Set("closureSize", &nixjson.Value{Kind: nixjson.Uint, Uint: size})
		arr.Elems = append(arr.Elems, o)
	}
	return arr, nil
}

// PrepareStructuredAttrs is Nix's prepareStructuredAttrs: the structured
// attributes with "outputs" mapping each output to its placeholder and
// each exportReferencesGraph entry added as a key holding the path infos
// of its closure. It returns nil without structured attributes.
func (a *Attrs) PrepareStructuredAttrs(ctx context.Context, s Store, inputPaths map[storepath.Path]bool) (*nixjson.Value, error) {
	if a.structured == nil {
		return nil, nil
	}
	js := nixjson.NewObject()
	for k, v := range a.structured.Keys {
		js.Set(k, v)
	}
	outs := nixjson.NewObject()
	for _, name := range a.drv.OutputNames() {
		outs.Set(name, nixjson.NewString(HashPlaceholder(name)))
	}
	js.Set("outputs", outs)
	if e := js.Find("exportReferencesGraph"); e != nil && e.Kind == nixjson.Object {
		for _, key := range e.SortedKeys() {
			var paths []storepath.Path
			for _, pv := range e.Keys[key].Iter() {
				ps, err := pv.GetString()
				if err != nil {
					return nil, fmt.Errorf("exportReferencesGraph.%s of derivation '%s': %w", key, a.drvPath.Base(), err)
				}
				p, err := a.drv.Dir.Parse(ps)
				if err != nil {
					return nil, err
				}
				paths = append(paths, p)
			}
			closure, err := ExportReferences(ctx, s, paths, inputPaths)
			if err != nil {
				return nil, err
			}
			v, err := pathInfoJSON(ctx, s, closure)
			if err != nil {
				return nil, err
			}
			js.Set(key, v)
		}
	}
	return js, nil
}

// StructuredAttrsFiles returns the contents of .attrs.json and .attrs.sh
// for prepared structured attributes js as Nix's writeStructuredAttrs
// writes them: output paths rewritten first, then each file's text.
func StructuredAttrsFiles(js *nixjson.Value, rewrites map[string]string) (attrsJSON, attrsSh []byte, err error) {
	top := nixjson.NewObject()
	for k, v := range js.Keys {
		top.Set(k, v)
	}
	outs := nixjson.NewObject()
	if o := js.Find("outputs"); o != nil {
		for _, k := range o.SortedKeys() {
			s, err := o.Keys[k].GetString()
			if err != nil {
				return nil, nil, fmt.Errorf("structured attribute outputs.%s: %w", k, err)
			}
			outs.Set(k, nixjson.NewString(Rewrite(s, rewrites)))
		}
	}
	top.Set("outputs", outs)
	sh := AttrsShell(top)
	dump, err := nixjson.Dump(top)
	if err != nil {
		return nil, nil, fmt.Errorf("write .attrs.json: %w", err)
	}
	return []byte(Rewrite(string(dump), rewrites)), []byte(Rewrite(sh, rewrites)), nil
}

var shVarName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// AttrsShell is Nix's writeStructuredAttrsShell: a bash declaration for
// every top-level attribute with a shell variable name whose value is a
// string, integral number, null or Boolean, or an array or object of those.
func AttrsShell(js *nixjson.Value) string {
	var b strings.Builder
	for _, key := range js.SortedKeys() {
		if !shVarName.MatchString(key) {
			continue
		}
		v := js.Keys[key]
		if s, ok := shellSimple(v); ok {
			fmt.Fprintf(&b, "declare %s=%s\n", key, s)
			continue
		}
		switch v.Kind {
		case nixjson.Array:
			var s2 strings.Builder
			good := true
			for _, e := range v.Elems {
				s3, ok := shellSimple(e)
				if !ok {
					good = false
					break
				}
				s2.WriteString(s3)
				s2.WriteByte(' ')
			}
			if good {
				fmt.Fprintf(&b, "declare -a %s=(%s)\n", key, s2.String())
			}
		case nixjson.Object:
			var s2 strings.Builder
			good := true
			for _, k2 := range v.SortedKeys() {
				s3, ok := shellSimple(v.Keys[k2])
				if !ok {
					good = false
					break
				}
				fmt.Fprintf(&s2, "[%s]=%s ", ShellEscape(k2), s3)
			}
			if good {
				fmt.Fprintf(&b, "declare -A %s=(%s)\n", key, s2.String())
			}
		}
	}
	return b.String()
}

// shellSimple is handleSimpleType of writeStructuredAttrsShell, including
// its C++ conversions: a number is integral if its float32 rounding is,
// and is then printed as a 32-bit int (truncated, as x86-64 does).
func shellSimple(v *nixjson.Value) (string, bool) {
	switch v.Kind {
	case nixjson.String:
		return ShellEscape(v.Str), true
	case nixjson.Null:
		return "''", true
	case nixjson.Bool:
		if v.Bool {
			return "1", true
		}
		return "", true
	case nixjson.Int:
		return strconv.Itoa(int(int32(v.Int))), true
	case nixjson.Uint:
		return strconv.Itoa(int(int32(v.Uint))), true
	case nixjson.Float:
		f := float32(v.Float)
		if float32(math.Ceil(float64(f))) != f {
			return "", false
		}
		d := math.Trunc(v.Float)
		if d < math.MinInt32 || d > math.MaxInt32 || d != d {
			return strconv.Itoa(math.MinInt32), true // cvttsd2si's "integer indefinite"
		}
		return strconv.Itoa(int(d)), true
	}
	return "", false
}

// ShellEscape quotes s for a POSIX shell as Nix's shellEscape.
func ShellEscape(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Rewrite is Nix's rewriteStrings: each rewrite, in key order, replaces
// every occurrence of its key. Unlike Nix it cannot loop forever when a
// replacement contains its key.
func Rewrite(s string, rewrites map[string]string) string {
	for _, from := range sortedKeys(rewrites) {
		to := rewrites[from]
		if from == to || from == "" {
			continue
		}
		if strings.Contains(to, from) {
			s = strings.ReplaceAll(s, from, to)
			continue
		}
		// Nix rescans from the start of each replacement.
		for j := 0; ; {
			k := strings.Index(s[j:], from)
			if k < 0 {
				break
			}
			j += k
			s = s[:j] + to + s[j+len(from):]
		}
	}
	return s
}
