// Package listen opens the listeners silo's servers accept on: TCP
// "host:port", unix sockets "unix:/path", and sockets passed by systemd
// socket activation (LISTEN_PID/LISTEN_FDS), which take precedence.
//
// A unix socket's stale file from a previous run is removed only if nothing
// answers on it; a live socket is an error, so two servers never steal each
// other's socket.
package listen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// listenFDsStart is the first file descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// Activated returns the listeners passed by systemd socket activation, or
// nil if the process was not socket-activated. It unsets the LISTEN_*
// variables so children do not inherit them.
func Activated() ([]net.Listener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if fds == "" {
		return nil, nil
	}
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	if pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return nil, nil // meant for another process
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q is not a count", fds)
	}
	var ls []net.Listener
	for fd := listenFDsStart; fd < listenFDsStart+n; fd++ {
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("socket activation: fd %d is not a listening socket: %w", fd, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// Listen returns the socket-activated listeners (as one, accepting on
// all) if there are any, else a listener on addr ("host:port" or
// "unix:/path").
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	ls, err := Activated()
	if err != nil {
		return nil, err
	}
	switch len(ls) {
	case 0:
		return Addr(ctx, addr)
	case 1:
		return ls[0], nil
	}
	return merge(ls), nil
}

// Addr listens on addr without considering socket activation.
func Addr(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return nil, fmt.Errorf("listen %q: empty socket path (want unix:/path/to/socket)", addr)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("listen %q: %w", addr, err)
		}
		if err := removeStale(ctx, path); err != nil {
			return nil, fmt.Errorf("listen %q: %w", addr, err)
		}
		l, err := lc.Listen(ctx, "unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen %q: %w", addr, err)
		}
		return l, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("listen %q: want host:port or unix:/path: %w", addr, err)
	}
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w (is another server using that port? choose another with --listen)", addr, err)
	}
	return l, nil
}

// removeStale removes a socket file nobody listens on.
func removeStale(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; remove it or choose another path", path)
	}
	d := net.Dialer{Timeout: time.Second}
	if c, err := d.DialContext(ctx, "unix", path); err == nil {
		c.Close()
		return fmt.Errorf("another server is listening on %s", path)
	}
	return os.Remove(path)
}

// URL returns the base URL clients use to reach l, for log messages.
func URL(l net.Listener) string {
	if l.Addr().Network() == "unix" {
		return "unix:" + l.Addr().String()
	}
	return "http://" + l.Addr().String()
}
