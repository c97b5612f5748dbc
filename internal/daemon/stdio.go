package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// ServeStdio serves one connection on in and out, as `nix-daemon --stdio`
// (what ssh-ng:// runs on the remote side). The client is trusted: access
// to the streams is the caller's business. If the store is another
// daemon, bytes are relayed to it unchanged instead.
func (s *Server) ServeStdio(ctx context.Context, in, out *os.File) error {
	if sock := s.opts.Store.Socket; sock != "" {
		return relay(ctx, sock, in, out)
	}
	s.startAutoGC(ctx)
	s.ServeConn(ctx, &stdio{in: in, out: out}, &Peer{PID: -1, UID: -1, GID: -1, Trusted: true})
	return nil
}

// stdio is a connection on two files.
type stdio struct{ in, out *os.File }

func (s *stdio) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s *stdio) Write(p []byte) (int, error) { return s.out.Write(p) }
func (s *stdio) Close() error                { return errors.Join(s.in.Close(), s.out.Close()) }

// SyscallConn lets the hangup watcher see stdin close.
func (s *stdio) SyscallConn() (syscall.RawConn, error) { return s.in.SyscallConn() }

// relay copies bytes between the standard streams and the daemon at sock
// until stdin ends (success) or the daemon hangs up (an error).
func relay(ctx context.Context, sock string, in io.Reader, out io.Writer) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("cannot connect to daemon at '%s': %w", sock, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	fromDaemon := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, c)
		if err == nil {
			err = errors.New("unexpected EOF from daemon socket")
		}
		fromDaemon <- err
	}()
	toDaemon := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, in)
		toDaemon <- err
	}()
	select {
	case err := <-toDaemon:
		if err != nil {
			return fmt.Errorf("relaying stdin to the daemon socket: %w", err)
		}
		return nil
	case err := <-fromDaemon:
		return fmt.Errorf("relaying the daemon socket to stdout: %w", err)
	}
}
