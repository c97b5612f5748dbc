// Package daemon serves Nix's worker protocol (1.34, as Nix 2.8's
// nix-daemon) on a unix socket or stdin/stdout, over the local store of
// package nixstore.
//
// Invariants:
//   - One goroutine per connection. Each connection has its own settings
//     (a copy of the daemon's, changed only by its SetOptions), its own
//     store handle opened after the handshake (so a store or state
//     directory deleted under a running daemon is re-created, and the
//     store-level settings are those of the daemon's configuration, as
//     Nix's per-connection LocalStore), and its own temp roots, which
//     vanish when it closes.
//   - Every operation is bracketed by the log channel: arguments are read,
//     StartWork, the work, StopWork (STDERR_LAST or STDERR_ERROR), then
//     the reply. An error while reading arguments (before StartWork) ends
//     the connection, as in Nix; an error during the work is sent and the
//     connection goes on.
//   - A framed upload is always read to its terminating frame, also after
//     an error, before the next request is read.
//   - Every byte from a client is hostile: strings and lists are bounded,
//     store paths are parsed before use, NARs are read by the strict
//     reader and verified before a path becomes valid (package nixstore).
//   - The op table (ops.go) is the one place that maps operation numbers
//     to handlers; each handler is a small function in a file grouped by
//     concern.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/silo-cache/silo/internal/nixconf"
	"github.com/silo-cache/silo/internal/nixgc"
	"github.com/silo-cache/silo/internal/substitute"
)

// Options configure a Server.
type Options struct {
	// Config is the daemon's configuration, read once at start (as Nix, a
	// changed nix.conf takes effect on restart).
	Config *nixconf.Config
	// Store is the store the daemon serves (Nix's `store` setting):
	// normally the local store in Config's directories.
	Store *StoreURI
	// Verbosity is the daemon's own log level (Nix's default is info, 3),
	// for its stderr and for clients until they send SetOptions.
	Verbosity uint64
	// Stderr receives the daemon's own messages; nil discards them.
	Stderr io.Writer
	// HandshakeTimeout bounds a new connection's handshake (0: one minute).
	HandshakeTimeout time.Duration
}

// Server is a worker-protocol server. Its methods are safe for concurrent use.
type Server struct {
	opts     Options
	activity atomic.Uint64 // last activity id handed out
	logMu    sync.Mutex
	openMu   sync.Mutex    // serialises opening the store (see conn.openStore)
	autoGC   *nixgc.AutoGC // nil without min-free
	conns    sync.WaitGroup
	// substPool is shared by the connections' substitutions: HTTP
	// connections, the narinfo cache, downloads in flight.
	substPool *substitute.Pool
}

// New returns a Server.
func New(o Options) *Server {
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = time.Minute
	}
	if o.Store == nil {
		o.Store = LocalStoreURI(o.Config.Dirs)
	}
	s := &Server{opts: o, substPool: substitute.NewPool(substitute.PoolOptions{})}
	// Nix's activity ids are (pid << 32) + counter; clients only need them
	// unique and distinct from their own.
	s.activity.Store(uint64(os.Getpid()) << 32)
	return s
}

// logf writes one of the daemon's own messages to its stderr if level is
// within its verbosity.
func (s *Server) logf(level uint64, format string, a ...any) {
	if s.opts.Stderr == nil || level > s.opts.Verbosity {
		return
	}
	s.logMu.Lock()
	defer s.logMu.Unlock()
	fmt.Fprintf(s.opts.Stderr, format+"\n", a...)
}

// Serve accepts connections on l until ctx is done or l fails, serving
// each in its own goroutine. When ctx is done it closes l and every
// connection, and waits (briefly) for their handlers to release the store.
func (s *Server) Serve(ctx context.Context, l *net.UnixListener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.startAutoGC(ctx)
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				s.drain(5 * time.Second)
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			s.logf(0, "error: accepting connection: %v", err)
			time.Sleep(100 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		peer, err := peerOf(c)
		if err == nil {
			st := s.opts.Config.Settings
			err = authorize(peer, st.List("trusted-users"), st.List("allowed-users"), st.String("build-users-group"))
		}
		if err != nil {
			s.logf(0, "\x1b[31;1merror:\x1b[0m error processing connection: %v", err)
			c.Close()
			continue
		}
		trusted := ""
		if peer.Trusted {
			trusted = " (trusted)"
		}
		s.logf(3, "accepted connection from pid %d, user %s%s", peer.PID, peer.User, trusted)
		bc, err := newBlockingConn(c)
		if err != nil {
			s.logf(0, "\x1b[31;1merror:\x1b[0m error processing connection: %v", err)
			continue
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.ServeConn(ctx, bc, peer)
		}()
	}
}

// drain waits up to d for connection handlers to finish.
func (s *Server) drain(d time.Duration) {
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// ServeConn serves one connection until the client hangs up, a protocol
// error occurs or ctx is done; it closes rw. peer says who the client is
// (for `--stdio`: trusted, as Nix).
func (s *Server) ServeConn(ctx context.Context, rw io.ReadWriteCloser, peer *Peer) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopHangup := watchHangup(rw, cancel)
	c := newConn(s, rw, peer)
	defer func() {
		stopHangup()
		c.close()
		rw.Close()
	}()
	// Closing rw unblocks a read or write in progress when ctx ends.
	stopClose := context.AfterFunc(ctx, func() { rw.Close() })
	defer stopClose()
	if err := c.serve(ctx); err != nil && ctx.Err() == nil {
		s.logf(0, "\x1b[31;1merror:\x1b[0m error processing connection: %v", err)
	}
}
