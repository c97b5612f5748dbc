package derivation

import (
	"fmt"
	"slices"
	"strings"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/storepath"
)

// Features are the experimental features that change what Parse accepts.
type Features struct {
	CADerivations     bool // floating content-addressed outputs ("ca-derivations")
	ImpureDerivations bool // impure outputs ("impure-derivations")
}

// MissingFeatureError is Nix's MissingExperimentalFeature.
type MissingFeatureError struct{ Feature string }

func (e *MissingFeatureError) Error() string {
	return fmt.Sprintf("experimental Nix feature '%s' is disabled; use '--extra-experimental-features %s' to override", e.Feature, e.Feature)
}

// Read parses the contents of the .drv at drvPath, wrapping format errors
// as Nix does ("error parsing derivation '%s': %s").
func Read(drvPath storepath.Path, data []byte, xp Features) (*Derivation, error) {
	name, err := NameFromPath(drvPath)
	if err != nil {
		return nil, err
	}
	d, err := Parse(drvPath.Dir(), name, data, xp)
	if err != nil {
		return nil, fmt.Errorf("error parsing derivation '%s': %w", drvPath, err)
	}
	return d, nil
}

// Parse parses an ATerm derivation named name (without ".drv") whose paths
// are in dir. It accepts what Nix 2.8's parseDerivation accepts (including
// its leniency about list separators and trailing bytes), except that a
// truncated string is an error where Nix would loop.
func Parse(dir storepath.Dir, name string, data []byte, xp Features) (*Derivation, error) {
	p := parser{s: data, dir: dir}
	d := &Derivation{
		Dir:       dir,
		Name:      name,
		Outputs:   map[string]Output{},
		InputDrvs: map[storepath.Path][]string{},
		Env:       map[string]string{},
	}
	if err := p.parse(d, xp); err != nil {
		return nil, err
	}
	return d, nil
}

type parser struct {
	s   []byte
	i   int
	dir storepath.Dir
}

func (p *parser) expect(lit string) error {
	if len(p.s)-p.i < len(lit) || string(p.s[p.i:p.i+len(lit)]) != lit {
		return fmt.Errorf("%w: expected string '%s'", ErrFormat, lit)
	}
	p.i += len(lit)
	return nil
}

func (p *parser) str() (string, error) {
	if err := p.expect(`"`); err != nil {
		return "", err
	}
	// Fast path: no escapes.
	start := p.i
	for j := start; j < len(p.s); j++ {
		switch p.s[j] {
		case '"':
			p.i = j + 1
			return string(p.s[start:j]), nil
		case '\\':
			return p.slowStr(start)
		}
	}
	return "", fmt.Errorf("%w: unterminated string", ErrFormat)
}

func (p *parser) slowStr(start int) (string, error) {
	var b strings.Builder
	for j := start; j < len(p.s); j++ {
		c := p.s[j]
		switch c {
		case '"':
			p.i = j + 1
			return b.String(), nil
		case '\\':
			j++
			if j == len(p.s) {
				return "", fmt.Errorf("%w: unterminated string", ErrFormat)
			}
			switch c = p.s[j]; c {
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			}
		}
		b.WriteByte(c)
	}
	return "", fmt.Errorf("%w: unterminated string", ErrFormat)
}

func (p *parser) path() (string, error) {
	s, err := p.str()
	if err != nil {
		return "", err
	}
	return s, validatePath(s)
}

func validatePath(s string) error {
	if s == "" || s[0] != '/' {
		return fmt.Errorf("%w: bad path '%s' in derivation", ErrFormat, s)
	}
	return nil
}

func (p *parser) storePath() (storepath.Path, error) {
	s, err := p.path()
	if err != nil {
		return storepath.Path{}, err
	}
	return p.dir.Parse(s)
}

// endOfList is Nix's: a ',' continues, a ']' ends, anything else continues.
func (p *parser) endOfList() bool {
	if p.i < len(p.s) {
		switch p.s[p.i] {
		case ',':
			p.i++
			return false
		case ']':
			p.i++
			return true
		}
	}
	return false
}

