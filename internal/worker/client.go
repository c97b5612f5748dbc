package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// DefaultSocket is where nix-daemon listens unless NIX_DAEMON_SOCKET_PATH
// or NIX_STATE_DIR say otherwise.
const DefaultSocket = "/nix/var/nix/daemon-socket/socket"

// ErrNotValid is returned by QueryPathInfo for a path that is not valid
// in the daemon's store.
var ErrNotValid = errors.New("path is not valid in the store")

// DaemonError is a failure reported by the daemon on its log channel
// (STDERR_ERROR). Like any error it leaves the Client unusable: Nix 2.8's
// daemon closes the connection after errors raised before an operation
// starts its work (a malformed path, say), after sending the error twice.
type DaemonError struct {
	Op      Op
	Message string
	Status  uint64   // exit status, from daemons before protocol 1.26
	Traces  []string // context lines, innermost last
}

func (e *DaemonError) Error() string {
	msg := e.Message
	for _, t := range e.Traces {
		msg += "; " + t
	}
	return fmt.Sprintf("nix-daemon: %s: %s", e.Op, msg)
}

// Options configures a Client. The zero value is ready to use.
type Options struct {
	// Log receives the daemon's log lines and activity descriptions while
	// an operation runs. Nil discards them.
	Log func(msg string)
}

// Client is a connection to a Nix daemon. It is safe for concurrent use;
// operations are serialized on the single connection.
type Client struct {
	conn    net.Conn
	enc     *Encoder
	dec     *Decoder
	log     func(string)
	version uint64 // negotiated: min(ours, daemon's)
	nixVer  string

	mu     sync.Mutex
	broken error // set once the stream position is lost
}

// Dial connects to the daemon listening on the unix socket and performs the
// handshake.
func Dial(ctx context.Context, socket string, opts *Options) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("connect to nix-daemon at %s: %w (is nix-daemon running? set NIX_DAEMON_SOCKET_PATH for another socket)", socket, err)
	}
	c, err := NewClient(ctx, conn, opts)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("nix-daemon at %s: %w", socket, err)
	}
	return c, nil
}

// NewClient performs the handshake on an open connection and returns a
// Client that owns it.
func NewClient(ctx context.Context, conn net.Conn, opts *Options) (*Client, error) {
	c := &Client{conn: conn, enc: NewEncoder(conn), dec: NewDecoder(conn), log: func(string) {}}
	if opts != nil && opts.Log != nil {
		c.log = opts.Log
	}
	err := c.do(ctx, func() error { return c.handshake() })
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) handshake() error {
	c.enc.Uint64(Magic1)
	if err := c.enc.Flush(); err != nil {
		return fmt.Errorf("handshake: send magic: %w", err)
	}
	magic, err := c.dec.Uint64()
	if err != nil {
		return fmt.Errorf("handshake: read magic: %w", err)
	}
	if magic != Magic2 {
		return fmt.Errorf("handshake: %w: got magic %#x, want %#x (not a nix-daemon socket?)", ErrProtocol, magic, Magic2)
	}
	daemon, err := c.dec.Uint64()
	if err != nil {
		return fmt.Errorf("handshake: read daemon version: %w", err)
	}
	if Major(daemon) != Major(ProtocolVersion) || Minor(daemon) < minMinor {
		return fmt.Errorf("handshake: daemon speaks protocol %d.%d, this client needs 1.%d to 1.x", Major(daemon)>>8, Minor(daemon), minMinor)
	}
	c.version = min(daemon, ProtocolVersion)
	c.enc.Uint64(ProtocolVersion)
	c.enc.Uint64(0) // obsolete CPU affinity: none (minor ≥ 14)
	c.enc.Uint64(0) // obsolete reserveSpace (minor ≥ 11)
	if err := c.enc.Flush(); err != nil {
		return fmt.Errorf("handshake: send version: %w", err)
	}
	if Minor(daemon) >= 33 {
		if c.nixVer, err = c.dec.String(); err != nil {
			return fmt.Errorf("handshake: read Nix version: %w", err)
		}
	}
	if err := c.processStderr(0); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	return nil
}

// Version returns the negotiated protocol version.
func (c *Client) Version() uint64 { return c.version }

// NixVersion returns the daemon's Nix version ("2.8.0"), empty before
// protocol 1.33.
func (c *Client) NixVersion() string { return c.nixVer }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// do runs one exchange with ctx's cancellation and deadline applied to the
// connection. Errors other than daemon errors break the client.
func (c *Client) do(ctx context.Context, f func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return fmt.Errorf("connection unusable after an earlier error: %w", c.broken)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dl, _ := ctx.Deadline()
	c.conn.SetDeadline(dl)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.conn.SetDeadline(time.Unix(1, 0)) // unblock the read or write in progress
		close(fired)
	})
	err := f()
	if !stop() {
		<-fired
		if err != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
	}
	if err != nil && !errors.Is(err, ErrNotValid) {
		c.broken = err
	}
	return err
}

