package s3

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7/pkg/s3utils"
	"github.com/silo-cache/silo/internal/blob"
)

// rawGetter sends GETs for objects over plain HTTP/1.1 connections of its
// own, so that a body can be spliced from the S3 server's socket to the
// client's (SendTo) instead of being copied through user space twice. It
// is used only for http:// endpoints with path-style addressing (S3
// servers on the local network); TLS and virtual-host buckets go through
// minio-go.
type rawGetter struct {
	s          *Store
	host       string // host:port, to dial
	hostHeader string // as in the endpoint URL
	signer     *getSigner
	mu         sync.Mutex
	idle       []*rawConn
}

// rawConn is a keep-alive connection to the S3 server.
type rawConn struct {
	nc   *net.TCPConn
	br   *bufio.Reader
	used time.Time
}

const (
	maxIdleRaw  = 64
	rawIdleTime = 20 * time.Second // well below servers' keep-alive timeouts
)

func newRawGetter(s *Store) *rawGetter {
	u, err := url.Parse(s.opts.Endpoint)
	if err != nil || u.Scheme != "http" || s.opts.Lookup == "dns" || u.Host == "" {
		return nil
	}
	host := u.Host
	if u.Port() == "" {
		host += ":80"
	}
	return &rawGetter{s: s, host: host, hostHeader: u.Host, signer: &getSigner{region: s.opts.Region}}
}

func (g *rawGetter) conn(ctx context.Context) (*rawConn, bool, error) {
	g.mu.Lock()
	for len(g.idle) > 0 {
		c := g.idle[len(g.idle)-1]
		g.idle = g.idle[:len(g.idle)-1]
		if time.Since(c.used) < rawIdleTime {
			g.mu.Unlock()
			return c, true, nil
		}
		c.nc.Close()
	}
	g.mu.Unlock()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", g.host)
	if err != nil {
		return nil, false, err
	}
	return &rawConn{nc: nc.(*net.TCPConn), br: bufio.NewReaderSize(nc, 32<<10)}, false, nil
}

func (g *rawGetter) put(c *rawConn) {
	c.used = time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.idle) >= maxIdleRaw {
		c.nc.Close()
		return
	}
	g.idle = append(g.idle, c)
}

// rawBody is the body of a GET, read from its connection.
type rawBody struct {
	g       *rawGetter
	c       *rawConn
	left    int64
	close   func() bool // stops watching the request's context
	noReuse bool        // the server closes the connection after the body
}

// get sends a GET for bytes [from, to] of obj (to < 0: to the end), and
// returns its body, the object's size and ETag. A missing object is
// blob.ErrNotFound; an object whose ETag is no longer etag is an error.
func (g *rawGetter) get(ctx context.Context, key, obj string, from, to int64, etag string) (*rawBody, int64, string, error) {
	s := g.s
	v, err := s.opts.Creds.GetWithContext(nil)
	if err != nil {
		return nil, 0, "", fmt.Errorf("read blob %s: credentials: %w", key, err)
	}
	path := "/" + s.opts.Bucket + "/" + s3utils.EncodePath(obj)
	var req strings.Builder
	req.WriteString("GET " + path + " HTTP/1.1\r\nHost: " + g.hostHeader + "\r\nUser-Agent: silo\r\n")
	req.WriteString(g.signer.headers(g.hostHeader, path, v.AccessKeyID, v.SecretAccessKey, v.SessionToken, time.Now()))
	if from > 0 || to >= 0 {
		req.WriteString("Range: bytes=" + strconv.FormatInt(from, 10) + "-")
		if to >= 0 {
			req.WriteString(strconv.FormatInt(to, 10))
		}
		req.WriteString("\r\n")
	}
	if etag != "" {
		req.WriteString("If-Match: \"" + etag + "\"\r\n")
	}
	req.WriteString("\r\n")
	for attempt := 0; ; attempt++ {
		c, reused, err := g.conn(ctx)
		if err != nil {
			return nil, 0, "", wrapErr("read", key, err)
		}
		stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
		resp, err := roundTrip(c, req.String())
		if err != nil {
			stop()
			c.nc.Close()
			if reused && attempt == 0 && ctx.Err() == nil {
				continue // the server closed the idle connection
			}
			return nil, 0, "", fmt.Errorf("read blob %s: %w", key, err)
		}
		body := &rawBody{g: g, c: c, left: resp.length, close: stop}
		if resp.close {
			body.noReuse = true
		}
		switch resp.status {
		case http.StatusOK, http.StatusPartialContent:
		case http.StatusNotFound:
			body.Close()
			return nil, 0, "", fmt.Errorf("open blob %s: %w", key, blob.ErrNotFound)
		default:
			msg := ""
			if resp.length >= 0 {
				b, _ := io.ReadAll(io.LimitReader(body, 4096))
				msg = strings.TrimSpace(string(b))
			}
			body.Close()
			return nil, 0, "", fmt.Errorf("read blob %s: S3 answered %d: %s", key, resp.status, msg)
		}
		if resp.length < 0 {
			body.Close()
			return nil, 0, "", fmt.Errorf("read blob %s: S3 answered without a Content-Length", key)
		}
		size := resp.length
		if resp.status == http.StatusPartialContent {
			i := strings.LastIndexByte(resp.contentRange, '/')
			if i >= 0 {
				size, err = strconv.ParseInt(resp.contentRange[i+1:], 10, 64)
			}
			if i < 0 || err != nil {
				body.Close()
				return nil, 0, "", fmt.Errorf("read blob %s: S3 answered Content-Range %q", key, resp.contentRange)
			}
		}
		return body, size, strings.Trim(resp.etag, `"`), nil
	}
}

