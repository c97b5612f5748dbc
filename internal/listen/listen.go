// Package listen opens the listeners silo's servers accept on: TCP
// "host:port", unix sockets "unix:/path", and sockets passed by systemd
// socket activation (LISTEN_PID/LISTEN_FDS), which take precedence.
//
// A unix socket's stale file from a previous run is removed only if nothing
// answers on it; a live socket is an error, so two servers never steal each
// other's socket.
//
// It also guards the connections of silo's HTTP servers against hostile
// clients (Guard, Conn, Protect): bounded connections overall and per
// client address with a plain 503 past them, a minimum transfer rate on
// every read and write a request makes, refusal of ambiguously framed
// requests; and serves TLS with a certificate reloaded on demand.
package listen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
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

// Socket is how a unix socket's file is made: its permission bits and
// group. Zero values leave what the system gives (the umask; the
// process's group). Sockets passed by systemd are left as systemd made them.
type Socket struct {
	Mode  os.FileMode // e.g. 0660: connecting needs write permission
	Group string      // a group name or numeric ID
}

// ListenSocket is Listen with the socket file made as s says.
func ListenSocket(ctx context.Context, addr string, s Socket) (net.Listener, error) {
	ls, err := Activated()
	if err != nil {
		return nil, err
	}
	switch len(ls) {
	case 0:
	case 1:
		return ls[0], nil
	default:
		return merge(ls), nil // every socket systemd passes is served
	}
	l, err := Addr(ctx, addr)
	if err != nil {
		return nil, err
	}
	if err := s.apply(l); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen %q: %w", addr, err)
	}
	return l, nil
}

// ParseSocketMode parses a mode such as "0660" or "660".
func ParseSocketMode(s string) (os.FileMode, error) {
	if s == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 || m == 0 {
		return 0, fmt.Errorf("socket mode %q: want octal permission bits such as 0660", s)
	}
	return os.FileMode(m), nil
}

func (s Socket) apply(l net.Listener) error {
	if s.Mode == 0 && s.Group == "" {
		return nil
	}
	ua, ok := l.Addr().(*net.UnixAddr)
	if !ok {
		return fmt.Errorf("a socket mode or group applies to unix sockets only (unix:/path)")
	}
	if s.Group != "" {
		gid, err := lookupGroup(s.Group)
		if err != nil {
			return err
		}
		if err := os.Lchown(ua.Name, -1, gid); err != nil {
			return fmt.Errorf("set the group of %s: %w", ua.Name, err)
		}
	}
	if s.Mode != 0 {
		if err := os.Chmod(ua.Name, s.Mode); err != nil {
			return fmt.Errorf("set the mode of %s: %w", ua.Name, err)
		}
	}
	return nil
}

func lookupGroup(name string) (int, error) {
	if id, err := strconv.Atoi(name); err == nil && id >= 0 {
		return id, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("socket group %q: %w", name, err)
	}
	return strconv.Atoi(g.Gid)
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

// URL returns the base URL clients use to reach l, for log messages:
// https:// if tls.
func URL(l net.Listener, tls ...bool) string {
	if l.Addr().Network() == "unix" {
		return "unix:" + l.Addr().String()
	}
	if len(tls) > 0 && tls[0] {
		return "https://" + l.Addr().String()
	}
	return "http://" + l.Addr().String()
}
