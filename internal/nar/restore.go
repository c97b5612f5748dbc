package nar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Restore creates dir from the NAR read from r, as `nix-store --restore`
// does: files get mode 0666 and directories 0777 (less the umask), and
// executable files gain all three x bits. dir must not exist; if the NAR's
// root is a file or symlink, dir becomes that file or symlink.
//
// Restore never writes outside dir: every object is created below dir
// through an os.Root, with O_EXCL, so an existing file or a symlink from the
// NAR is never written through. On any error, what was created is removed.
func Restore(ctx context.Context, r io.Reader, dir string) (err error) {
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("restore nar to %s: already exists (restore needs a path that does not exist yet)", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore nar to %s: %w", dir, err)
	}
	nr := NewReader(r)
	h, err := nr.Next()
	if err != nil {
		return fmt.Errorf("restore nar to %s: %w", dir, err)
	}
	created := false
	defer func() {
		if err != nil && created {
			if rerr := os.RemoveAll(dir); rerr != nil {
				err = fmt.Errorf("%w (and removing the partial tree failed: %v)", err, rerr)
			}
		}
	}()
	buf := make([]byte, 256<<10)
	switch h.Type {
	case TypeRegular:
		f, err := os.OpenFile(dir, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if err != nil {
			return fmt.Errorf("restore nar: %w", err)
		}
		created = true
		if err := writeFile(ctx, f, nr, h, buf); err != nil {
			return fmt.Errorf("restore nar to %s: %w", dir, err)
		}
	case TypeSymlink:
		if err := os.Symlink(h.LinkTarget, dir); err != nil {
			return fmt.Errorf("restore nar: %w", err)
		}
		created = true
	case TypeDirectory:
		if err := os.Mkdir(dir, 0o777); err != nil {
			return fmt.Errorf("restore nar: %w", err)
		}
		created = true
		if err := restoreTree(ctx, nr, dir, buf); err != nil {
			return fmt.Errorf("restore nar to %s: %w", dir, err)
		}
		return nil
	}
	if _, err := nr.Next(); err != io.EOF {
		return fmt.Errorf("restore nar to %s: %w", dir, err)
	}
	return nil
}

// restoreTree creates the entries of the root directory dir.
func restoreTree(ctx context.Context, nr *Reader, dir string, buf []byte) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	// Open directories along the current path, innermost last.
	stack := []*os.Root{root}
	defer func() {
		for _, o := range stack {
			o.Close()
		}
	}()
	for {
		h, err := nr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if h.Depth < 1 || h.Depth > len(stack) {
			// The Reader yields only entries of open directories.
			return fmt.Errorf("%s: its directory is not open", where(nr.Path()))
		}
		for len(stack) > h.Depth {
			stack[len(stack)-1].Close()
			stack = stack[:len(stack)-1]
		}
		top, name := stack[len(stack)-1], h.Name
		switch h.Type {
		case TypeRegular:
			f, err := top.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
			if err != nil {
				return fmt.Errorf("%s: %w", where(nr.Path()), err)
			}
			if err := writeFile(ctx, f, nr, h, buf); err != nil {
				return err
			}
		case TypeSymlink:
			if err := top.Symlink(h.LinkTarget, name); err != nil {
				return fmt.Errorf("%s: %w", where(nr.Path()), err)
			}
		case TypeDirectory:
			if err := top.Mkdir(name, 0o777); err != nil {
				return fmt.Errorf("%s: %w", where(nr.Path()), err)
			}
			sub, err := top.OpenRoot(name)
			if err != nil {
				return fmt.Errorf("%s: %w", where(nr.Path()), err)
			}
			stack = append(stack, sub)
		}
	}
}

// writeFile copies the current file of nr into f, sets the executable
// bits and closes f.
func writeFile(ctx context.Context, f *os.File, nr *Reader, h *Header, buf []byte) error {
	err := func() error {
		for {
			n, rerr := nr.Read(buf)
			if n > 0 {
				if _, err := f.Write(buf[:n]); err != nil {
					return err
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return rerr
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if h.Executable {
			st, err := f.Stat()
			if err != nil {
				return err
			}
			// Like Nix: add x for everyone to whatever the umask left.
			if err := f.Chmod(st.Mode().Perm() | 0o111); err != nil {
				return err
			}
		}
		return nil
	}()
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, ErrInvalid) {
		err = fmt.Errorf("%s: %w", where(nr.Path()), err)
	}
	return err
}
