package daemon

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// blockingConn is a client connection read and written with blocking
// system calls on its own thread, as nix-daemon's per-connection process
// does: a request wakes the thread that waits for it directly, without a
// round through Go's network poller (which costs one more wakeup per
// request, noticeable for clients that send hundreds of small requests
// one after the other, such as nix path-info -r).
//
// The descriptor is only ever used through f, so that once closed its
// number (which the kernel hands to the next connection) is never touched.
type blockingConn struct {
	f    *os.File
	once sync.Once
	err  error
}

// newBlockingConn takes over c (which it closes) and returns a blocking
// connection on the same socket.
func newBlockingConn(c *net.UnixConn) (*blockingConn, error) {
	f, err := c.File() // a duplicate descriptor
	c.Close()
	if err != nil {
		return nil, fmt.Errorf("take over connection: %w", err)
	}
	f.Fd() // makes the descriptor blocking: f's reads and writes are plain system calls now
	return &blockingConn{f: f}, nil
}

func (b *blockingConn) Read(p []byte) (int, error)  { return b.f.Read(p) }
func (b *blockingConn) Write(p []byte) (int, error) { return b.f.Write(p) }

// control runs fn on the descriptor unless the connection is closed.
func (b *blockingConn) control(fn func(fd int) error) error {
	rc, err := b.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// Close shuts the socket down first, which wakes a thread blocked reading
// it, then closes it. It may be called more than once, concurrently.
func (b *blockingConn) Close() error {
	b.once.Do(func() {
		b.control(func(fd int) error { return unix.Shutdown(fd, unix.SHUT_RDWR) })
		b.err = b.f.Close()
	})
	return b.err
}

// SetDeadline bounds each later read and write to the time left until t
// (SO_RCVTIMEO, SO_SNDTIMEO); the zero Time removes the bound.
func (b *blockingConn) SetDeadline(t time.Time) error {
	var tv unix.Timeval
	if !t.IsZero() {
		tv = unix.NsecToTimeval(max(time.Until(t), time.Millisecond).Nanoseconds())
	}
	return b.control(func(fd int) error {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	})
}

// SyscallConn lets the hangup watcher see the client go.
func (b *blockingConn) SyscallConn() (syscall.RawConn, error) { return b.f.SyscallConn() }
