package daemon

import (
	"io"
	"syscall"

	"golang.org/x/sys/unix"
)

// watchHangup calls cancel when the client at the other end of rw hangs up
// (POLLHUP), as Nix's MonitorFdHup, so that long work (a collection, a
// verification) stops when nobody waits for it. It returns a function that
// stops watching. Connections without a file descriptor are not watched.
func watchHangup(rw io.ReadWriteCloser, cancel func()) (stop func()) {
	sc, ok := rw.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return func() {}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	fd := -1
	raw.Control(func(f uintptr) { fd, _ = unix.Dup(int(f)) })
	if fd < 0 {
		return func() {}
	}
	var wake [2]int
	if err := unix.Pipe2(wake[:], unix.O_CLOEXEC); err != nil {
		unix.Close(fd)
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd)}, {Fd: int32(wake[0]), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if err == unix.EINTR {
				continue
			}
			if err != nil || fds[1].Revents != 0 {
				return
			}
			if fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
				cancel()
				return
			}
		}
	}()
	return func() {
		unix.Write(wake[1], []byte{1})
		<-done
		unix.Close(wake[0])
		unix.Close(wake[1])
	}
}
