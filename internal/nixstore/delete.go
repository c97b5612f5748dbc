package nixstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// DeletePath removes path and everything below it, making read-only
// directories writable first, as Nix's deletePath. It returns the bytes
// Nix counts as freed (sizes of files with one or two links: two, because
// the second is likely a .links entry). A missing path is no error.
func DeletePath(path string) (uint64, error) {
	dir, name := filepath.Split(filepath.Clean(path))
	if dir == "" {
		dir = "."
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("opening directory '%s': %w", dir, err)
	}
	defer unix.Close(dfd)
	var freed uint64
	err = deleteAt(dfd, name, path, &freed)
	return freed, err
}

// DeletePathAt is DeletePath of the entry name of the open directory
// dirfd (path names it in errors).
func DeletePathAt(dirfd int, name, path string) (uint64, error) {
	var freed uint64
	err := deleteAt(dirfd, name, path, &freed)
	return freed, err
}

func deleteAt(parent int, name, path string, freed *uint64) error {
	var st unix.Stat_t
	if err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return fmt.Errorf("getting status of '%s': %w", path, err)
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if !isDir && (st.Nlink == 1 || st.Nlink == 2) {
		*freed += uint64(st.Size)
	}
	flags := 0
	if isDir {
		flags = unix.AT_REMOVEDIR
		if st.Mode&0o700 != 0o700 {
			if err := unix.Fchmodat(parent, name, st.Mode&0o7777|0o700, 0); err != nil {
				return fmt.Errorf("chmod '%s': %w", path, err)
			}
		}
		fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening directory '%s': %w", path, err)
		}
		f := os.NewFile(uintptr(fd), path)
		names, err := f.Readdirnames(-1)
		if err != nil {
			f.Close()
			return fmt.Errorf("reading directory '%s': %w", path, err)
		}
		for _, n := range names {
			if err := deleteAt(fd, n, path+"/"+n, freed); err != nil {
				f.Close()
				return err
			}
		}
		f.Close()
	}
	if err := unix.Unlinkat(parent, name, flags); err != nil && err != unix.ENOENT {
		return fmt.Errorf("cannot unlink '%s': %w", path, err)
	}
	return nil
}
