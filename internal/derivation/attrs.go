package derivation

import (
	"crypto/sha256"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/nixjson"
	"github.com/silo-cache/silo/internal/storepath"
)

// Attrs reads the attributes a build consults (Nix's ParsedDerivation):
// from the __json attribute when the derivation has structured attributes,
// otherwise from its environment.
type Attrs struct {
	drvPath    storepath.Path
	drv        *Derivation
	structured *nixjson.Value
}

// NewAttrs parses d's structured attributes, if any. drvPath names the
// derivation in error messages.
func NewAttrs(drvPath storepath.Path, d *Derivation) (*Attrs, error) {
	a := &Attrs{drvPath: drvPath, drv: d}
	if js, ok := d.Env["__json"]; ok {
		v, err := nixjson.Parse([]byte(js))
		if err != nil {
			return nil, fmt.Errorf("cannot process __json attribute of '%s': %w", drvPath.Base(), err)
		}
		a.structured = v
	}
	return a, nil
}

// Structured returns the structured attributes, or nil without __json.
func (a *Attrs) Structured() *nixjson.Value { return a.structured }

// String is Nix's getStringAttr.
func (a *Attrs) String(name string) (string, bool, error) {
	if a.structured != nil {
		v := a.structured.Find(name)
		if v == nil {
			return "", false, nil
		}
		if v.Kind != nixjson.String {
			return "", false, fmt.Errorf("attribute '%s' of derivation '%s' must be a string", name, a.drvPath.Base())
		}
		return v.Str, true, nil
	}
	s, ok := a.drv.Env[name]
	return s, ok, nil
}

// Bool is Nix's getBoolAttr: in the environment only "1" is true.
func (a *Attrs) Bool(name string, def bool) (bool, error) {
	if a.structured != nil {
		v := a.structured.Find(name)
		if v == nil {
			return def, nil
		}
		if v.Kind != nixjson.Bool {
			return false, fmt.Errorf("attribute '%s' of derivation '%s' must be a Boolean", name, a.drvPath.Base())
		}
		return v.Bool, nil
	}
	s, ok := a.drv.Env[name]
	if !ok {
		return def, nil
	}
	return s == "1", nil
}

// Strings is Nix's getStringsAttr: a list of strings, or in the
// environment the whitespace-separated words of the value.
func (a *Attrs) Strings(name string) ([]string, bool, error) {
	if a.structured != nil {
		v := a.structured.Find(name)
		if v == nil {
			return nil, false, nil
		}
		if v.Kind != nixjson.Array {
			return nil, false, fmt.Errorf("attribute '%s' of derivation '%s' must be a list of strings", name, a.drvPath.Base())
		}
		out := make([]string, 0, len(v.Elems))
		for _, e := range v.Elems {
			if e.Kind != nixjson.String {
				return nil, false, fmt.Errorf("attribute '%s' of derivation '%s' must be a list of strings", name, a.drvPath.Base())
			}
			out = append(out, e.Str)
		}
		return out, true, nil
	}
	s, ok := a.drv.Env[name]
	if !ok {
		return nil, false, nil
	}
	return Tokenize(s), true, nil
}

// Tokenize splits s at spaces, tabs and newlines as Nix's tokenizeString.
func Tokenize(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}

// RequiredSystemFeatures is Nix's getRequiredSystemFeatures, sorted:
// requiredSystemFeatures plus ca-derivations when output paths are unknown.
func (a *Attrs) RequiredSystemFeatures() ([]string, error) {
	fs, _, err := a.Strings("requiredSystemFeatures")
	if err != nil {
		return nil, err
	}
	typ, err := a.drv.Type()
	if err != nil {
		return nil, err
	}
	if !typ.HasKnownOutputPaths() {
		fs = append(fs, "ca-derivations")
	}
	return sortUnique(fs), nil
}

// PreferLocalBuild is the preferLocalBuild attribute (default false).
func (a *Attrs) PreferLocalBuild() (bool, error) { return a.Bool("preferLocalBuild", false) }

// SubstitutesAllowed is the allowSubstitutes attribute (default true).
func (a *Attrs) SubstitutesAllowed() (bool, error) { return a.Bool("allowSubstitutes", true) }

