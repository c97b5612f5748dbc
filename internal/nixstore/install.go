package nixstore

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/storepath"
)

// withPathLock runs fn with p's lock held unless p is valid (and repair
// is off), checked before and after taking the lock. The lock file is
// deleted afterwards.
func (s *Store) withPathLock(ctx context.Context, p storepath.Path, repair bool, fn func() error) error {
	if !repair {
		if ok, err := s.db.IsValid(ctx, p); err != nil || ok {
			return err
		}
	}
	l, err := LockPaths(ctx, []string{s.RealPath(p)}, "", nil)
	if err != nil {
		return err
	}
	defer l.Unlock(true)
	if !repair {
		if ok, err := s.db.IsValid(ctx, p); err != nil || ok {
			return err
		}
	}
	return fn()
}

// newTemp returns a fresh name in the store directory for content of the
// given name: a store path with a random hash part, temp-rooted so no
// collector deletes it while it is written.
func (s *Store) newTemp(ctx context.Context, name string) (string, error) {
	var b [20]byte
	rand.Read(b[:])
	p, err := s.opts.StoreDir.ParseBase(nix32.Encode(b[:]) + "-" + name)
	if err != nil {
		return "", err
	}
	if err := s.AddTempRoot(ctx, p); err != nil {
		return "", err
	}
	return s.RealPath(p), nil
}

// restoreTemp restores a NAR under a fresh temporary name in the store,
// in canonical form; it reports whether the root is a regular file. On
// error nothing is left behind.
func (s *Store) restoreTemp(ctx context.Context, name string, nr *nar.Reader, rootContents io.Writer) (string, bool, error) {
	tmp, err := s.newTemp(ctx, name)
	if err != nil {
		return "", false, err
	}
	r := &restorer{ctx: ctx, nr: nr, buf: make([]byte, 256<<10), fixMode: umaskStripsStoreModes(), rootContents: rootContents}
	if err := r.restore(tmp); err != nil {
		DeletePath(tmp)
		return "", false, err
	}
	if mayInheritXattrs(s.realDir) {
		if err := CanonicalisePathMetaData(tmp, -1, s.opts.IgnoredACLs); err != nil {
			DeletePath(tmp)
			return "", false, err
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(tmp, &st); err != nil {
		DeletePath(tmp)
		return "", false, err
	}
	return tmp, st.Mode&unix.S_IFMT == unix.S_IFREG, nil
}

// writeTemp writes a flat file under a fresh temporary name in the store,
// in canonical form (0444, mtime 1).
func (s *Store) writeTemp(ctx context.Context, name string, src io.Reader) (string, error) {
	tmp, err := s.newTemp(ctx, name)
	if err != nil {
		return "", err
	}
	err = func() error {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if err != nil {
			return err
		}
		buf := make([]byte, 256<<10)
		_, err = io.CopyBuffer(struct{ io.Writer }{f}, ctxReader{ctx, src}, buf)
		if err == nil {
			err = f.Chmod(0o444)
		}
		if err == nil {
			err = futimens(int(f.Fd()))
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && mayInheritXattrs(s.realDir) {
			err = CanonicalisePathMetaData(tmp, -1, s.opts.IgnoredACLs)
		}
		return err
	}()
	if err != nil {
		DeletePath(tmp)
		return "", err
	}
	return tmp, nil
}

// install moves a verified temporary tree to its path and registers it;
// the caller holds the path's lock. On error tmp is gone and the path is
// not valid (or, when repairing, keeps its old contents).
func (s *Store) install(ctx context.Context, tmp string, info *PathInfo, o AddOptions) error {
	real := s.RealPath(info.Path)
	var old string
	if _, err := os.Lstat(real); err == nil {
		valid, err := s.db.IsValid(ctx, info.Path)
		if err != nil {
			DeletePath(tmp)
			return err
		}
		if valid {
			// Repairing a valid path: move the old contents aside, so that
			// the path is never missing while it is valid.
			if old, err = s.newTemp(ctx, info.Path.Name()); err == nil {
				err = os.Rename(real, old)
			}
			if err != nil {
				DeletePath(tmp)
				return fmt.Errorf("repairing '%s': moving the old contents away: %w", info.Path, err)
			}
		} else if _, err := DeletePath(real); err != nil {
			DeletePath(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, real); err != nil {
		DeletePath(tmp)
		if old != "" {
			os.Rename(old, real)
		}
		return fmt.Errorf("renaming '%s' to '%s': %w", tmp, real, err)
	}
	if old != "" {
		DeletePath(old)
	}
	if o.Optimise {
		if err := s.OptimisePath(ctx, real, o.Repair); err != nil {
			DeletePath(real)
			return err
		}
	}
	if err := s.RegisterValidPaths(ctx, []*PathInfo{info}); err != nil {
		if old == "" {
			DeletePath(real)
		}
		return err
	}
	return nil
}

// RegisterValidPaths makes infos valid in one transaction (see
// nixdb.DB.RegisterValidPaths); their contents must be in place and
// canonical. With sync-before-registering, sync(2) runs first.
func (s *Store) RegisterValidPaths(ctx context.Context, infos []*PathInfo) error {
	if s.opts.SyncBeforeRegistering {
		unix.Sync()
	}
	return s.db.RegisterValidPaths(ctx, infos, s.RealPath, s.opts.DerivationOutputs)
}

func (s *Store) autoGC(ctx context.Context) {
	if s.opts.AutoGC != nil {
		s.opts.AutoGC(ctx)
	}
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