// Broken reports whether an earlier error has made the Client unusable;
// the caller should Close it and dial again.
func (c *Client) Broken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken != nil
}

// processStderr drains the log channel up to STDERR_LAST (nil) or
// STDERR_ERROR (a *DaemonError).
func (c *Client) processStderr(op Op) error {
	if err := c.enc.Flush(); err != nil {
		return fmt.Errorf("send %s: %w", op, err)
	}
	for {
		msg, err := c.dec.Uint64()
		if err != nil {
			return fmt.Errorf("read log channel: %w", err)
		}
		switch msg {
		case StderrLast:
			return nil
		case StderrError:
			return c.readError(op)
		case StderrNext:
			s, err := c.dec.String()
			if err != nil {
				return fmt.Errorf("read log line: %w", err)
			}
			c.log(strings.TrimRight(s, "\n"))
		case StderrStartActivity:
			if _, err := c.dec.Uint64(); err != nil { // activity id
				return err
			}
			if _, err := c.dec.Uint64(); err != nil { // verbosity
				return err
			}
			if _, err := c.dec.Uint64(); err != nil { // activity type
				return err
			}
			s, err := c.dec.String()
			if err != nil {
				return err
			}
			if err := c.skipFields(); err != nil {
				return err
			}
			if _, err := c.dec.Uint64(); err != nil { // parent
				return err
			}
			if s != "" {
				c.log(s)
			}
		case StderrStopActivity:
			if _, err := c.dec.Uint64(); err != nil {
				return err
			}
		case StderrResult:
			if _, err := c.dec.Uint64(); err != nil { // activity id
				return err
			}
			if _, err := c.dec.Uint64(); err != nil { // result type
				return err
			}
			if err := c.skipFields(); err != nil {
				return err
			}
		case StderrRead, StderrWrite:
			return fmt.Errorf("%w: daemon asked to stream data (%#x) during %s, which sends none", ErrProtocol, msg, op)
		default:
			return fmt.Errorf("%w: unknown log message type %#x during %s", ErrProtocol, msg, op)
		}
	}
}

func (c *Client) skipFields() error {
	n, err := c.dec.Uint64()
	if err != nil {
		return err
	}
	if n > MaxList {
		return fmt.Errorf("%w: %d log fields", ErrProtocol, n)
	}
	for range n {
		typ, err := c.dec.Uint64()
		if err != nil {
			return err
		}
		switch typ {
		case fieldInt:
			_, err = c.dec.Uint64()
		case fieldString:
			_, err = c.dec.String()
		default:
			err = fmt.Errorf("%w: log field type %d", ErrProtocol, typ)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) readError(op Op) error {
	e := &DaemonError{Op: op}
	if Minor(c.version) < 26 {
		var err error
		if e.Message, err = c.dec.String(); err != nil {
			return err
		}
		e.Message = stripANSI(e.Message)
		if e.Status, err = c.dec.Uint64(); err != nil {
			return err
		}
		return e
	}
	typ, err := c.dec.String()
	if err != nil {
		return err
	}
	if typ != "Error" {
		return fmt.Errorf("%w: error record of type %q", ErrProtocol, typ)
	}
	if _, err := c.dec.Uint64(); err != nil { // verbosity level
		return err
	}
	if _, err := c.dec.String(); err != nil { // name, unused
		return err
	}
	if e.Message, err = c.dec.String(); err != nil {
		return err
	}
	e.Message = stripANSI(e.Message)
	if err := c.skipPos(); err != nil {
		return err
	}
	n, err := c.dec.Uint64()
	if err != nil {
		return err
	}
	if n > MaxList {
		return fmt.Errorf("%w: %d error traces", ErrProtocol, n)
	}
	for range n {
		if err := c.skipPos(); err != nil {
			return err
		}
		t, err := c.dec.String()
		if err != nil {
			return err
		}
		e.Traces = append(e.Traces, stripANSI(t))
	}
	return e
}

// skipPos reads an error position, which Nix 2.8 always sends as absent.
func (c *Client) skipPos() error {
	havePos, err := c.dec.Uint64()
	if err != nil {
		return err
	}
	if havePos != 0 {
		return fmt.Errorf("%w: error with a position (unsupported)", ErrProtocol)
	}
	return nil
}

// stripANSI removes the terminal colour sequences (ESC [ ... letter) Nix
// puts around paths in its messages.
func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b[") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
