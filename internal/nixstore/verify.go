package nixstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/storepath"
)

// VerifyStore checks the store as `nix-store --verify [--check-contents]
// [--repair]` does, with Nix's messages: every valid path must exist
// (one that vanished is invalidated if nothing valid refers to it, else
// repaired or reported); with checkContents every .links entry and every
// valid path is re-hashed (a modified link is removed when repairing; a
// modified path is repaired or reported); missing hashes and sizes are
// filled in. It reports whether errors remain. Repairing a path needs
// Options.RepairPath (substitution or rebuilding); without it, repair
// fails with "cannot repair path '%s'", as Nix's does with no substituter
// and no valid deriver.
func (s *Store) VerifyStore(ctx context.Context, checkContents, repair bool) (bool, error) {
	s.logf(LvlInfo, "reading the Nix store...")
	gcLock, err := os.OpenFile(filepath.Join(s.opts.StateDir, "gc.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false, fmt.Errorf("opening global GC lock: %w", err)
	}
	defer gcLock.Close()
	if !flockNB(gcLock, unix.LOCK_SH) {
		s.logf(LvlInfo, "waiting for the big garbage collector lock...")
		if err := flockWait(ctx, gcLock, unix.LOCK_SH); err != nil {
			return false, err
		}
	}
	entries, err := readNames(s.realDir)
	if err != nil {
		return false, err
	}
	inStore := make(map[string]bool, len(entries))
	for _, e := range entries {
		inStore[e] = true
	}
	s.logf(LvlInfo, "checking path existence...")
	all, err := s.db.QueryAllValidPaths(ctx)
	if err != nil {
		return false, err
	}
	v := &verifier{s: s, ctx: ctx, inStore: inStore, repair: repair, done: map[storepath.Path]bool{}, valid: map[storepath.Path]bool{}}
	for _, p := range all {
		if err := v.verifyPath(p); err != nil {
			return v.errors, err
		}
	}
	if !checkContents {
		return v.errors, nil
	}
	s.logf(LvlInfo, "checking link hashes...")
	links := filepath.Join(s.realDir, ".links")
	names, err := readNames(links)
	if err != nil {
		return v.errors, err
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return v.errors, err
		}
		lp := filepath.Join(links, name)
		h, _, err := nar.HashPath(ctx, lp)
		if err != nil {
			return v.errors, err
		}
		if h.Nix32() != name {
			s.logf(LvlError, "link '%s' was modified! expected hash '%s', got '%s'", lp, name, h.Nix32())
			if repair {
				if err := os.Remove(lp); err != nil {
					return v.errors, fmt.Errorf("removing corrupt link '%s': %w", lp, err)
				}
				s.logf(LvlInfo, "removed link '%s'", lp)
			} else {
				v.errors = true
			}
		}
	}
	s.logf(LvlInfo, "checking store hashes...")
	for _, p := range all {
		if !v.valid[p] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return v.errors, err
		}
		if err := v.checkContents(p); err != nil {
			if ok, _ := s.db.IsValid(ctx, p); ok {
				s.logf(LvlError, "%v", err)
			} else {
				s.logf(LvlWarn, "%v", err)
			}
			v.errors = true
		}
	}
	return v.errors, nil
}

type verifier struct {
	s       *Store
	ctx     context.Context
	inStore map[string]bool
	repair  bool
	done    map[storepath.Path]bool
	valid   map[storepath.Path]bool // exist on disk
	errors  bool
}

func (v *verifier) verifyPath(p storepath.Path) error {
	if v.done[p] {
		return nil
	}
	v.done[p] = true
	if v.inStore[p.Base()] {
		v.valid[p] = true
		return nil
	}
	refs, err := v.s.db.QueryReferrers(v.ctx, p)
	if err != nil {
		return err
	}
	canInvalidate := true
	for _, r := range refs {
		if r == p {
			continue
		}
		if err := v.verifyPath(r); err != nil {
			return err
		}
		if v.valid[r] {
			canInvalidate = false
		}
	}
	if canInvalidate {
		v.s.logf(LvlInfo, "path '%s' disappeared, removing from database...", p)
		return v.s.db.InvalidatePath(v.ctx, p)
	}
	v.s.logf(LvlError, "path '%s' disappeared, but it still has valid referrers!", p)
	if v.repair {
		if err := v.s.repairPath(v.ctx, p); err != nil {
			v.s.logf(LvlWarn, "%v", err)
			v.errors = true
		}
	} else {
		v.errors = true
	}
	return nil
}

func (v *verifier) checkContents(p storepath.Path) error {
	info, err := v.s.db.QueryPathInfo(v.ctx, p)
	if err != nil {
		return err
	}
	v.s.logf(LvlTalkative, "checking contents of '%s'", p)
	h, size, err := nar.HashPath(v.ctx, v.s.RealPath(p))
	if err != nil {
		return err
	}
	if !info.NarHash.IsZero() && !isNullHash(info) && info.NarHash != h {
		v.s.logf(LvlError, "path '%s' was modified! expected hash '%s', got '%s'", p, info.NarHash, h)
		if v.repair {
			return v.s.repairPath(v.ctx, p)
		}
		v.errors = true
		return nil
	}
	update := false
	if isNullHash(info) {
		v.s.logf(LvlInfo, "fixing missing hash on '%s'", p)
		info.NarHash = h
		update = true
	}
	if info.NarSize == 0 {
		v.s.logf(LvlInfo, "updating size field on '%s' to %d", p, size)
		info.NarSize = size
		update = true
	}
	if update {
		return v.s.db.UpdatePathInfo(v.ctx, info)
	}
	return nil
}

// isNullHash reports an all-zero NAR hash (stores from before Nix kept
// hashes).
func isNullHash(info *PathInfo) bool {
	for _, b := range info.NarHash.Bytes() {
		if b != 0 {
			return false
		}
	}
	return true
}

// repairPath repairs p through Options.RepairPath.
func (s *Store) repairPath(ctx context.Context, p storepath.Path) error {
	if s.opts.RepairPath == nil {
		return fmt.Errorf("cannot repair path '%s'", p)
	}
	return s.opts.RepairPath(ctx, p)
}

// readNames lists a directory.
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening directory '%s': %w", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("reading directory '%s': %w", dir, err)
	}
	return names, nil
}
