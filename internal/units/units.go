// Package units installs silo's systemd units on a machine without NixOS
// (silo install-units): the files of packaging/systemd, which the NixOS
// module's renderer wrote for silo at /usr/local/bin/silo and Nix's client
// in /usr/bin, with this machine's paths put in their place.
//
// Units and wrappers are silo's and are replaced on every install (local
// changes belong in drop-ins: systemctl edit UNIT); config files are the
// administrator's and are only created when missing. Every file is written
// under a temporary name and renamed, so a unit is never seen half-written.
package units

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/silo-cache/silo/packaging/systemd"
)

// The paths the plain units were rendered with (nix/plain.nix).
const (
	plainSilo   = "/usr/local/bin/silo"
	plainNixGC  = "/usr/bin/nix-collect-garbage"
	plainConfig = "/etc/silo/"
)

// Options says where things go. Empty fields take the defaults shown.
type Options struct {
	UnitDir   string // units: /etc/systemd/system
	Silo      string // the silo binary the units run (required, absolute)
	NixBinDir string // directory of nix-collect-garbage: /usr/bin
	ConfigDir string // config files and secrets: /etc/silo
	Hook      string // the post-build-hook wrapper: /etc/nix/silo-post-build-hook
	Admin     string // silo-serve-admin: beside Silo
}

// WithDefaults returns o with its empty fields set to the defaults.
func (o Options) WithDefaults() Options {
	if o.UnitDir == "" {
		o.UnitDir = "/etc/systemd/system"
	}
	if o.NixBinDir == "" {
		o.NixBinDir = "/usr/bin"
	}
	if o.ConfigDir == "" {
		o.ConfigDir = "/etc/silo"
	}
	if o.Hook == "" {
		o.Hook = "/etc/nix/silo-post-build-hook"
	}
	if o.Admin == "" {
		o.Admin = filepath.Join(filepath.Dir(o.Silo), "silo-serve-admin")
	}
	return o
}

// File is one file to install.
type File struct {
	Path string
	Mode fs.FileMode
	Data []byte
	// KeepExisting: the administrator's file (a config); never replaced.
	KeepExisting bool
}

// safePath is what may stand in a unit line or a shell word unquoted:
// absolute, and no spaces, quotes, % or $.
var safePath = regexp.MustCompile(`^/[A-Za-z0-9_./+@:-]*$`)

// Files returns the files to install for o, with o's paths in them.
func Files(o Options) ([]File, error) {
	if o.Silo == "" {
		return nil, fmt.Errorf("units: the path of the silo binary is required")
	}
	o = o.WithDefaults()
	for _, p := range []struct{ name, path string }{
		{"silo binary", o.Silo}, {"unit directory", o.UnitDir}, {"Nix bin directory", o.NixBinDir},
		{"config directory", o.ConfigDir}, {"hook", o.Hook}, {"admin wrapper", o.Admin},
	} {
		if !safePath.MatchString(p.path) {
			return nil, fmt.Errorf("units: %s %q: want an absolute path without spaces, quotes, %% or $", p.name, p.path)
		}
	}
	repl := strings.NewReplacer(
		plainSilo, o.Silo,
		plainNixGC, path.Join(o.NixBinDir, "nix-collect-garbage"),
		plainConfig, strings.TrimSuffix(o.ConfigDir, "/")+"/",
	)
	var files []File
	err := fs.WalkDir(systemd.Files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(systemd.Files, name)
		if err != nil {
			return err
		}
		f := File{Mode: 0o644, Data: []byte(repl.Replace(string(data)))}
		switch {
		case strings.HasPrefix(name, "config/"):
			// Read by the services (some as dynamic users); secrets go
			// in separate files that systemd hands over (LoadCredential).
			f.Path, f.Mode, f.KeepExisting = filepath.Join(o.ConfigDir, path.Base(name)), 0o644, true
		case name == "silo-post-build-hook":
			f.Path, f.Mode = o.Hook, 0o755
		case name == "silo-serve-admin":
			f.Path, f.Mode = o.Admin, 0o755
		default:
			f.Path = filepath.Join(o.UnitDir, name)
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("units: read embedded files: %w", err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, nil
}

// Result says what Install did with one file.
type Result struct {
	Path   string
	Action string // "created", "updated", "unchanged", "kept" (an existing config)
}

// Install writes files (or, with dryRun, only says what it would do).
func Install(files []File, dryRun bool) ([]Result, error) {
	var res []Result
	for _, f := range files {
		old, err := os.ReadFile(f.Path)
		action := "updated"
		switch {
		case os.IsNotExist(err):
			action = "created"
		case err != nil:
			return res, fmt.Errorf("install %s: %w", f.Path, err)
		case f.KeepExisting:
			action = "kept"
		case bytes.Equal(old, f.Data):
			if fi, err := os.Stat(f.Path); err == nil && fi.Mode().Perm() == f.Mode {
				action = "unchanged"
			}
		}
		res = append(res, Result{Path: f.Path, Action: action})
		if dryRun || action == "kept" || action == "unchanged" {
			continue
		}
		if err := writeFile(f); err != nil {
			return res, err
		}
	}
	return res, nil
}

func writeFile(f File) error {
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("install %s: %w", f.Path, err)
	}
	tmp, err := os.CreateTemp(dir, ".silo-install-*")
	if err != nil {
		return fmt.Errorf("install %s: %w", f.Path, err)
	}
	_, err = tmp.Write(f.Data)
	if err == nil {
		err = tmp.Chmod(f.Mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.Path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("install %s: %w", f.Path, err)
	}
	return nil
}
