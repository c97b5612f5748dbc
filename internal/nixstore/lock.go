package nixstore

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// PathLocks holds Nix path locks: an exclusive flock on <path>.lock for
// each path, taken in sorted order (so two lockers of overlapping sets
// cannot deadlock).
type PathLocks struct {
	fds   []int
	paths []string
}

// LockPaths locks each of paths (real file system paths; the lock files
// are <path>.lock), waiting as long as needed or until ctx is done. If a
// lock is not free at once and waitMsg is not empty, log gets waitMsg
// (Nix prints "waiting for lock on ..." here).
func LockPaths(ctx context.Context, paths []string, waitMsg string, log func(string)) (*PathLocks, error) {
	l, _, err := lockPaths(ctx, paths, true, waitMsg, log)
	return l, err
}

// TryLockPaths locks paths without waiting; it reports false (and holds
// nothing) if any of them is locked by someone else.
func TryLockPaths(ctx context.Context, paths []string) (*PathLocks, bool, error) {
	return lockPaths(ctx, paths, false, "", nil)
}

func lockPaths(ctx context.Context, paths []string, wait bool, waitMsg string, log func(string)) (*PathLocks, bool, error) {
	sorted := slices.Clone(paths)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	l := &PathLocks{}
	for _, p := range sorted {
		lockPath := p + ".lock"
		for {
			fd, err := unix.Open(lockPath, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
			if err != nil {
				l.Unlock(false)
				return nil, false, fmt.Errorf("opening lock file '%s': %w", lockPath, err)
			}
			if !flockFdNB(fd, unix.LOCK_EX) {
				if !wait {
					unix.Close(fd)
					l.Unlock(false)
					return nil, false, nil
				}
				if waitMsg != "" && log != nil {
					log(waitMsg)
				}
				if err := flockFdWait(ctx, fd, unix.LOCK_EX); err != nil {
					unix.Close(fd)
					l.Unlock(false)
					return nil, false, fmt.Errorf("waiting for lock on '%s': %w", p, err)
				}
			}
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				unix.Close(fd)
				l.Unlock(false)
				return nil, false, fmt.Errorf("statting lock file '%s': %w", lockPath, err)
			}
			if st.Size == 0 {
				l.fds = append(l.fds, fd)
				l.paths = append(l.paths, lockPath)
				break
			}
			// Its owner deleted it after we opened it: someone else may
			// now hold a lock on a new file of that name. Retry.
			unix.Close(fd)
		}
	}
	return l, true, nil
}

// Unlock releases the locks. With deleteFiles, each lock file is first
// unlinked and marked stale ("d"), so that waiters on it retry, as Nix's
// PathLocks with setDeletion(true).
func (l *PathLocks) Unlock(deleteFiles bool) {
	if l == nil {
		return
	}
	for i, fd := range l.fds {
		if deleteFiles {
			unix.Unlink(l.paths[i])
			unix.Write(fd, []byte("d"))
		}
		unix.Close(fd)
	}
	l.fds, l.paths = nil, nil
}

func flockNB(f *os.File, how int) bool { return flockFdNB(int(f.Fd()), how) }

func flockFdNB(fd, how int) bool {
	for {
		err := unix.Flock(fd, how|unix.LOCK_NB)
		if err != unix.EINTR {
			return err == nil
		}
	}
}

// flockWait takes a lock, waiting. A blocking flock cannot be interrupted
// by ctx, so it polls, backing off to 50 ms between tries.
func flockWait(ctx context.Context, f *os.File, how int) error {
	return flockFdWait(ctx, int(f.Fd()), how)
}

func flockFdWait(ctx context.Context, fd, how int) error {
	pause := 100 * time.Microsecond
	for !flockFdNB(fd, how) {
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(pause*2, 50*time.Millisecond)
	}
	return nil
}

// LockFile takes a flock (unix.LOCK_SH or LOCK_EX) on f, waiting until it
// is free or ctx is done; onWait, if not nil, runs once if it must wait
// (Nix prints "waiting for ..." then).
func LockFile(ctx context.Context, f *os.File, how int, onWait func()) error {
	if flockNB(f, how) {
		return nil
	}
	if onWait != nil {
		onWait()
	}
	return flockWait(ctx, f, how)
}
