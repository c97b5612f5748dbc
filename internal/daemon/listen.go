package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Listen returns the daemon's listener: the socket systemd passed (socket
// activation: LISTEN_FDS=1 and LISTEN_PID naming this process, fd 3), else
// a new unix socket at path, its parent directories created, a stale
// socket file replaced, mode 0666 (access is controlled by the directory
// and by trusted-users/allowed-users).
func Listen(path string, getenv func(string) string) (*net.UnixListener, error) {
	if fds := getenv("LISTEN_FDS"); fds != "" {
		if getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || fds != "1" {
			return nil, errors.New("unexpected systemd environment variables")
		}
		syscall.CloseOnExec(3)
		f := os.NewFile(3, "systemd socket")
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("systemd socket (fd 3): %w", err)
		}
		ul, ok := l.(*net.UnixListener)
		if !ok {
			l.Close()
			return nil, fmt.Errorf("systemd socket (fd 3) is not a unix socket but %s", l.Addr().Network())
		}
		return ul, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create daemon socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	// Bind a temporary name and rename it into place, so that clients never
	// see a socket whose mode is not yet 0666.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+strconv.Itoa(os.Getpid()))
	if len(tmp) >= 108 { // sun_path; the real name may still fit
		tmp = path
	}
	os.Remove(tmp)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("cannot bind to socket '%s': %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o666); err != nil {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("changing permissions on '%s': %w", path, err)
	}
	if tmp == path {
		return l, nil
	}
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("cannot bind to socket '%s': %w", path, err)
	}
	return l, nil
}
