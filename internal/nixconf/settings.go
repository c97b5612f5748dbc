package nixconf

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Settings are the values of every known setting, in Nix's printed form,
// plus the names set that Nix does not know. The zero value is not
// usable: start from Defaults.
type Settings struct {
	vals    map[string]string
	unknown map[string]string
	// Warn receives warnings raised while applying settings (an unknown
	// experimental feature); nil discards them.
	Warn func(msg string)
}

// Defaults returns Nix 2.8's default settings for dirs.
func Defaults(dirs *Dirs) *Settings {
	s := &Settings{vals: make(map[string]string, len(defs)), unknown: map[string]string{}}
	for i := range defs {
		s.vals[defs[i].name] = defs[i].dflt(dirs)
	}
	return s
}

// Clone returns an independent copy of s.
func (s *Settings) Clone() *Settings {
	return &Settings{vals: maps.Clone(s.vals), unknown: maps.Clone(s.unknown), Warn: s.Warn}
}

// Set sets name (a setting, an alias, or extra-<name> of an appendable
// setting) to value, as Nix's Config::set. It reports false, remembering
// the pair, if Nix does not know the name; an error (a *UsageError with
// Nix's message) if the value does not parse.
func (s *Settings) Set(name, value string) (bool, error) {
	d, ok := byName[name]
	appendTo := false
	if !ok {
		if rest, isExtra := strings.CutPrefix(name, "extra-"); isExtra {
			if d, ok = byName[rest]; ok && !d.kind.Appendable() {
				ok = false
			}
			appendTo = ok
		}
	}
	if !ok {
		s.unknown[name] = value
		return false, nil
	}
	v, err := s.parse(d, value, appendTo)
	if err != nil {
		return true, err
	}
	s.vals[d.name] = v
	return true, nil
}

func (s *Settings) warn(format string, a ...any) {
	if s.Warn != nil {
		s.Warn(fmt.Sprintf(format, a...))
	}
}

// parse returns the printed form of value for d, appended to the current
// value when appendTo.
func (s *Settings) parse(d *def, value string, appendTo bool) (string, error) {
	switch d.kind {
	case KindBool:
		switch value {
		case "true", "yes", "1":
			return "true", nil
		case "false", "no", "0":
			return "false", nil
		}
		return "", usagef("Boolean setting '%s' has invalid value '%s'", d.name, value)
	case KindInt, KindUint:
		n, ok := parseInt(value, d.kind == KindUint, d.bits)
		if !ok {
			return "", usagef("setting '%s' has invalid value '%s'", d.name, value)
		}
		return n, nil
	case KindMaxJobs:
		if value == "auto" {
			return strconv.Itoa(max(1, runtime.NumCPU())), nil // hardware concurrency, as Nix
		}
		n, ok := parseInt(value, true, 32)
		if !ok {
			return "", usagef("configuration setting '%s' should be 'auto' or an integer", d.name)
		}
		return n, nil
	case KindSandbox:
		switch value {
		case "true", "false", "relaxed":
			return value, nil
		}
		return "", usagef("option '%s' has invalid value '%s'", d.name, value)
	case KindString:
		return value, nil
	case KindPath:
		if value == "" {
			if d.allowEmpty {
				return "", nil
			}
			return "", usagef("setting '%s' cannot be empty", d.name)
		}
		p, err := canonPath(value)
		if err != nil {
			return "", usagef("setting '%s': %v", d.name, err)
		}
		return p, nil
	}
	// The list kinds.
	words := tokenize(value)
	var cur []string
	if appendTo {
		cur = tokenize(s.vals[d.name])
	}
	switch d.kind {
	case KindStrings:
		return strings.Join(append(cur, words...), " "), nil
	case KindStringSet:
		return strings.Join(sortedSet(append(cur, words...)), " "), nil
	case KindStringMap:
		m := map[string]string{}
		for _, w := range cur {
			k, v, _ := strings.Cut(w, "=")
			m[k] = v
		}
		for _, w := range words {
			if k, v, ok := strings.Cut(w, "="); ok {
				if _, dup := m[k]; !dup { // std::map::emplace keeps the first
					m[k] = v
				}
			}
		}
		var out []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			out = append(out, k+"="+m[k])
		}
		return strings.Join(out, " "), nil
	case KindFeatures:
		var out []string
		for _, w := range words {
			if slices.Contains(Features, w) {
				out = append(out, w)
			} else {
				s.warn("unknown experimental feature '%s'", w)
			}
		}
		return strings.Join(sortedSet(append(cur, out...)), " "), nil
	}
	return "", fmt.Errorf("nixconf: setting %s has no kind", d.name)
}

