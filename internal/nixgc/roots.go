package nixgc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/storepath"
)

// Censored is the link name untrusted clients see for every root.
const Censored = "{censored}"

// Roots maps each rooted valid path to the links that root it (gcroots
// symlinks, "/proc/<pid>/..." files, "{temp:<n>}"), sorted.
type Roots map[storepath.Path][]string

func (r Roots) add(p storepath.Path, link string) {
	links := r[p]
	if i, found := slices.BinarySearch(links, link); !found {
		r[p] = slices.Insert(links, i, link)
	}
}

// FindRoots returns every GC root as Nix's findRoots does: the symlinks
// (direct and indirect) and root files under gcroots and profiles, the
// runtime roots from /proc, and the temp roots of every live process. With
// censor, every link reads "{censored}" (what untrusted clients see).
func FindRoots(ctx context.Context, s *nixstore.Store, censor bool) (Roots, error) {
	roots, err := findRootsNoTemp(ctx, s, censor)
	if err != nil {
		return nil, err
	}
	temp, err := readTempRoots(s, censor)
	if err != nil {
		return nil, err
	}
	for p, links := range temp {
		for _, l := range links {
			roots.add(p, l)
		}
	}
	return roots, nil
}

func findRootsNoTemp(ctx context.Context, s *nixstore.Store, censor bool) (Roots, error) {
	f := &rootFinder{ctx: ctx, s: s, roots: Roots{}, auto: filepath.Join(s.StateDir(), "gcroots", "auto")}
	for _, d := range []string{filepath.Join(s.StateDir(), "gcroots"), filepath.Join(s.StateDir(), "profiles")} {
		if err := f.find(d, unix.DT_UNKNOWN); err != nil {
			return nil, err
		}
	}
	if err := findRuntimeRoots(ctx, s, f.roots, censor); err != nil {
		return nil, err
	}
	return f.roots, nil
}

type rootFinder struct {
	ctx   context.Context
	s     *nixstore.Store
	roots Roots
	auto  string
}

// storePathOf returns the store path a path in the store lies in (Nix's
// toStorePath), or false if target is not in the store.
func storePathOf(dir storepath.Dir, target string) (storepath.Path, bool) {
	rest, ok := strings.CutPrefix(target, string(dir)+"/")
	if !ok {
		return storepath.Path{}, false
	}
	base, _, _ := strings.Cut(rest, "/")
	p, err := dir.ParseBase(base)
	return p, err == nil
}

func (f *rootFinder) foundRoot(link, target string) error {
	p, ok := storePathOf(f.s.Dir(), target)
	if !ok {
		return nil
	}
	valid, err := f.s.IsValid(f.ctx, p)
	if err != nil {
		return err
	}
	if valid {
		f.roots.add(p, link)
	} else {
		f.s.Log(nixstore.LvlInfo, "skipping invalid root from '%s' to '%s'", link, target)
	}
	return nil
}

func ignorable(err error) bool {
	return errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}

func (f *rootFinder) find(path string, typ uint8) error {
	if err := f.ctx.Err(); err != nil {
		return err
	}
	err := f.find1(path, typ)
	if err != nil && ignorable(err) {
		f.s.Log(nixstore.LvlInfo, "cannot read potential root '%s'", path)
		return nil
	}
	return err
}

func (f *rootFinder) find1(path string, typ uint8) error {
	if typ == unix.DT_UNKNOWN {
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			typ = unix.DT_DIR
		case unix.S_IFLNK:
			typ = unix.DT_LNK
		case unix.S_IFREG:
			typ = unix.DT_REG
		default:
			return nil
		}
	}
	switch typ {
	case unix.DT_DIR:
		d, err := os.Open(path)
		if err != nil {
			return err
		}
		ents, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			return err
		}
		for _, e := range ents {
			t := uint8(unix.DT_UNKNOWN)
			switch {
			case e.Type().IsDir():
				t = unix.DT_DIR
			case e.Type()&os.ModeSymlink != 0:
				t = unix.DT_LNK
			case e.Type().IsRegular():
				t = unix.DT_REG
			}
			if err := f.find(path+"/"+e.Name(), t); err != nil {
				return err
			}
		}
	case unix.DT_LNK:
		target, err := os.Readlink(path)
		if err != nil {
			return err
		}
		if _, in := storePathOf(f.s.Dir(), target); in {
			return f.foundRoot(path, target)
		}
		// An indirect root: a link to a link into the store.
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		if _, err := os.Lstat(target); err != nil {
			if strings.HasPrefix(path, f.auto+"/") {
				f.s.Log(nixstore.LvlInfo, "removing stale link from '%s' to '%s'", path, target)
				os.Remove(path)
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(target, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			return nil
		}
		target2, err := os.Readlink(target)
		if err != nil {
			return err
		}
		if _, in := storePathOf(f.s.Dir(), target2); in {
			return f.foundRoot(target, target2)
		}
	case unix.DT_REG:
		p, err := f.s.Dir().ParseBase(filepath.Base(path))
		if err != nil {
			return nil
		}
		valid, err := f.s.IsValid(f.ctx, p)
		if err != nil {
			return err
		}
		if valid {
			f.roots.add(p, path)
		}
	}
	return nil
}

// readTempRoots reads every process's temp roots, as Nix's findTempRoots:
// a file its owner no longer locks is stale, and is removed (and marked
// "d" for a creator racing with us).
func readTempRoots(s *nixstore.Store, censor bool) (Roots, error) {
	dir := filepath.Join(s.StateDir(), "temproots")
	d, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return Roots{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening directory '%s': %w", dir, err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("reading directory '%s': %w", dir, err)
	}
	roots := Roots{}
	for _, name := range names {
		if strings.HasPrefix(name, ".") {
			continue
		}
		pid, err := strconv.Atoi(name)
		if err != nil {
			s.Log(nixstore.LvlWarn, "ignoring temporary roots file '%s' (its name is not a number)", filepath.Join(dir, name))
			continue
		}
		path := filepath.Join(dir, name)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("opening temporary roots file '%s': %w", path, err)
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			s.Log(nixstore.LvlInfo, "removing stale temporary roots file '%s'", path)
			os.Remove(path)
			f.Write([]byte("d"))
			f.Close()
			continue
		}
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading temporary roots file '%s': %w", path, err)
		}
		link := fmt.Sprintf("{temp:%d}", pid)
		if censor {
			link = Censored
		}
		for _, p := range ParseTempRoots(s.Dir(), data) {
			roots.add(p, link)
		}
	}
	return roots, nil
}

// ParseTempRoots parses a temp-roots file: store paths, each followed by
// NUL. An unterminated last entry (a write in progress) is ignored, as
// Nix ignores it; so are entries that are not store paths of dir.
func ParseTempRoots(dir storepath.Dir, data []byte) []storepath.Path {
	var out []storepath.Path
	for {
		i := bytes.IndexByte(data, 0)
		if i < 0 {
			return out
		}
		if p, err := dir.Parse(string(data[:i])); err == nil {
			out = append(out, p)
		}
		data = data[i+1:]
	}
}
