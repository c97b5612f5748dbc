// Package builtins implements Nix 2.8's builtin builders (derivations
// whose builder is "builtin:..."), run in-process by the daemon:
// builtin:buildenv (user environments, nix-env) and builtin:unpack-channel
// (nix-channel). They read the derivation's environment (after input
// rewriting) and write the output path named by "out".
//
// Paths in the environment are used as they are: the caller runs the
// builder where the store directory is at its logical place (or passes
// rewritten attributes).
package builtins

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Warner receives Nix's warnings ("skipping dangling symlink ...").
type Warner func(msg string)

func attr(env map[string]string, name string) (string, error) {
	v, ok := env[name]
	if !ok {
		return "", fmt.Errorf("attribute '%s' missing", name)
	}
	return v, nil
}

type pkg struct {
	path     string
	active   bool
	priority int
}

// Buildenv is builtin:buildenv: the symlink tree of a user environment
// (profile) from the packages in "derivations" (groups of: active flag,
// priority, number of outputs, output paths), then "manifest" linked as
// manifest.nix.
func Buildenv(env map[string]string, warn Warner) error {
	out, err := attr(env, "out")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	ds, err := attr(env, "derivations")
	if err != nil {
		return err
	}
	toks := strings.FieldsFunc(ds, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' })
	var pkgs []pkg
	for len(toks) > 0 {
		if len(toks) < 3 {
			return fmt.Errorf("builtin:buildenv: 'derivations' ends in the middle of a package")
		}
		active := toks[0]
		prio, err1 := strconv.Atoi(toks[1])
		n, err2 := strconv.Atoi(toks[2])
		if err1 != nil || err2 != nil || n < 0 || len(toks) < 3+n {
			return fmt.Errorf("builtin:buildenv: malformed 'derivations' near %q", strings.Join(toks[:3], " "))
		}
		for _, p := range toks[3 : 3+n] {
			pkgs = append(pkgs, pkg{path: p, active: active != "false", priority: prio})
		}
		toks = toks[3+n:]
	}
	if err := buildProfile(out, pkgs, warn); err != nil {
		return err
	}
	manifest, err := attr(env, "manifest")
	if err != nil {
		return err
	}
	return os.Symlink(manifest, filepath.Join(out, "manifest.nix"))
}

type profile struct {
	priorities map[string]int
	warn       Warner
}

func buildProfile(out string, pkgs []pkg, warn Warner) error {
	if warn == nil {
		warn = func(string) {}
	}
	st := &profile{priorities: map[string]int{}, warn: warn}
	done, postponed := map[string]bool{}, map[string]bool{}
	add := func(dir string, priority int) error {
		if done[dir] {
			return nil
		}
		done[dir] = true
		if err := st.createLinks(dir, out, priority); err != nil {
			return err
		}
		b, err := os.ReadFile(dir + "/nix-support/propagated-user-env-packages")
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
				return nil
			}
			return err
		}
		for _, p := range strings.FieldsFunc(string(b), func(r rune) bool { return r == ' ' || r == '\n' }) {
			if !done[p] {
				postponed[p] = true
			}
		}
		return nil
	}
	slices.SortStableFunc(pkgs, func(a, b pkg) int {
		if a.priority != b.priority {
			return a.priority - b.priority
		}
		return strings.Compare(a.path, b.path)
	})
	for _, p := range pkgs {
		if p.active {
			if err := add(p.path, p.priority); err != nil {
				return err
			}
		}
	}
	counter := 1000
	for len(postponed) > 0 {
		dirs := make([]string, 0, len(postponed))
		for d := range postponed {
			dirs = append(dirs, d)
		}
		slices.Sort(dirs)
		postponed = map[string]bool{}
		for _, d := range dirs {
			if err := add(d, counter); err != nil {
				return err
			}
			counter++
		}
	}
	return nil
}

var ignored = []string{"/propagated-build-inputs", "/nix-support", "/perllocal.pod", "/info/dir", "/log", "/manifest.nix", "/manifest.json"}

func (st *profile) createLinks(srcDir, dstDir string, priority int) error {
	ents, err := os.ReadDir(srcDir)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			st.warn(fmt.Sprintf("not including '%s' in the user environment because it's not a directory", srcDir))
			return nil
		}
		return err
	}
	for _, ent := range ents {
		if ent.Name()[0] == '.' {
			continue // not matched by glob
		}
		src, dst := srcDir+"/"+ent.Name(), dstDir+"/"+ent.Name()
		srcSt, err := os.Stat(src)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
				st.warn(fmt.Sprintf("skipping dangling symlink '%s'", dst))
				continue
			}
			return fmt.Errorf("getting status of '%s': %w", src, err)
		}
		skip := false
		for _, s := range ignored {
			skip = skip || strings.HasSuffix(src, s)
		}
		if skip {
			continue
		}
		dstSt, lerr := os.Lstat(dst)
		if lerr != nil && !errors.Is(lerr, fs.ErrNotExist) {
			return fmt.Errorf("getting status of '%s': %w", dst, lerr)
		}
		if srcSt.IsDir() {
			if lerr == nil {
				if dstSt.IsDir() {
					if err := st.createLinks(src, dst, priority); err != nil {
						return err
					}
					continue
				}
				if dstSt.Mode()&fs.ModeSymlink != 0 {
					target, err := filepath.EvalSymlinks(dst)
					if err != nil {
						return err
					}
					tSt, err := os.Lstat(target)
					if err != nil || !tSt.IsDir() {
						return fmt.Errorf("collision between '%s' and non-directory '%s'", src, target)
					}
					if err := os.Remove(dst); err != nil {
						return fmt.Errorf("unlinking '%s': %w", dst, err)
					}
					if err := os.Mkdir(dst, 0o755); err != nil {
						return fmt.Errorf("creating directory '%s': %w", dst, err)
					}
					if err := st.createLinks(target, dst, st.priorities[dst]); err != nil {
						return err
					}
					if err := st.createLinks(src, dst, priority); err != nil {
						return err
					}
					continue
				}
			}
		} else if lerr == nil {
			if dstSt.Mode()&fs.ModeSymlink != 0 {
				prev := st.priorities[dst]
				if prev == priority {
					old, _ := os.Readlink(dst)
					return fmt.Errorf("packages '%s' and '%s' have the same priority %d; use 'nix-env --set-flag priority NUMBER INSTALLED_PKGNAME' to change the priority of one of the conflicting packages (0 being the highest priority)", src, old, priority)
				}
				if prev < priority {
					continue
				}
				if err := os.Remove(dst); err != nil {
					return fmt.Errorf("unlinking '%s': %w", dst, err)
				}
			} else if dstSt.IsDir() {
				return fmt.Errorf("collision between non-directory '%s' and directory '%s'", src, dst)
			}
		}
		if err := os.Symlink(src, dst); err != nil {
			return fmt.Errorf("creating symlink from '%s' to '%s': %w", dst, src, err)
		}
		st.priorities[dst] = priority
	}
	return nil
}
