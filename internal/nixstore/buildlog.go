package nixstore

import (
	"compress/bzip2"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/silo-cache/silo/internal/storepath"
)

// ErrNoBuildLog is returned (wrapped) when no build log exists.
var ErrNoBuildLog = errors.New("build log not available")

// BuildLogPath returns where Nix keeps the uncompressed build log of the
// derivation drv: <log>/drvs/<first 2 chars>/<rest of the base name>
// (the compressed one adds ".bz2").
func (s *Store) BuildLogPath(drv storepath.Path) string {
	b := drv.Base()
	return filepath.Join(s.opts.LogDir, "drvs", b[:2], b[2:])
}

// OpenBuildLog opens the build log of p (a derivation, or a path whose
// deriver is looked up), as the Nix client reads it: the plain file, else
// the .bz2 one (decompressed), else the legacy flat drvs/<base name>.
func (s *Store) OpenBuildLog(ctx context.Context, p storepath.Path) (io.ReadCloser, error) {
	if !p.IsDerivation() {
		info, err := s.db.QueryPathInfo(ctx, p)
		if errors.Is(err, ErrNotValid) {
			return nil, fmt.Errorf("build log of '%s': %w", p, ErrNoBuildLog)
		}
		if err != nil {
			return nil, err
		}
		if info.Deriver.IsZero() {
			return nil, fmt.Errorf("build log of '%s' (no deriver known): %w", p, ErrNoBuildLog)
		}
		p = info.Deriver
	}
	for _, plain := range []string{s.BuildLogPath(p), filepath.Join(s.opts.LogDir, "drvs", p.Base())} {
		if f, err := os.Open(plain); err == nil {
			return f, nil
		}
		if f, err := os.Open(plain + ".bz2"); err == nil {
			return struct {
				io.Reader
				io.Closer
			}{bzip2.NewReader(f), f}, nil
		}
	}
	return nil, fmt.Errorf("build log of '%s': %w", p, ErrNoBuildLog)
}

// AddBuildLog stores a build log for drv unless one exists, as Nix's
// addBuildLog (`nix store copy-log --to`). The log is written to a
// temporary file and renamed, so readers never see part of it. Nix writes
// it bzip2-compressed; silo writes it plain, which every Nix reads too.
func (s *Store) AddBuildLog(ctx context.Context, drv storepath.Path, log io.Reader) error {
	if !drv.IsDerivation() {
		return fmt.Errorf("adding a build log: '%s' is not a derivation", drv)
	}
	path := s.BuildLogPath(drv)
	for _, p := range []string{path, path + ".bz2"} {
		if _, err := os.Lstat(p); err == nil {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o777); err != nil {
		return fmt.Errorf("creating directory '%s': %w", filepath.Dir(path), err)
	}
	tmp := fmt.Sprintf("%s.tmp.%d", path, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
	if err != nil {
		return fmt.Errorf("writing build log %s: %w", tmp, err)
	}
	_, err = io.Copy(f, ctxReader{ctx, log})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing build log %s: %w", path, err)
	}
	return nil
}

// CreateBuildLog creates (truncating) the build log of drv for a build
// about to start, as Nix does before running a builder; the caller writes
// the builder's output to it and closes it. It is written plain (see
// AddBuildLog), and a stale compressed log of an earlier build is removed
// so that readers see this one.
func (s *Store) CreateBuildLog(drv storepath.Path) (io.WriteCloser, error) {
	if !drv.IsDerivation() {
		return nil, fmt.Errorf("creating a build log: '%s' is not a derivation", drv)
	}
	path := s.BuildLogPath(drv)
	if err := os.MkdirAll(filepath.Dir(path), 0o777); err != nil {
		return nil, fmt.Errorf("creating directory '%s': %w", filepath.Dir(path), err)
	}
	os.Remove(path + ".bz2")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
	if err != nil {
		return nil, fmt.Errorf("creating build log '%s': %w", path, err)
	}
	return f, nil
}