// rawResponse is what get needs of a response's head.
type rawResponse struct {
	status             int
	length             int64 // -1: none given
	contentRange, etag string
	close              bool
}

// roundTrip writes req and reads the response's head, leaving the
// connection's reader at the body. Chunked bodies are refused: S3 sends
// object bodies with a Content-Length.
func roundTrip(c *rawConn, req string) (rawResponse, error) {
	r := rawResponse{length: -1}
	if _, err := io.WriteString(c.nc, req); err != nil {
		return r, err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return r, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !strings.HasPrefix(string(line[:5]), "HTTP/") {
		return r, fmt.Errorf("malformed status line %q", line)
	}
	if r.status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return r, fmt.Errorf("malformed status line %q", line)
	}
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return r, fmt.Errorf("response headers: %w", err)
		}
		h := strings.TrimRight(string(line), "\r\n")
		if h == "" {
			return r, nil
		}
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return r, fmt.Errorf("malformed header line %q", h)
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			if r.length, err = strconv.ParseInt(value, 10, 64); err != nil || r.length < 0 {
				return r, fmt.Errorf("malformed Content-Length %q", value)
			}
		case "content-range":
			r.contentRange = value
		case "etag":
			r.etag = value
		case "connection":
			r.close = strings.EqualFold(value, "close")
		case "transfer-encoding":
			if !strings.EqualFold(value, "identity") {
				return r, fmt.Errorf("unsupported Transfer-Encoding %q", value)
			}
		}
	}
}

// Read reads the body (through the connection's buffer).
func (b *rawBody) Read(p []byte) (int, error) {
	if b.c == nil {
		return 0, io.ErrClosedPipe
	}
	if b.left == 0 {
		b.done()
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.c.br.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if b.left == 0 {
		b.done()
	}
	return n, err
}

// sendTo writes the next n bytes of the body to w: what the connection's
// buffer holds, then the rest straight from the socket, which w's
// ReadFrom (an HTTP response on a TCP connection) splices.
func (b *rawBody) sendTo(w io.Writer, n int64) (int64, error) {
	n = min(n, b.left)
	var sent int64
	if k := min(int64(b.c.br.Buffered()), n); k > 0 {
		p, _ := b.c.br.Peek(int(k))
		m, err := w.Write(p)
		b.c.br.Discard(m)
		sent += int64(m)
		b.left -= int64(m)
		if err != nil {
			return sent, err
		}
	}
	rest := &io.LimitedReader{R: b.c.nc, N: n - sent}
	var m int64
	var err error
	if rf, ok := w.(io.ReaderFrom); ok {
		m, err = rf.ReadFrom(rest)
	} else {
		m, err = io.Copy(w, rest)
	}
	sent += m
	b.left -= m
	if err == nil && sent < n {
		err = io.ErrUnexpectedEOF
	}
	if b.left == 0 && err == nil {
		b.done()
	}
	return sent, err
}

// done returns the connection, whose body has been read whole.
func (b *rawBody) done() {
	if b.c == nil {
		return
	}
	if b.close() && !b.noReuse {
		b.g.put(b.c)
	} else {
		b.c.nc.Close() // the deadline was set: not reusable
	}
	b.c = nil
}

// Close drops the body; a connection with unread body bytes is closed.
func (b *rawBody) Close() error {
	if b.c == nil {
		return nil
	}
	if b.left == 0 {
		b.done()
		return nil
	}
	b.close()
	b.c.nc.Close()
	b.c = nil
	return nil
}
