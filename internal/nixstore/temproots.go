package nixstore

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/storepath"
)

// Temp-root file names: Nix names them by process id and unlinks a file
// of its own pid as stale, and readers parse the name as an int. So silo
// uses numbers above any pid (Linux caps pid_max at 2^22) that still fit
// an int: no Nix process ever claims one of them.
const (
	minTempRootName = 1<<22 + 1
	maxTempRootName = 1<<31 - 1
)

// tempRoots is one Store's temp-roots file, created on first use.
type tempRoots struct {
	dir, gcLockPath, socketPath string

	file   *os.File // temproots/<n>, exclusively locked; nil until first root
	name   string
	gcLock *os.File
	sock   net.Conn // connection to a running collector's gc-socket
	added  map[storepath.Path]bool
	closed bool
}

func newTempRoots(dir, gcLock, socket string) *tempRoots {
	return &tempRoots{dir: dir, gcLockPath: gcLock, socketPath: socket, added: map[storepath.Path]bool{}}
}

// TempRootsFile returns the path of the store's temp-roots file, "" if no
// temp root was added yet.
func (s *Store) TempRootsFile() string {
	s.rootsMu.Lock()
	defer s.rootsMu.Unlock()
	if s.roots.file == nil {
		return ""
	}
	return filepath.Join(s.roots.dir, s.roots.name)
}

// AddTempRoot makes p a temporary GC root for as long as the Store is
// open, as Nix's addTempRoot: no collector, silo's or Nix's, deletes p (or
// debris named after its hash part) until Close.
func (s *Store) AddTempRoot(ctx context.Context, p storepath.Path) error {
	s.rootsMu.Lock()
	defer s.rootsMu.Unlock()
	if err := s.roots.add(ctx, p); err != nil {
		return fmt.Errorf("adding temporary root %s: %w", p, err)
	}
	return nil
}

func (t *tempRoots) add(ctx context.Context, p storepath.Path) error {
	if t.closed {
		return errors.New("store is closed")
	}
	if t.added[p] {
		return nil
	}
	if t.file == nil {
		if err := t.create(ctx); err != nil {
			return err
		}
	}
	if t.gcLock == nil {
		f, err := os.OpenFile(t.gcLockPath, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("opening global GC lock '%s': %w", t.gcLockPath, err)
		}
		t.gcLock = f
	}
	for {
		if flockNB(t.gcLock, unix.LOCK_SH) {
			break
		}
		// A collector holds gc.lock: tell it about the root first.
		err := t.tellCollector(ctx, p)
		if err == nil {
			break
		}
		if !errors.Is(err, errCollectorGone) {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(time.Millisecond) // it is finishing; retry the lock
	}
	_, err := t.file.Write([]byte(p.String() + "\x00"))
	unix.Flock(int(t.gcLock.Fd()), unix.LOCK_UN)
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(t.dir, t.name), err)
	}
	t.added[p] = true
	return nil
}

var errCollectorGone = errors.New("garbage collector exited")

// tellCollector sends p to the running collector and waits for its
// acknowledgement, as Nix's addTempRoot does over gc-socket/socket.
func (t *tempRoots) tellCollector(ctx context.Context, p storepath.Path) error {
	if t.sock == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", t.socketPath)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
				return errCollectorGone
			}
			return fmt.Errorf("connecting to the garbage collector at %s: %w", t.socketPath, err)
		}
		t.sock = c
	}
	stop := context.AfterFunc(ctx, func() { t.sock.SetDeadline(time.Now()) })
	defer stop()
	gone := func(err error) error {
		t.sock.Close()
		t.sock = nil
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			return errCollectorGone
		}
		return fmt.Errorf("talking to the garbage collector at %s: %w", t.socketPath, err)
	}
	if _, err := t.sock.Write([]byte(p.String() + "\n")); err != nil {
		return gone(err)
	}
	var ack [1]byte
	if _, err := io.ReadFull(t.sock, ack[:]); err != nil {
		return gone(err)
	}
	if ack[0] != '1' {
		return gone(fmt.Errorf("unexpected reply %q", ack[:]))
	}
	return nil
}

// create makes the temp-roots file: a fresh number, exclusively locked,
// and still empty once locked (a collector that found it unlocked in
// between deleted it and wrote "d"; then try again).
func (t *tempRoots) create(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := strconv.Itoa(minTempRootName + rand.IntN(maxTempRootName-minTempRootName))
		path := filepath.Join(t.dir, name)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("creating temporary roots file in %s: %w", t.dir, err)
		}
		if err := flockWait(ctx, f, unix.LOCK_EX); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
			return fmt.Errorf("statting '%s': %w", path, err)
		}
		if st.Size != 0 {
			f.Close()
			continue
		}
		t.file, t.name = f, name
		return nil
	}
}

func (t *tempRoots) close() error {
	t.closed = true
	if t.sock != nil {
		t.sock.Close()
	}
	if t.gcLock != nil {
		t.gcLock.Close()
	}
	if t.file == nil {
		return nil
	}
	err := os.Remove(filepath.Join(t.dir, t.name))
	t.file.Close()
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return err
}

// AddIndirectRoot registers link (an absolute path to a symlink into the
// store, made by the client) as a GC root: gcroots/auto/<nix32 sha1 of
// link> becomes a symlink to link, as Nix's addIndirectRoot.
func (s *Store) AddIndirectRoot(ctx context.Context, link string) error {
	if !filepath.IsAbs(link) {
		return fmt.Errorf("indirect root %q is not an absolute path", link)
	}
	sum := sha1.Sum([]byte(link))
	root := filepath.Join(s.opts.StateDir, "gcroots", "auto", nix32.Encode(sum[:]))
	return MakeSymlink(root, link)
}

// MakeSymlink atomically makes link a symlink to target, creating link's
// directory (Nix's makeSymlink: a temporary link renamed over it).
func MakeSymlink(link, target string) error {
	if err := os.MkdirAll(filepath.Dir(link), 0o777); err != nil {
		return fmt.Errorf("creating directory '%s': %w", filepath.Dir(link), err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d-%d", link, os.Getpid(), rand.Uint32())
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("creating symlink '%s': %w", tmp, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot rename '%s' to '%s': %w", tmp, link, err)
	}
	return nil
}
