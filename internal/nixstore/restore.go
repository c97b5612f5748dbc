package nixstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/nar"
)

// mtimeStore is the modification time of everything in the store.
const mtimeStore = 1

var storeTimes = []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: mtimeStore}}

// restorer creates a tree from a strict NAR reader already in canonical
// form: files 0444 or 0555, directories 0555, mtime 1 (atime kept), owned
// by the creator. That is what canonicalisePathMetaData would make of it,
// without walking the tree a second time.
type restorer struct {
	ctx context.Context
	nr  *nar.Reader
	buf []byte
	// fixMode is set when the umask would strip bits from 0555, so that
	// every file needs an fchmod after creation.
	fixMode bool
	// rootContents, if not nil, receives the contents of a root regular
	// file (for flat content addresses).
	rootContents io.Writer
}

type openDir struct {
	path string
	fd   int
}

// restore creates dst from the NAR. dst must not exist; on error the
// caller removes whatever was created at dst.
func (r *restorer) restore(dst string) error {
	h, err := r.nr.Next()
	if err != nil {
		return err
	}
	switch h.Type {
	case nar.TypeRegular:
		if err := r.file(unix.AT_FDCWD, dst, h, r.rootContents); err != nil {
			return err
		}
	case nar.TypeSymlink:
		if err := r.symlink(unix.AT_FDCWD, dst, h); err != nil {
			return err
		}
	case nar.TypeDirectory:
		fd, err := r.mkdir(unix.AT_FDCWD, dst)
		if err != nil {
			return err
		}
		if err := r.tree(fd); err != nil {
			return err
		}
		return nil
	}
	if _, err := r.nr.Next(); err != io.EOF {
		if err == nil {
			err = errors.New("NAR has more than one root object")
		}
		return err
	}
	return nil
}

// tree creates the entries of the root directory open at rootFd.
func (r *restorer) tree(rootFd int) (err error) {
	stack := []openDir{{"", rootFd}}
	defer func() {
		for _, d := range stack {
			unix.Close(d.fd)
		}
	}()
	pop := func() error {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		err := finishDir(d.fd)
		unix.Close(d.fd)
		if err != nil {
			return fmt.Errorf("%s: %w", show(d.path), err)
		}
		return nil
	}
	for {
		h, err := r.nr.Next()
		if err == io.EOF {
			for len(stack) > 0 {
				if err := pop(); err != nil {
					return err
				}
			}
			return nil
		}
		if err != nil {
			return err
		}
		if err := r.ctx.Err(); err != nil {
			return err
		}
		parent, name := splitPath(h.Path)
		for len(stack) > 1 && stack[len(stack)-1].path != parent {
			if err := pop(); err != nil {
				return err
			}
		}
		if stack[len(stack)-1].path != parent {
			return fmt.Errorf("%s: directory %q not open", show(h.Path), parent)
		}
		dirfd := stack[len(stack)-1].fd
		switch h.Type {
		case nar.TypeRegular:
			err = r.file(dirfd, name, h, nil)
		case nar.TypeSymlink:
			err = r.symlink(dirfd, name, h)
		case nar.TypeDirectory:
			var fd int
			if fd, err = r.mkdir(dirfd, name); err == nil {
				stack = append(stack, openDir{h.Path, fd})
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", show(h.Path), err)
		}
	}
}

func (r *restorer) mkdir(dirfd int, name string) (int, error) {
	if err := unix.Mkdirat(dirfd, name, 0o755); err != nil {
		return -1, fmt.Errorf("mkdir: %w", err)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open directory: %w", err)
	}
	return fd, nil
}

// finishDir makes a directory read-only with mtime 1, once its entries
// are complete.
func finishDir(fd int) error {
	if err := unix.Fchmod(fd, 0o555); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return futimens(fd)
}

// futimens sets the open file's mtime to mtimeStore, keeping its atime
// (utimensat with a NULL path, which x/sys/unix does not wrap).
func futimens(fd int) error {
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: mtimeStore}}
	for {
		_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if e != unix.EINTR {
			if e != 0 {
				return fmt.Errorf("set mtime: %w", e)
			}
			return nil
		}
	}
}

func (r *restorer) symlink(dirfd int, name string, h *nar.Header) error {
	if err := unix.Symlinkat(h.LinkTarget, dirfd, name); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	return unix.UtimesNanoAt(dirfd, name, storeTimes, unix.AT_SYMLINK_NOFOLLOW)
}

func (r *restorer) file(dirfd int, name string, h *nar.Header, tee io.Writer) error {
	mode := uint32(0o444)
	if h.Executable {
		mode = 0o555
	}
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	err = r.fill(fd, h, tee)
	if err == nil && r.fixMode {
		err = unix.Fchmod(fd, mode)
	}
	if err == nil {
		err = futimens(fd)
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

func (r *restorer) fill(fd int, h *nar.Header, tee io.Writer) error {
	// No fallocate from the declared size: a hostile NAR may declare
	// terabytes it never sends.
	for {
		n, rerr := r.nr.Read(r.buf)
		if n > 0 {
			if tee != nil {
				tee.Write(r.buf[:n])
			}
			for b := r.buf[:n]; len(b) > 0; {
				w, err := unix.Write(fd, b)
				if err != nil {
					if err == unix.EINTR {
						continue
					}
					return fmt.Errorf("write: %w", err)
				}
				b = b[w:]
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
		if err := r.ctx.Err(); err != nil {
			return err
		}
	}
}

func splitPath(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func show(p string) string {
	if p == "" {
		return "root"
	}
	return fmt.Sprintf("entry %q", p)
}

// umaskStripsStoreModes reports whether the process umask would remove
// bits of 0555 from newly created files (read from /proc/self/status; if
// that is not possible, assume it does).
func umaskStripsStoreModes() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return err != nil || m&0o555 != 0
		}
	}
	return true
}