// NoChroot is the __noChroot attribute (default false).
func (a *Attrs) NoChroot() (bool, error) { return a.Bool("__noChroot", false) }

// ImpureEnvVars lists the variables a fixed-output build takes from the
// daemon's environment.
func (a *Attrs) ImpureEnvVars() ([]string, error) {
	vs, _, err := a.Strings("impureEnvVars")
	return vs, err
}

// Machine describes the local builder for CanBuildLocally.
type Machine struct {
	System         string
	ExtraPlatforms []string
	MaxJobs        int
	SystemFeatures []string
}

// CanBuildLocally is Nix's canBuildLocally. When it returns false, err
// (if not nil) is the message Nix gives for a platform mismatch.
func (a *Attrs) CanBuildLocally(m Machine) (bool, error) {
	d := a.drv
	if d.Platform != m.System && !slices.Contains(m.ExtraPlatforms, d.Platform) && !d.IsBuiltin() {
		return false, a.platformError(m)
	}
	if m.MaxJobs == 0 && !d.IsBuiltin() {
		return false, nil
	}
	fs, err := a.RequiredSystemFeatures()
	if err != nil {
		return false, err
	}
	for _, f := range fs {
		if !slices.Contains(m.SystemFeatures, f) {
			return false, a.platformError(m)
		}
	}
	return true, nil
}

func (a *Attrs) platformError(m Machine) error {
	fs, _ := a.RequiredSystemFeatures()
	return fmt.Errorf("a '%s' with features {%s} is required to build '%s', but I am a '%s' with features {%s}",
		a.drv.Platform, strings.Join(fs, ", "), a.drvPath, m.System, strings.Join(sortUnique(slices.Clone(m.SystemFeatures)), ", "))
}

// PassAsFile returns the names of attributes passed as files (ignored
// with structured attributes, as in Nix), sorted.
func (a *Attrs) PassAsFile() []string {
	if a.structured != nil {
		return nil
	}
	return sortUnique(Tokenize(a.drv.Env["passAsFile"]))
}

// PassAsFileName is the name, in the build directory, of the file holding
// attribute name: ".attr-" + nix32(sha256(name)). Its path is given to the
// builder as <name>Path.
func PassAsFileName(name string) string {
	sum := sha256.Sum256([]byte(name))
	return ".attr-" + nix32.Encode(sum[:])
}

// GraphExport is one pair of exportReferencesGraph: the closure of Path
// is written to FileName in the build directory.
type GraphExport struct {
	FileName string
	Path     storepath.Path
}

var graphFileName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

// ExportReferencesGraph parses the exportReferencesGraph attribute of a
// derivation without structured attributes (with them, see
// PrepareStructuredAttrs), with Nix's errors.
func (a *Attrs) ExportReferencesGraph() ([]GraphExport, error) {
	if a.structured != nil {
		return nil, nil
	}
	s := a.drv.Env["exportReferencesGraph"]
	ss := Tokenize(s)
	if len(ss)%2 != 0 {
		return nil, fmt.Errorf("odd number of tokens in 'exportReferencesGraph': '%s'", s)
	}
	var out []GraphExport
	for i := 0; i < len(ss); i += 2 {
		name, ps := ss[i], ss[i+1]
		if !graphFileName.MatchString(name) {
			return nil, fmt.Errorf("invalid file name '%s' in 'exportReferencesGraph'", name)
		}
		p, err := a.toStorePath(ps)
		if err != nil {
			return nil, err
		}
		out = append(out, GraphExport{FileName: name, Path: p})
	}
	return out, nil
}

// toStorePath is Nix's isInStore + toStorePath: the store path a path in
// the store lies in.
func (a *Attrs) toStorePath(s string) (storepath.Path, error) {
	dir := string(a.drv.Dir) + "/"
	rest, ok := strings.CutPrefix(s, dir)
	if !ok || rest == "" {
		return storepath.Path{}, fmt.Errorf("'exportReferencesGraph' contains a non-store path '%s'", s)
	}
	base, _, _ := strings.Cut(rest, "/")
	return a.drv.Dir.ParseBase(base)
}