func parseInt(s string, unsigned bool, bits int) (string, bool) {
	if unsigned {
		if strings.HasPrefix(s, "-") {
			return "", false
		}
		n, err := strconv.ParseUint(strings.TrimPrefix(s, "+"), 10, bits)
		if err != nil {
			return "", false
		}
		return strconv.FormatUint(n, 10), true
	}
	n, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		return "", false
	}
	return strconv.FormatInt(n, 10), true
}

// tokenize splits on Nix's whitespace (space, tab, newline, return).
func tokenize(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}

func sortedSet(ss []string) []string {
	sort.Strings(ss)
	return slices.Compact(ss)
}

// Apply applies the contents of a configuration file as Nix's applyConfig:
// `name = value` lines, `#` comments, `include FILE` (which must exist) and
// `!include FILE` (which may not), relative to path's directory.
func (s *Settings) Apply(contents, path string) error {
	return s.apply(contents, path, 0)
}

func (s *Settings) apply(contents, path string, depth int) error {
	if depth > 32 {
		return usagef("too many nested includes in '%s'", path)
	}
	for line := range strings.SplitSeq(contents, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		tokens := tokenize(line)
		if len(tokens) == 0 {
			continue
		}
		if len(tokens) < 2 {
			return usagef("illegal configuration line '%s' in '%s'", line, path)
		}
		if tokens[0] == "include" || tokens[0] == "!include" {
			if len(tokens) != 2 {
				return usagef("illegal configuration line '%s' in '%s'", line, path)
			}
			p := tokens[1]
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(path), p)
			}
			if _, err := os.Stat(p); err != nil {
				if tokens[0] == "!include" {
					continue
				}
				return fmt.Errorf("file '%s' included from '%s' not found", p, path)
			}
			if err := s.applyFile(p, depth+1); err != nil {
				return err
			}
			continue
		}
		if tokens[1] != "=" {
			return usagef("illegal configuration line '%s' in '%s'", line, path)
		}
		if _, err := s.Set(tokens[0], strings.Join(tokens[2:], " ")); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

// ApplyFile applies a configuration file; a file that cannot be read
// (missing, say) is skipped, as Nix does.
func (s *Settings) ApplyFile(path string) error { return s.applyFile(path, 0) }

func (s *Settings) applyFile(path string, depth int) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil // Nix ignores every system error reading a file here
	}
	return s.apply(string(b), path, depth)
}

// Unknown returns the names set that Nix 2.8 does not know, sorted (Nix
// warns "unknown setting '%s'" about each at start-up).
func (s *Settings) Unknown() []string { return slices.Sorted(maps.Keys(s.unknown)) }

func (s *Settings) get(name string) string {
	v, ok := s.vals[name]
	if !ok {
		panic("nixconf: unknown setting " + name)
	}
	return v
}

// String returns a setting in Nix's printed form (`nix show-config`).
func (s *Settings) String(name string) string { return s.get(name) }

// Bool returns a boolean setting.
func (s *Settings) Bool(name string) bool { return s.get(name) == "true" }

// Int returns an integer setting (signed kinds).
func (s *Settings) Int(name string) int64 {
	n, _ := strconv.ParseInt(s.get(name), 10, 64)
	return n
}

// Uint returns an unsigned integer setting (also max-jobs).
func (s *Settings) Uint(name string) uint64 {
	n, _ := strconv.ParseUint(s.get(name), 10, 64)
	return n
}

// List returns a list or set setting's words.
func (s *Settings) List(name string) []string { return tokenize(s.get(name)) }

// Map returns a name=value setting (access-tokens).
func (s *Settings) Map(name string) map[string]string {
	m := map[string]string{}
	for _, w := range s.List(name) {
		k, v, _ := strings.Cut(w, "=")
		m[k] = v
	}
	return m
}

// Feature reports whether an experimental feature is enabled.
func (s *Settings) Feature(name string) bool {
	return slices.Contains(s.List("experimental-features"), name)
}

// All returns every setting in printed form, as `nix show-config` lists
// them (name = value lines, sorted).
func (s *Settings) All() string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(s.vals)) {
		fmt.Fprintf(&b, "%s = %s\n", k, s.vals[k])
	}
	return b.String()
}
