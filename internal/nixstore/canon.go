package nixstore

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// CanonicalisePathMetaData gives the tree at path the metadata every store
// object has, as Nix's canonicalisePathMetaData: only regular files,
// directories and symlinks; extended attributes removed except
// ignoredACLs; modes 0444 or 0555 (0555 if the owner could execute);
// mtime 1 (atime kept); owned by the effective user. With fromUID >= 0
// (a build user), a file owned by anyone else is an error ("invalid
// ownership on file '%s'") unless it is a hard link to a file already
// seen.
func CanonicalisePathMetaData(path string, fromUID int, ignoredACLs []string) error {
	seen := map[[2]uint64]bool{}
	if err := canonicalise(path, fromUID, ignoredACLs, seen); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fmt.Errorf("getting status of '%s': %w", path, err)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("wrong ownership of top-level store path '%s'", path)
	}
	return nil
}

func canonicalise(path string, fromUID int, ignored []string, seen map[[2]uint64]bool) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fmt.Errorf("getting status of '%s': %w", path, err)
	}
	typ := st.Mode & unix.S_IFMT
	if typ != unix.S_IFREG && typ != unix.S_IFDIR && typ != unix.S_IFLNK {
		return fmt.Errorf("file '%s' has an unsupported type", path)
	}
	if err := stripXattrs(path, ignored); err != nil {
		return err
	}
	ino := [2]uint64{st.Dev, st.Ino}
	if fromUID >= 0 && int(st.Uid) != fromUID {
		if typ == unix.S_IFDIR || !seen[ino] {
			return fmt.Errorf("invalid ownership on file '%s'", path)
		}
		return nil
	}
	seen[ino] = true
	if err := canonicaliseModeTime(path, &st); err != nil {
		return err
	}
	if int(st.Uid) != os.Geteuid() {
		if err := unix.Lchown(path, os.Geteuid(), os.Getegid()); err != nil {
			return fmt.Errorf("changing owner of '%s' to %d: %w", path, os.Geteuid(), err)
		}
	}
	if typ == unix.S_IFDIR {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("opening directory '%s': %w", path, err)
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return fmt.Errorf("reading directory '%s': %w", path, err)
		}
		slices.Sort(names)
		for _, n := range names {
			if err := canonicalise(path+"/"+n, fromUID, ignored, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

// canonicaliseModeTime is Nix's canonicaliseTimestampAndPermissions.
func canonicaliseModeTime(path string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		mode := st.Mode &^ unix.S_IFMT
		if mode != 0o444 && mode != 0o555 {
			mode = 0o444
			if st.Mode&unix.S_IXUSR != 0 {
				mode |= 0o111
			}
			if err := unix.Chmod(path, mode); err != nil {
				return fmt.Errorf("changing mode of '%s' to %o: %w", path, mode, err)
			}
		}
	}
	if st.Mtim.Sec != mtimeStore {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, storeTimes, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("changing modification time of '%s': %w", path, err)
		}
	}
	return nil
}

// CanonicaliseTimestampAndPermissions resets one file's mode and mtime
// (what optimise does to a directory it had to make writable).
func CanonicaliseTimestampAndPermissions(path string) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fmt.Errorf("getting status of '%s': %w", path, err)
	}
	return canonicaliseModeTime(path, &st)
}

func stripXattrs(path string, ignored []string) error {
	buf := make([]byte, 1024)
	var n int
	for {
		var err error
		n, err = unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENODATA) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("querying extended attributes of '%s': %w", path, err)
		}
		break
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || slices.Contains(ignored, name) {
			continue
		}
		if err := unix.Lremovexattr(path, name); err != nil {
			return fmt.Errorf("removing extended attribute '%s' from '%s': %w", name, path, err)
		}
	}
	return nil
}

// mayInheritXattrs reports whether new files in dir may get extended
// attributes canonicalisation would remove (a default ACL on dir).
func mayInheritXattrs(dir string) bool {
	_, err := unix.Getxattr(dir, "system.posix_acl_default", nil)
	return err == nil
}
