package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/silo-cache/silo/internal/derivation"
	"github.com/silo-cache/silo/internal/nixconf"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/substitute"
	"github.com/silo-cache/silo/internal/worker"
)

// Limits on what one request may carry. Strings hold store paths,
// signatures, setting values and realisations; lists hold paths.
const (
	maxString = 16 << 20
	maxList   = 1 << 22
)

type phase uint8

const (
	phaseArgs    phase = iota // reading the operation's arguments
	phaseWork                 // between StartWork and StopWork
	phaseReplied              // STDERR_LAST sent; writing the reply
)

// conn is one client connection.
type conn struct {
	srv   *Server
	rw    io.ReadWriteCloser
	dec   *worker.Decoder
	enc   *worker.Encoder
	log   *worker.LogChannel
	minor uint64 // the client's protocol minor
	peer  *Peer

	settings  *nixconf.Settings // this connection's copy
	verbosity atomic.Uint64
	store     *nixstore.Store
	dir       storepath.Dir
	drvHasher *derivation.Hasher  // made on first use
	subst     *substitute.Session // made on first use (op_subst.go)

	phase  phase
	framed *worker.FramedReader // an upload to read to its end
	// inlineData is set while an old-protocol operation reads unframed
	// data: an error then loses the stream position, so it ends the
	// connection.
	inlineData bool
	ops        int
}

func newConn(s *Server, rw io.ReadWriteCloser, peer *Peer) *conn {
	// A large read buffer: uploads (NARs) arrive in frames of 32 KiB.
	c := &conn{srv: s, rw: rw, dec: worker.NewDecoderSize(rw, 256<<10), enc: worker.NewEncoder(rw), peer: peer,
		settings: s.opts.Config.Settings.Clone()}
	c.dec.SetLimits(maxString, maxList)
	c.verbosity.Store(s.opts.Verbosity)
	return c
}

func (c *conn) close() {
	if c.store != nil {
		c.store.Close()
		c.store = nil
	}
	c.srv.logf(worker.LvlDebug, "%d operations", c.ops)
}

// serve runs the handshake and then operations until the client hangs up.
func (c *conn) serve(ctx context.Context) error {
	if err := c.handshake(); err != nil {
		return err
	}
	// As Nix: errors of the authentication hook (here also of opening the
	// store) go to the client through the log channel.
	if err := c.log.StartWork(); err != nil {
		return err
	}
	err := c.openStore(ctx)
	c.log.StopWork(err)
	if ferr := c.enc.Flush(); ferr != nil || err != nil {
		return errors.Join(err, ferr)
	}
	for {
		op, err := c.dec.Uint64()
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil // the client hung up between operations
			}
			return err
		}
		c.ops++
		c.srv.logf(worker.LvlDebug, "received daemon op %d", op)
		start := time.Now()
		err = c.perform(ctx, worker.Op(op))
		c.srv.logf(worker.LvlDebug, "op %s took %v", worker.Op(op), time.Since(start))
		if err != nil {
			return err
		}
	}
}

// perform runs one operation. It returns an error only when the connection
// must end.
func (c *conn) perform(ctx context.Context, op worker.Op) error {
	c.phase, c.framed, c.inlineData = phaseArgs, nil, false
	h, ok := ops[op]
	var err error
	if !ok {
		err = fmt.Errorf("invalid operation %d", op)
	} else {
		err = h(ctx, c)
	}
	if err == nil {
		if c.phase != phaseReplied {
			return fmt.Errorf("internal error: %s ended without StopWork", op)
		}
		return c.enc.Flush()
	}
	switch c.phase {
	case phaseWork:
		// The operation failed; the client may go on. An upload is read
		// to its end after the error is sent, so the client stops early.
		c.log.StopWork(err)
		if ferr := c.enc.Flush(); ferr != nil {
			return ferr
		}
		if c.inlineData {
			return fmt.Errorf("%s: %w (the rest of its data cannot be skipped)", op, err)
		}
		if c.framed != nil {
			if derr := c.framed.Drain(); derr != nil {
				return fmt.Errorf("%s: reading the rest of the upload: %w", op, derr)
			}
		}
		return nil
	case phaseArgs:
		// Bad arguments: Nix reports the error (twice, the second time
		// from processConnection) and ends the connection.
		c.log.StopWork(err)
		c.log.StopWork(err)
		c.enc.Flush()
		return fmt.Errorf("%s: %w", op, err)
	default:
		return fmt.Errorf("%s: writing the reply: %w", op, err)
	}
}

