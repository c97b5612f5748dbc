package nixstore

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/storepath"
)

// AddTextToStore adds a text file with the given references, as Nix's
// addTextToStore (builtins.toFile, .drv files). The text is in memory and
// its path known before anything is written, so it is written straight to
// its path while the path's lock is held (an invalid path is visible to
// no one), and removed again on any error.
func (s *Store) AddTextToStore(ctx context.Context, name string, text []byte, refs []storepath.Path, o AddOptions) (*PathInfo, error) {
	if err := storepath.ValidateName(name); err != nil {
		return nil, fmt.Errorf("adding '%s' to the store: %w", name, err)
	}
	refs = slices.Clone(refs)
	slices.SortFunc(refs, storepath.Compare)
	refs = slices.Compact(refs)
	ca := narinfo.CA{Text: true, Hash: hash.Sum(hash.SHA256, text)}
	p, err := ca.Path(s.opts.StoreDir, name, refs, storepath.Path{})
	if err != nil {
		return nil, fmt.Errorf("adding '%s' to the store: %w", name, err)
	}
	nh := hash.NewWriter(hash.SHA256)
	w := nar.NewWriter(nh)
	w.WriteHeader(&nar.Header{Type: nar.TypeRegular, Size: int64(len(text))})
	w.Write(text)
	if err := w.Close(); err != nil {
		return nil, err
	}
	info := &PathInfo{Path: p, NarHash: nh.Sum(), NarSize: nh.Size(), References: refs, CA: ca.String()}
	if err := s.checkRefs(ctx, info); err != nil {
		return nil, err
	}
	if err := s.AddTempRoot(ctx, p); err != nil {
		return nil, err
	}
	registered := false
	err = s.withPathLock(ctx, p, o.Repair, func() error {
		s.autoGC(ctx)
		real := s.RealPath(p)
		if err := removeDebris(real); err != nil {
			return err
		}
		if err := writeCanonicalFile(real, text); err != nil {
			DeletePath(real)
			return fmt.Errorf("writing '%s': %w", real, err)
		}
		if mayInheritXattrs(s.realDir) {
			if err := CanonicalisePathMetaData(real, -1, s.opts.IgnoredACLs); err != nil {
				DeletePath(real)
				return err
			}
		}
		if o.Optimise {
			if err := s.OptimisePath(ctx, real, o.Repair); err != nil {
				DeletePath(real)
				return err
			}
		}
		info.RegistrationTime = time.Unix(time.Now().Unix(), 0)
		if err := s.RegisterValidPaths(ctx, []*PathInfo{info}); err != nil {
			DeletePath(real)
			return err
		}
		registered = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if registered {
		return info, nil
	}
	return s.db.QueryPathInfo(ctx, p)
}

// removeDebris deletes whatever an earlier failed attempt left at the
// invalid path's name.
func removeDebris(real string) error {
	var st unix.Stat_t
	if err := unix.Lstat(real, &st); err == unix.ENOENT {
		return nil
	}
	_, err := DeletePath(real)
	return err
}

// writeCanonicalFile creates a store file: contents, mode 0444, mtime 1.
func writeCanonicalFile(path string, contents []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return err
	}
	for b := contents; len(b) > 0 && err == nil; {
		var n int
		n, err = unix.Write(fd, b)
		if err == unix.EINTR {
			err = nil
		}
		b = b[n:]
	}
	if err == nil {
		err = unix.Fchmod(fd, 0o444)
	}
	if err == nil {
		err = futimens(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// narHashFile returns the SHA-256 and size of the NAR of a regular,
// non-executable file (what a flat addition holds).
func narHashFile(path string) (hash.Hash, uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return hash.Hash{}, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return hash.Hash{}, 0, err
	}
	nh := hash.NewWriter(hash.SHA256)
	w := nar.NewWriter(nh)
	if err := w.WriteHeader(&nar.Header{Type: nar.TypeRegular, Size: st.Size()}); err != nil {
		return hash.Hash{}, 0, err
	}
	buf := make([]byte, 64<<10)
	if _, err := io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{f}, buf); err != nil {
		return hash.Hash{}, 0, err
	}
	if err := w.Close(); err != nil {
		return hash.Hash{}, 0, err
	}
	return nh.Sum(), nh.Size(), nil
}
