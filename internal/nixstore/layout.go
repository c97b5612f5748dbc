package nixstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// ensureLayout creates the store and state directories as Nix's LocalStore
// constructor does: the store with .links, profiles, temproots, db,
// gcroots (with the profiles link on first creation), the per-user
// directories, the reserved-space file; it also refuses a symlinked store.
func (s *Store) ensureLayout() error {
	o := s.opts
	for _, d := range []string{s.realDir, filepath.Join(s.realDir, ".links")} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			return fmt.Errorf("creating directory '%s': %w", d, err)
		}
	}
	if err := s.checkWritableMount(); err != nil {
		return err
	}
	profiles := filepath.Join(o.StateDir, "profiles")
	gcroots := filepath.Join(o.StateDir, "gcroots")
	for _, d := range []string{profiles, filepath.Join(o.StateDir, "temproots"), filepath.Join(o.StateDir, "db")} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			return fmt.Errorf("creating directory '%s': %w", d, err)
		}
	}
	if _, err := os.Lstat(gcroots); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(gcroots, 0o777); err != nil {
			return fmt.Errorf("creating directory '%s': %w", gcroots, err)
		}
		if err := os.Symlink(profiles, filepath.Join(gcroots, "profiles")); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating symlink to '%s': %w", profiles, err)
		}
	}
	for _, d := range []string{filepath.Join(profiles, "per-user"), filepath.Join(gcroots, "per-user")} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			return fmt.Errorf("creating directory '%s': %w", d, err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return fmt.Errorf("could not set permissions on '%s' to 755: %w", d, err)
		}
	}
	if err := s.CreateUser(s.userName, os.Getuid()); err != nil {
		return err
	}
	if os.Getuid() == 0 && o.BuildUsersGroup != "" {
		if err := s.setStoreGroup(o.BuildUsersGroup); err != nil {
			return err
		}
	}
	if !o.AllowSymlinkedStore {
		for p := s.realDir; p != "/" && p != "."; p = filepath.Dir(p) {
			st, err := os.Lstat(p)
			if err != nil {
				return fmt.Errorf("getting status of '%s': %w", p, err)
			}
			if st.Mode()&fs.ModeSymlink != 0 {
				return fmt.Errorf("the path '%s' is a symlink; this is not allowed for the Nix store and its parent directories", p)
			}
		}
	}
	// Like Nix, errors here do not matter: the file only reserves space.
	reserved := filepath.Join(o.StateDir, "db", "reserved")
	if st, err := os.Stat(reserved); err != nil || st.Size() != o.ReservedSize {
		if f, err := os.OpenFile(reserved, os.O_WRONLY|os.O_CREATE, 0o600); err == nil {
			if unix.Fallocate(int(f.Fd()), 0, 0, o.ReservedSize) != nil {
				f.Truncate(o.ReservedSize)
			}
			f.Close()
		}
	}
	return nil
}

// checkWritableMount fails clearly if the store is on a read-only mount.
// (Nix remounts it writable in its own process; a Go daemon cannot confine
// a remount to itself, so it asks the administrator instead.)
func (s *Store) checkWritableMount() error {
	var st unix.Statfs_t
	if err := unix.Statfs(s.realDir, &st); err != nil {
		return fmt.Errorf("getting info about the Nix store mount point %s: %w", s.realDir, err)
	}
	if st.Flags&unix.ST_RDONLY != 0 && os.Getuid() == 0 {
		return fmt.Errorf("the Nix store %s is on a read-only mount; remount it writable for the daemon (e.g. a private mount namespace with `mount -o remount,rw,bind %s %s`)", s.realDir, s.realDir, s.realDir)
	}
	return nil
}

// setStoreGroup gives the store directory owner root, group g and mode
// 01775, as a multi-user Nix install has it.
func (s *Store) setStoreGroup(g string) error {
	gr, err := user.LookupGroup(g)
	if err != nil {
		s.logf(LvlError, "warning: the group '%s' specified in 'build-users-group' does not exist", g)
		return nil
	}
	gid, err := strconv.Atoi(gr.Gid)
	if err != nil {
		return fmt.Errorf("group %s has a non-numeric id %q", g, gr.Gid)
	}
	var st unix.Stat_t
	if err := unix.Stat(s.realDir, &st); err != nil {
		return fmt.Errorf("getting attributes of path '%s': %w", s.realDir, err)
	}
	const perm = 0o1775
	if st.Uid != 0 || int(st.Gid) != gid || st.Mode&^unix.S_IFMT != perm {
		if err := os.Chown(s.realDir, 0, gid); err != nil {
			return fmt.Errorf("changing ownership of path '%s': %w", s.realDir, err)
		}
		if err := unix.Chmod(s.realDir, perm); err != nil {
			return fmt.Errorf("changing permissions on path '%s': %w", s.realDir, err)
		}
	}
	return nil
}

// CreateUser creates profiles/per-user/<name> and gcroots/per-user/<name>,
// mode 0755, owned by uid (Nix's createUser, run for every connecting
// user by the daemon's authentication hook).
func (s *Store) CreateUser(name string, uid int) error {
	for _, d := range []string{
		filepath.Join(s.opts.StateDir, "profiles", "per-user", name),
		filepath.Join(s.opts.StateDir, "gcroots", "per-user", name),
	} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			return fmt.Errorf("creating directory '%s': %w", d, err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return fmt.Errorf("changing permissions of directory '%s': %w", d, err)
		}
		if err := os.Chown(d, uid, os.Getgid()); err != nil {
			return fmt.Errorf("changing owner of directory '%s': %w", d, err)
		}
	}
	return nil
}
