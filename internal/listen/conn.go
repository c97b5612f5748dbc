package listen

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is a connection accepted by a Guard. It holds every read that waits
// on a client in the middle of a request, and every write, to the Guard's
// Rate (see Budget), on top of whatever deadlines its user sets; it
// follows the HTTP/1.x framing of what it reads (see framer). Its
// ReadFrom keeps sendfile for files, in chunks with a deadline each.
type Conn struct {
	net.Conn
	g     *Guard
	key   string // per-address count key; "" if not counted per address
	close sync.Once

	// Reads and writes each happen on one goroutine at a time (net/http's
	// use); mu guards the deadlines, which any goroutine may set.
	rd, wr   Budget
	fr       framer
	mu       sync.Mutex
	extRead  time.Time // deadlines set by the connection's user
	extWrite time.Time
	opRead   time.Time // the rate deadline of the read in progress, if any
	opWrite  time.Time
	// The deadlines set on the underlying connection: an update that
	// would move one later by less than slack is skipped (it would only
	// cost a timer change).
	curRead, curWrite time.Time
	slack             time.Duration

	tls      *tls.Conn    // the underlying connection, if TLS; nil once its handshake is done
	firstBad atomic.Int64 // framer.firstBad, for handlers; -1: none
	served   atomic.Int64 // requests handed to handlers (see Protect)
	// stopBody makes reads of a request body fail: set by Protect once a
	// handler is done without reading its body, so that net/http does not
	// wait to discard it before closing the connection.
	stopBody atomic.Bool
}

// errBodyUnread is what reads of a body nobody wants return.
var errBodyUnread = errors.New("request body not read by the handler; closing the connection")

func newConn(c net.Conn, g *Guard, key string) *Conn {
	gc := &Conn{Conn: c, g: g, key: key, rd: g.rate.NewBudget(), wr: g.rate.NewBudget(), fr: newFramer(),
		slack: min(g.rate.Idle/16, time.Second)}
	gc.tls, _ = c.(*tls.Conn)
	gc.firstBad.Store(-1)
	return gc
}

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// apply sets deadline d on the underlying connection (read or write),
// unless the one set already is at most slack earlier: stricter by so
// little that a new timer is not worth it. c.mu is held.
func (c *Conn) apply(d time.Time, cur *time.Time, set func(time.Time) error) error {
	if d.Equal(*cur) || !d.IsZero() && !cur.IsZero() && !cur.After(d) && d.Sub(*cur) < c.slack {
		return nil
	}
	*cur = d
	return set(d)
}

// earlier returns the earlier of two deadlines, zero meaning none.
func earlier(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// handshaking reports whether the TLS handshake, which the first read
// makes, is still to be done; it is held to the rate like a request.
func (c *Conn) handshaking() bool {
	if c.tls == nil {
		return false
	}
	if c.tls.ConnectionState().HandshakeComplete {
		c.tls = nil
		return false
	}
	return true
}

func (c *Conn) Read(p []byte) (int, error) {
	inRequest := c.fr.inRequest() || c.handshaking()
	if inRequest && c.stopBody.Load() {
		return 0, errBodyUnread
	}
	var start time.Time
	c.mu.Lock()
	if inRequest {
		start = time.Now()
		c.opRead = c.rd.Deadline(start, 0)
	} else {
		c.opRead = time.Time{}
	}
	err := c.apply(earlier(c.extRead, c.opRead), &c.curRead, c.Conn.SetReadDeadline)
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if inRequest {
		c.rd.Done(time.Since(start), n)
		c.mu.Lock()
		c.opRead = time.Time{}
		c.mu.Unlock()
	}
	if n > 0 {
		c.fr.feed(p[:n])
		if bad := c.fr.firstBad; bad >= 0 {
			c.firstBad.Store(int64(bad))
		}
	}
	return n, err
}

// writeChunk bounds one write, so that a client that stops reading is
// found out within about Idle plus writeChunk at the minimum rate.
const writeChunk = 64 << 10

func (c *Conn) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), writeChunk)]
		n, err := c.write(chunk)
		total += n
		if err != nil {
			return total, err
		}
		p = p[n:]
	}
	return total, nil
}

func (c *Conn) write(p []byte) (int, error) {
	start, err := c.startWrite(len(p))
	if err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	c.endWrite(start, n)
	return n, err
}

func (c *Conn) startWrite(n int) (time.Time, error) {
	start := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opWrite = c.wr.Deadline(start, n)
	return start, c.apply(earlier(c.extWrite, c.opWrite), &c.curWrite, c.Conn.SetWriteDeadline)
}

func (c *Conn) endWrite(start time.Time, n int) {
	c.wr.Done(time.Since(start), n)
	c.mu.Lock()
	c.opWrite = time.Time{}
	c.mu.Unlock()
}

// sendfileChunk is how much of a file one sendfile call may send.
const sendfileChunk = 128 << 10

// ReadFrom sends a file (as net/http's response passes it: an
// *io.LimitedReader of an *os.File, or the file) with the underlying
// connection's ReadFrom, which uses sendfile, in chunks with a deadline
// each. Anything else is copied through Write.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	var src io.Reader
	left := int64(-1)
	switch v := r.(type) {
	case *io.LimitedReader:
		if _, isFile := v.R.(*os.File); isFile {
			src, left = v.R, v.N
		}
	case *os.File:
		src = v
	}
	if !ok || src == nil {
		return io.Copy(writerOnly{c}, r)
	}
	var total int64
	for left != 0 {
		n := int64(sendfileChunk)
		if left > 0 {
			n = min(n, left)
		}
		start, err := c.startWrite(int(n))
		if err != nil {
			return total, err
		}
		k, err := rf.ReadFrom(&io.LimitedReader{R: src, N: n})
		c.endWrite(start, int(k))
		total += k
		if left > 0 {
			left -= k
		}
		if err != nil {
			return total, err
		}
		if k < n {
			break // the file ended
		}
	}
	if lr, isLimited := r.(*io.LimitedReader); isLimited {
		lr.N -= total
	}
	return total, nil
}

// writerOnly hides Conn's ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }

// SetDeadline, SetReadDeadline and SetWriteDeadline set the user's
// deadlines, which hold on top of the rate (a deadline in the past, as
// net/http sets to interrupt a read, applies at once).
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.extRead = t
	return c.apply(earlier(t, c.opRead), &c.curRead, c.Conn.SetReadDeadline)
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.extWrite = t
	return c.apply(earlier(t, c.opWrite), &c.curWrite, c.Conn.SetWriteDeadline)
}

// Close closes the connection and frees its place in the Guard's counts.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.close.Do(func() { c.g.release(c.key) })
	return err
}

// CloseWrite shuts down the writing side, if the underlying connection can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