func (p *parser) parse(d *Derivation, xp Features) error {
	if err := p.expect("Derive(["); err != nil {
		return err
	}
	for !p.endOfList() {
		if err := p.expect("("); err != nil {
			return err
		}
		id, err := p.str()
		if err != nil {
			return err
		}
		var f [3]string
		for k := range f {
			if err := p.expect(","); err != nil {
				return err
			}
			if f[k], err = p.str(); err != nil {
				return err
			}
		}
		if err := p.expect(")"); err != nil {
			return err
		}
		o, err := parseOutput(p.dir, f[0], f[1], f[2], xp)
		if err != nil {
			return fmt.Errorf("output %q: %w", id, err)
		}
		if _, dup := d.Outputs[id]; !dup { // std::map::emplace keeps the first
			d.Outputs[id] = o
		}
	}
	if err := p.expect(",["); err != nil {
		return err
	}
	for !p.endOfList() {
		if err := p.expect("("); err != nil {
			return err
		}
		drv, err := p.storePath()
		if err != nil {
			return err
		}
		if err := p.expect(",["); err != nil {
			return err
		}
		var outs []string
		for !p.endOfList() {
			s, err := p.str()
			if err != nil {
				return err
			}
			outs = append(outs, s)
		}
		if err := p.expect(")"); err != nil {
			return err
		}
		d.InputDrvs[drv] = sortUnique(outs)
	}
	if err := p.expect(",["); err != nil {
		return err
	}
	for !p.endOfList() {
		src, err := p.storePath()
		if err != nil {
			return err
		}
		d.InputSrcs = append(d.InputSrcs, src)
	}
	slices.SortFunc(d.InputSrcs, storepath.Compare)
	d.InputSrcs = slices.Compact(d.InputSrcs)
	var err error
	if err = p.expect(","); err != nil {
		return err
	}
	if d.Platform, err = p.str(); err != nil {
		return err
	}
	if err = p.expect(","); err != nil {
		return err
	}
	if d.Builder, err = p.str(); err != nil {
		return err
	}
	if err = p.expect(",["); err != nil {
		return err
	}
	for !p.endOfList() {
		s, err := p.str()
		if err != nil {
			return err
		}
		d.Args = append(d.Args, s)
	}
	if err = p.expect(",["); err != nil {
		return err
	}
	for !p.endOfList() {
		if err := p.expect("("); err != nil {
			return err
		}
		k, err := p.str()
		if err != nil {
			return err
		}
		if err := p.expect(","); err != nil {
			return err
		}
		v, err := p.str()
		if err != nil {
			return err
		}
		if err := p.expect(")"); err != nil {
			return err
		}
		d.Env[k] = v
	}
	return p.expect(")")
}

func sortUnique(ss []string) []string {
	slices.Sort(ss)
	return slices.Compact(ss)
}

// parseOutput is Nix's parseDerivationOutput: the output kind follows from
// which of path, hashAlgo and hash are empty.
func parseOutput(dir storepath.Dir, pathS, hashAlgo, hashS string, xp Features) (Output, error) {
	if hashAlgo == "" {
		if pathS == "" {
			return Output{Kind: Deferred}, nil
		}
		if err := validatePath(pathS); err != nil {
			return Output{}, err
		}
		p, err := dir.Parse(pathS)
		if err != nil {
			return Output{}, err
		}
		return Output{Kind: InputAddressed, Path: p}, nil
	}
	o := Output{}
	if rest, ok := strings.CutPrefix(hashAlgo, "r:"); ok {
		o.Recursive, hashAlgo = true, rest
	}
	algo, err := hash.ParseAlgo(hashAlgo)
	if err != nil {
		return Output{}, fmt.Errorf("unknown hash algorithm '%s'", hashAlgo)
	}
	o.HashAlgo = algo
	switch hashS {
	case "impure":
		if !xp.ImpureDerivations {
			return Output{}, &MissingFeatureError{"impure-derivations"}
		}
		if pathS != "" {
			return Output{}, fmt.Errorf("%w: impure output has path '%s'", ErrFormat, pathS)
		}
		o.Kind = Impure
	case "":
		if !xp.CADerivations {
			return Output{}, &MissingFeatureError{"ca-derivations"}
		}
		if pathS != "" {
			return Output{}, fmt.Errorf("%w: floating output has path '%s'", ErrFormat, pathS)
		}
		o.Kind = CAFloating
	default:
		if err := validatePath(pathS); err != nil {
			return Output{}, err
		}
		// parseNonSRIUnprefixed: a bare base16, nix32 or base64 digest.
		if strings.ContainsAny(hashS, ":-") {
			return Output{}, fmt.Errorf("hash '%s' is not a bare %s digest", hashS, algo)
		}
		h, err := hash.ParseAs(hashS, algo)
		if err != nil {
			return Output{}, err
		}
		o.Kind, o.Hash = CAFixed, h
	}
	return o, nil
}

