package nixstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/nar"
)

// OptimiseStats counts what optimising did.
type OptimiseStats struct {
	FilesLinked uint64
	BytesFreed  uint64
	BlocksFreed uint64
}

// optimiser hard-links identical files of the store to one inode kept in
// <store>/.links/<nix32 NAR sha256 of the file>, as Nix's optimisePath_.
type optimiser struct {
	s      *Store
	ctx    context.Context
	links  string
	inodes map[uint64]bool // inodes known to be in .links
	repair bool
	stats  OptimiseStats
}

// OptimisePath deduplicates the files of one store object at its real
// path against .links (auto-optimise-store after an addition).
func (s *Store) OptimisePath(ctx context.Context, path string, repair bool) error {
	o := &optimiser{s: s, ctx: ctx, links: filepath.Join(s.realDir, ".links"), inodes: map[uint64]bool{}, repair: repair}
	return o.path(path)
}

// OptimiseStore deduplicates every valid path (`nix-store --optimise`).
// Each path is temp-rooted first, so a concurrent collection leaves it
// alone; paths that became invalid meanwhile are skipped. progress, if
// not nil, is called after each path with the count done and the total.
func (s *Store) OptimiseStore(ctx context.Context, progress func(done, total int)) (OptimiseStats, error) {
	paths, err := s.db.QueryAllValidPaths(ctx)
	if err != nil {
		return OptimiseStats{}, err
	}
	o := &optimiser{s: s, ctx: ctx, links: filepath.Join(s.realDir, ".links"), inodes: map[uint64]bool{}}
	if err := o.loadInodes(); err != nil {
		return o.stats, err
	}
	for i, p := range paths {
		if err := ctx.Err(); err != nil {
			return o.stats, err
		}
		if err := s.AddTempRoot(ctx, p); err != nil {
			return o.stats, err
		}
		if ok, err := s.db.IsValid(ctx, p); err != nil {
			return o.stats, err
		} else if !ok {
			continue
		}
		s.logf(LvlTalkative, "optimising path '%s'", p)
		if err := o.path(s.RealPath(p)); err != nil {
			return o.stats, err
		}
		if progress != nil {
			progress(i+1, len(paths))
		}
	}
	s.logf(LvlInfo, "%s freed by hard-linking %d files", showBytes(o.stats.BytesFreed), o.stats.FilesLinked)
	return o.stats, nil
}

func showBytes(n uint64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

func (o *optimiser) loadInodes() error {
	f, err := os.Open(o.links)
	if err != nil {
		return fmt.Errorf("opening directory '%s': %w", o.links, err)
	}
	defer f.Close()
	for {
		ents, err := f.ReadDir(4096)
		for _, e := range ents {
			if info, err := e.Info(); err == nil {
				if st, ok := info.Sys().(*unix.Stat_t); ok {
					o.inodes[st.Ino] = true
				}
			}
		}
		if err != nil {
			if len(ents) == 0 {
				return nil
			}
		}
	}
}

func (o *optimiser) path(path string) error {
	if err := o.ctx.Err(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fmt.Errorf("getting status of '%s': %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("opening directory '%s': %w", path, err)
		}
		ents, err := f.ReadDir(-1)
		f.Close()
		if err != nil {
			return fmt.Errorf("reading directory '%s': %w", path, err)
		}
		for _, e := range ents {
			if info, err := e.Info(); err == nil {
				if est, ok := info.Sys().(*unix.Stat_t); ok && o.inodes[est.Ino] {
					continue // already linked
				}
			}
			if err := o.path(path + "/" + e.Name()); err != nil {
				return err
			}
		}
		return nil
	case unix.S_IFREG, unix.S_IFLNK:
	default:
		return nil
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&unix.S_IWUSR != 0 {
		o.s.logf(LvlWarn, "skipping suspicious writable file '%s'", path)
		return nil
	}
	if st.Nlink > 1 && o.inodes[st.Ino] {
		return nil
	}
	h, _, err := nar.HashPath(o.ctx, path)
	if err != nil {
		return err
	}
	linkPath := o.links + "/" + h.Nix32()
	var lst unix.Stat_t
	if err := unix.Lstat(linkPath, &lst); err == nil {
		corrupt := st.Size != lst.Size
		if !corrupt && o.repair {
			lh, _, err := nar.HashPath(o.ctx, linkPath)
			corrupt = err != nil || lh != h
		}
		if corrupt {
			o.s.logf(LvlWarn, "removing corrupted link '%s'", linkPath)
			o.s.logf(LvlWarn, "There may be more corrupted paths.\nYou should run `nix-store --verify --check-contents --repair` to fix them all")
			os.Remove(linkPath)
		}
	}
	if err := unix.Lstat(linkPath, &lst); errors.Is(err, unix.ENOENT) {
		err := unix.Link(path, linkPath)
		switch {
		case err == nil:
			o.inodes[st.Ino] = true
			return nil
		case errors.Is(err, unix.EEXIST):
		case errors.Is(err, unix.ENOSPC):
			o.s.logf(LvlInfo, "cannot link '%s' to '%s': %v", linkPath, path, err)
			return nil
		default:
			return fmt.Errorf("cannot link '%s' to '%s': %w", linkPath, path, err)
		}
		if err := unix.Lstat(linkPath, &lst); err != nil {
			return fmt.Errorf("getting status of '%s': %w", linkPath, err)
		}
	} else if err != nil {
		return fmt.Errorf("getting status of '%s': %w", linkPath, err)
	}
	if st.Ino == lst.Ino {
		return nil
	}
	o.s.logf(LvlTalkative, "linking '%s' to '%s'", path, linkPath)
	dir := filepath.Dir(path)
	if dir != o.s.realDir {
		var dst unix.Stat_t
		if err := unix.Lstat(dir, &dst); err != nil {
			return fmt.Errorf("getting status of '%s': %w", dir, err)
		}
		if err := unix.Chmod(dir, dst.Mode&0o7777|unix.S_IWUSR); err != nil {
			return fmt.Errorf("changing writability of '%s': %w", dir, err)
		}
		defer CanonicaliseTimestampAndPermissions(dir)
	}
	tmp := fmt.Sprintf("%s/.tmp-link-%d-%d", o.s.realDir, os.Getpid(), rand.Uint32())
	if err := unix.Link(linkPath, tmp); err != nil {
		if errors.Is(err, unix.EMLINK) {
			if st.Size > 0 {
				o.s.logf(LvlInfo, "'%s' has maximum number of links", linkPath)
			}
			return nil
		}
		return fmt.Errorf("cannot link '%s' to '%s': %w", tmp, linkPath, err)
	}
	if err := unix.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		if errors.Is(err, unix.EMLINK) {
			return nil
		}
		return fmt.Errorf("cannot rename '%s' to '%s': %w", tmp, path, err)
	}
	o.stats.FilesLinked++
	o.stats.BytesFreed += uint64(st.Size)
	o.stats.BlocksFreed += uint64(st.Blocks)
	return nil
}
