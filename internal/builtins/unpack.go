package builtins

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/compress"
)

// UnpackChannel is builtin:unpack-channel: the tarball "src" (compressed
// with gzip, bzip2, xz or zstd, or not at all) is unpacked into "out",
// where it must hold exactly one entry, which is renamed to "channelName".
func UnpackChannel(env map[string]string) error {
	out, err := attr(env, "out")
	if err != nil {
		return err
	}
	name, err := attr(env, "channelName")
	if err != nil {
		return err
	}
	src, err := attr(env, "src")
	if err != nil {
		return err
	}
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return fmt.Errorf("invalid channel name '%s'", name)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := UnpackTarfile(src, out); err != nil {
		return err
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	if len(ents) != 1 {
		return fmt.Errorf("channel tarball '%s' contains more than one file", src)
	}
	if err := os.Rename(filepath.Join(out, ents[0].Name()), filepath.Join(out, name)); err != nil {
		return fmt.Errorf("renaming channel directory: %w", err)
	}
	return nil
}

// UnpackTarfile unpacks the tar archive at file into dest as Nix's
// unpackTarfile (libarchive with SECURE_SYMLINKS and SECURE_NODOTDOT):
// no entry may contain "..", nothing is written through a symlink, and
// hard links must point inside dest. Permissions (without setuid/setgid
// bits) and modification times are kept; owners are not; device nodes and
// FIFOs are refused.
func UnpackTarfile(file, dest string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("failed to open archive: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	prefix, _ := br.Peek(compress.SniffLen)
	method, err := compress.Sniff(prefix)
	if err != nil {
		method = compress.None // a plain tar is no NAR but is fine here
	}
	r, err := compress.NewReader(method, br)
	if err != nil {
		return fmt.Errorf("archive %s: %w", file, err)
	}
	defer r.Close()
	return untar(r, dest)
}

type dirFix struct {
	path  string
	mode  fs.FileMode
	mtime time.Time
}

func untar(r io.Reader, dest string) error {
	tr := tar.NewReader(r)
	var dirs []dirFix
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("failed to extract archive: %w", err)
		}
		rel, err := cleanName(h.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			continue // the archive's "./"
		}
		target := filepath.Join(dest, rel)
		if err := checkParents(dest, rel); err != nil {
			return err
		}
		mode := fs.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if st, err := os.Lstat(target); err == nil && !st.IsDir() {
				if err := os.Remove(target); err != nil {
					return err
				}
			}
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			dirs = append(dirs, dirFix{target, mode, h.ModTime})
		case tar.TypeReg, tar.TypeRegA:
			os.Remove(target)
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return fmt.Errorf("extract %s: %w", h.Name, err)
			}
			if err := out.Close(); err != nil {
				return err
			}
			if err := os.Chmod(target, mode); err != nil {
				return err
			}
			os.Chtimes(target, h.ModTime, h.ModTime)
		case tar.TypeSymlink:
			os.Remove(target)
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		case tar.TypeLink:
			lrel, err := cleanName(h.Linkname)
			if err != nil || lrel == "" {
				return fmt.Errorf("hard link '%s' points outside the archive", h.Name)
			}
			if err := checkParents(dest, lrel); err != nil {
				return err
			}
			lsrc := filepath.Join(dest, lrel)
			if st, err := os.Lstat(lsrc); err != nil || st.Mode()&fs.ModeSymlink != 0 {
				return fmt.Errorf("hard link '%s' to '%s': not a file of the archive", h.Name, h.Linkname)
			}
			os.Remove(target)
			if err := os.Link(lsrc, target); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader:
		default:
			return fmt.Errorf("archive entry '%s' has unsupported type %q", h.Name, h.Typeflag)
		}
	}
	// Directory modes last (a read-only directory would refuse its
	// contents), deepest first.
	slices.SortFunc(dirs, func(a, b dirFix) int { return len(b.path) - len(a.path) })
	for _, d := range dirs {
		if err := os.Chmod(d.path, d.mode); err != nil {
			return err
		}
		os.Chtimes(d.path, d.mtime, d.mtime)
	}
	return nil
}

// cleanName makes an entry name relative, refusing ".." components.
func cleanName(name string) (string, error) {
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("archive entry '%s' contains '..'", name)
		}
	}
	p := path.Clean("/" + name)
	return strings.TrimPrefix(p, "/"), nil
}

// checkParents refuses an entry below a symlink (SECURE_SYMLINKS).
func checkParents(dest, rel string) error {
	cur := dest
	parts := strings.Split(rel, "/")
	for _, c := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, c)
		st, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(cur, 0o755); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("cannot extract '%s' through the symlink '%s'", rel, cur)
		}
		if !st.IsDir() {
			return fmt.Errorf("cannot extract '%s': '%s' is not a directory", rel, cur)
		}
	}
	return nil
}
