// Package buildenv prepares what a builder starts with, exactly as Nix
// 2.8's LocalDerivationGoal does (initEnv, initTmpDir,
// writeStructuredAttrs, exportReferencesGraph): the environment, in
// Nix's order, and the files Nix writes into the build directory
// (passAsFile attributes, .attrs.json and .attrs.sh, references graphs).
//
// Invariants: the environment starts empty (nothing of the daemon's leaks
// in but impureEnvVars of fixed-output and impure derivations); every
// string handed to the builder has the input rewrites applied; files are
// created inside the build directory only (names are Nix's fixed ones or
// checked by derivation.Attrs.ExportReferencesGraph), owned by the
// builder when UID is set.
package buildenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/silo-cache/silo/internal/derivation"
	"github.com/silo-cache/silo/internal/storepath"
)

// HomeDir is the HOME builders get; it must not exist.
const HomeDir = "/homeless-shelter"

// Options are the facts of one build the environment depends on.
type Options struct {
	// BuildDir is the build directory on the host (Nix's tmpDir).
	BuildDir string
	// SandboxBuildDir is where the builder sees it: "/build" (Nix's
	// sandbox-build-dir) in a sandbox, "" for BuildDir.
	SandboxBuildDir string
	// Cores is the cores setting (NIX_BUILD_CORES).
	Cores int
	// Getenv reads the daemon's environment, for impureEnvVars.
	Getenv func(string) string
	// Rewrites are Nix's inputRewrites (output placeholders to scratch
	// paths, valid output hash parts to scratch hash parts).
	Rewrites map[string]string
	// Store and InputPaths serve exportReferencesGraph (InputPaths: the
	// closure of the inputs, which every exported path must be in).
	Store      derivation.Store
	InputPaths map[storepath.Path]bool
	// UID and GID own the files written (-1: leave as created).
	UID, GID int
}

// Prepare writes the build directory's files and returns the builder's
// environment ("NAME=value", sorted by name as Nix passes it).
func Prepare(ctx context.Context, drvPath storepath.Path, d *derivation.Derivation, a *derivation.Attrs, o Options) ([]string, error) {
	typ, err := d.Type()
	if err != nil {
		return nil, fmt.Errorf("derivation '%s': %w", drvPath, err)
	}
	inSandbox := o.SandboxBuildDir
	if inSandbox == "" {
		inSandbox = o.BuildDir
		// Without a sandbox, $HOME must not exist (Nix: needsHashRewrite).
		if _, err := os.Lstat(HomeDir); err == nil {
			return nil, fmt.Errorf("home directory '%s' exists; please remove it to assure purity of builds without sandboxing", HomeDir)
		}
	}
	env := map[string]string{
		"PATH":            "/path-not-set",
		"HOME":            HomeDir,
		"NIX_STORE":       string(d.Dir),
		"NIX_BUILD_CORES": strconv.Itoa(o.Cores),
	}
	// initTmpDir: derivation attributes, passAsFile ones as files.
	if a.Structured() == nil {
		passAsFile := map[string]bool{}
		for _, n := range a.PassAsFile() {
			passAsFile[n] = true
		}
		for _, k := range sortedKeys(d.Env) {
			v := d.Env[k]
			if !passAsFile[k] {
				env[k] = v
				continue
			}
			fn := derivation.PassAsFileName(k)
			if err := o.write(fn, []byte(derivation.Rewrite(v, o.Rewrites))); err != nil {
				return nil, err
			}
			env[k+"Path"] = inSandbox + "/" + fn
		}
	}
	for _, k := range []string{"NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"} {
		env[k] = inSandbox
	}
	if typ.IsFixed() {
		env["NIX_OUTPUT_CHECKED"] = "1"
	}
	if !typ.IsSandboxed() {
		vars, err := a.ImpureEnvVars()
		if err != nil {
			return nil, err
		}
		for _, k := range vars {
			v := ""
			if o.Getenv != nil {
				v = o.Getenv(k)
			}
			env[k] = v
		}
	}
	env["NIX_LOG_FD"] = "2"
	env["TERM"] = "xterm-256color"

	// writeStructuredAttrs
	js, err := a.PrepareStructuredAttrs(ctx, o.Store, o.InputPaths)
	if err != nil {
		return nil, err
	}
	if js != nil {
		attrsJSON, attrsSh, err := derivation.StructuredAttrsFiles(js, o.Rewrites)
		if err != nil {
			return nil, err
		}
		if err := o.write(".attrs.sh", attrsSh); err != nil {
			return nil, err
		}
		env["NIX_ATTRS_SH_FILE"] = filepath.Join(o.BuildDir, ".attrs.sh") // the host path, as Nix 2.8 does
		if err := o.write(".attrs.json", attrsJSON); err != nil {
			return nil, err
		}
		env["NIX_ATTRS_JSON_FILE"] = filepath.Join(o.BuildDir, ".attrs.json")
	}
	// exportReferencesGraph (without structured attributes)
	graphs, err := a.ExportReferencesGraph()
	if err != nil {
		return nil, err
	}
	for _, g := range graphs {
		closure, err := derivation.ExportReferences(ctx, o.Store, []storepath.Path{g.Path}, o.InputPaths)
		if err != nil {
			return nil, err
		}
		text, err := derivation.ValidityRegistration(ctx, o.Store, closure)
		if err != nil {
			return nil, err
		}
		if err := o.write(g.FileName, text); err != nil {
			return nil, err
		}
	}
	out := make([]string, 0, len(env))
	for _, k := range sortedKeys(env) {
		out = append(out, derivation.Rewrite(k+"="+env[k], o.Rewrites))
	}
	return out, nil
}

// Args returns the builder's arguments with the rewrites applied.
func Args(d *derivation.Derivation, rewrites map[string]string) []string {
	out := make([]string, len(d.Args))
	for i, a := range d.Args {
		out[i] = derivation.Rewrite(a, rewrites)
	}
	return out
}

// write creates name in the build directory, refusing to follow or
// replace anything already there.
func (o Options) write(name string, data []byte) error {
	p := filepath.Join(o.BuildDir, name)
	if filepath.Dir(p) != filepath.Clean(o.BuildDir) {
		return fmt.Errorf("refusing to write %q outside the build directory", name)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_TRUNC, 0o666)
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if o.UID >= 0 && o.GID >= 0 {
		if err := os.Chown(p, o.UID, o.GID); err != nil {
			return fmt.Errorf("cannot change ownership of '%s': %w", p, err)
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