// startWork opens the log channel for the operation's work.
func (c *conn) startWork() error {
	c.phase = phaseWork
	return c.log.StartWork()
}

// stopWork reads any upload to its end and sends STDERR_LAST; the reply
// follows.
func (c *conn) stopWork() error {
	if c.framed != nil {
		if err := c.framed.Drain(); err != nil {
			return fmt.Errorf("reading the rest of the upload: %w", err)
		}
	}
	c.log.StopWork(nil)
	c.phase = phaseReplied
	return nil
}

// framedSource returns the framed upload that follows the arguments.
func (c *conn) framedSource() *worker.FramedReader {
	c.framed = worker.NewFramedReader(c.dec)
	return c.framed
}

// handshake exchanges magics and versions as Nix 2.8's processConnection.
func (c *conn) handshake() error {
	if nc, ok := c.rw.(interface{ SetDeadline(time.Time) error }); ok {
		nc.SetDeadline(time.Now().Add(c.srv.opts.HandshakeTimeout))
		defer nc.SetDeadline(time.Time{})
	}
	magic, err := c.dec.Uint64()
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if magic != worker.Magic1 {
		return errors.New("protocol mismatch")
	}
	c.enc.Uint64(worker.Magic2)
	c.enc.Uint64(worker.ProtocolVersion)
	if err := c.enc.Flush(); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	v, err := c.dec.Uint32()
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if v < 0x10a {
		return errors.New("the Nix client version is too old")
	}
	c.minor = worker.Minor(v)
	c.log = worker.NewLogChannel(c.enc, c.minor)
	if c.minor >= 14 {
		affinity, err := c.dec.Uint32()
		if err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		if affinity != 0 { // obsolete CPU affinity
			if _, err := c.dec.Uint32(); err != nil {
				return fmt.Errorf("handshake: %w", err)
			}
		}
	}
	if c.minor >= 11 {
		if _, err := c.dec.Uint32(); err != nil { // obsolete reserveSpace
			return fmt.Errorf("handshake: %w", err)
		}
	}
	if c.minor >= 33 {
		c.enc.String(nixconf.Version)
	}
	return nil
}

// logAt sends msg to the client if level is within its verbosity.
func (c *conn) logAt(level uint64, msg string) {
	if level <= c.verbosity.Load() {
		c.log.Log(msg)
	}
}

// warn sends a warning as Nix's logWarning shows it.
func (c *conn) warn(msg string) { c.logAt(worker.LvlWarn, "\x1b[35;1mwarning:\x1b[0m "+msg) }

func (c *conn) debug(msg string) { c.logAt(worker.LvlDebug, msg) }

// storeLog receives the store's messages.
func (c *conn) storeLog(level nixstore.Verbosity, msg string) {
	if level == nixstore.LvlWarn {
		c.warn(msg)
		return
	}
	c.logAt(uint64(level), msg)
}

// activity starts an activity and returns its id.
func (c *conn) startActivity(level, typ uint64, text string, fields []worker.Field, parent uint64) uint64 {
	id := c.srv.activity.Add(1)
	c.log.StartActivity(id, level, typ, text, fields, parent)
	return id
}

// parsePath parses a full store path from the client.
func (c *conn) parsePath(s string) (storepath.Path, error) {
	p, err := c.dir.Parse(s)
	if err != nil {
		return storepath.Path{}, fmt.Errorf("path '%s' is not a valid store path: %w", s, err)
	}
	return p, nil
}

func (c *conn) readPath() (storepath.Path, error) {
	s, err := c.dec.String()
	if err != nil {
		return storepath.Path{}, err
	}
	return c.parsePath(s)
}

func (c *conn) readPaths() ([]storepath.Path, error) {
	ss, err := c.dec.Strings()
	if err != nil {
		return nil, err
	}
	ps := make([]storepath.Path, len(ss))
	for i, s := range ss {
		if ps[i], err = c.parsePath(s); err != nil {
			return nil, err
		}
	}
	return ps, nil
}

func (c *conn) writePaths(ps []storepath.Path) {
	c.enc.Uint64(uint64(len(ps)))
	for _, p := range ps {
		c.enc.String(p.String())
	}
}

func sortPaths(ps []storepath.Path) { slices.SortFunc(ps, storepath.Compare) }

// requireTrust refuses an operation to an untrusted client with Nix's message.
func (c *conn) requireTrust(what string) error {
	if !c.peer.Trusted {
		return fmt.Errorf("you are not privileged to %s", what)
	}
	return nil
}