// Print returns the ATerm text of d exactly as Nix writes it.
func (d *Derivation) Print() ([]byte, error) {
	return d.appendATerm(make([]byte, 0, 4096), false, nil)
}

// hashedInput replaces an input derivation by the base16 of its modulo
// hash when hashing (Nix's actualInputs).
type hashedInput struct {
	hash string
	outs []string
}

func (d *Derivation) appendATerm(b []byte, mask bool, inputs []hashedInput) ([]byte, error) {
	b = append(b, "Derive(["...)
	for i, name := range sortedKeys(d.Outputs) {
		o := d.Outputs[name]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '(')
		b = appendRaw(b, name)
		var path, algo, h string
		switch o.Kind {
		case InputAddressed:
			path = o.Path.String()
		case CAFixed:
			p, _, err := d.OutputPath(name)
			if err != nil {
				return nil, err
			}
			path, algo, h = p.String(), o.methodAlgo(), o.Hash.Base16()
		case CAFloating:
			algo = o.methodAlgo()
		case Deferred:
		case Impure:
			algo, h = o.methodAlgo(), "impure"
		default:
			return nil, fmt.Errorf("derivation %q: output %q has no valid kind", d.Name, name)
		}
		if mask {
			if o.Kind == InputAddressed || o.Kind == CAFixed {
				path = ""
			}
		}
		b = append(b, ',')
		b = appendRaw(b, path)
		b = append(b, ',')
		b = appendRaw(b, algo)
		b = append(b, ',')
		b = appendRaw(b, h)
		b = append(b, ')')
	}
	b = append(b, "],["...)
	if inputs != nil {
		for i, in := range inputs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '(')
			b = appendRaw(b, in.hash)
			b = append(b, ',')
			b = appendRawList(b, in.outs)
			b = append(b, ')')
		}
	} else {
		for i, p := range sortedPaths(d.InputDrvs) {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '(')
			b = appendRaw(b, p.String())
			b = append(b, ',')
			b = appendRawList(b, sortUnique(slices.Clone(d.InputDrvs[p])))
			b = append(b, ')')
		}
	}
	b = append(b, "],["...)
	srcs := slices.Clone(d.InputSrcs)
	slices.SortFunc(srcs, storepath.Compare)
	srcs = slices.Compact(srcs)
	for i, p := range srcs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendRaw(b, p.String())
	}
	b = append(b, "],"...)
	b = appendRaw(b, d.Platform)
	b = append(b, ',')
	b = appendEscaped(b, d.Builder)
	b = append(b, ",["...)
	for i, a := range d.Args {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendEscaped(b, a)
	}
	b = append(b, "],["...)
	for i, k := range sortedKeys(d.Env) {
		if i > 0 {
			b = append(b, ',')
		}
		v := d.Env[k]
		if mask {
			if _, isOut := d.Outputs[k]; isOut {
				v = ""
			}
		}
		b = append(b, '(')
		b = appendEscaped(b, k)
		b = append(b, ',')
		b = appendEscaped(b, v)
		b = append(b, ')')
	}
	return append(b, "])"...), nil
}

func appendRaw(b []byte, s string) []byte {
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendRawList(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendRaw(b, s)
	}
	return append(b, ']')
}

func appendEscaped(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '"':
			esc = `\"`
		case '\\':
			esc = `\\`
		case '\n':
			esc = `\n`
		case '\r':
			esc = `\r`
		case '\t':
			esc = `\t`
		default:
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, esc...)
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
