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
	"github.com/minio/minio-go/v7/pkg/signer"
	"github.com/silo-cache/silo/internal/blob"
)

// rawGetter sends GETs for objects over plain HTTP/1.1 connections of its
// own, so that a body can be spliced from the S3 server's socket to the
// client's (SendTo) instead of being copied through user space twice. It
// is used only for http:// endpoints with path-style addressing (S3
// servers on the local network); TLS and virtual-host buckets go through
// minio-go.
type rawGetter struct {
	s    *Store
	host string // host:port
	mu   sync.Mutex
	idle []*rawConn
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
	return &rawGetter{s: s, host: host}
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
	g     *rawGetter
	c     *rawConn
	left  int64
	close func() bool // stops watching the request's context
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
	u := &url.URL{Scheme: "http", Host: g.host, Path: "/" + s.opts.Bucket + "/" + obj,
		RawPath: "/" + s.opts.Bucket + "/" + s3utils.EncodePath(obj)}
	req := &http.Request{Method: "GET", URL: u, Host: g.host, Header: http.Header{}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	if from > 0 || to >= 0 {
		r := "bytes=" + strconv.FormatInt(from, 10) + "-"
		if to >= 0 {
			r += strconv.FormatInt(to, 10)
		}
		req.Header.Set("Range", r)
	}
	if etag != "" {
		req.Header.Set("If-Match", `"`+etag+`"`)
	}
	req.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	req.Header.Set("User-Agent", "silo")
	signed := signer.SignV4(*req, v.AccessKeyID, v.SecretAccessKey, v.SessionToken, s.opts.Region)
	for attempt := 0; ; attempt++ {
		c, reused, err := g.conn(ctx)
		if err != nil {
			return nil, 0, "", wrapErr("read", key, err)
		}
		stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
		resp, err := roundTrip(c, signed)
		if err != nil {
			stop()
			c.nc.Close()
			if reused && attempt == 0 && ctx.Err() == nil {
				continue // the server closed the idle connection
			}
			return nil, 0, "", fmt.Errorf("read blob %s: %w", key, err)
		}
		body := &rawBody{g: g, c: c, left: resp.ContentLength, close: stop}
		switch resp.StatusCode {
		case http.StatusOK, http.StatusPartialContent:
		case http.StatusNotFound:
			body.Close()
			return nil, 0, "", fmt.Errorf("open blob %s: %w", key, blob.ErrNotFound)
		default:
			msg, _ := io.ReadAll(io.LimitReader(body, 4096))
			body.Close()
			return nil, 0, "", fmt.Errorf("read blob %s: S3 answered %s: %s", key, resp.Status, strings.TrimSpace(string(msg)))
		}
		if resp.ContentLength < 0 {
			body.Close()
			return nil, 0, "", fmt.Errorf("read blob %s: S3 answered without a Content-Length", key)
		}
		size := resp.ContentLength
		if resp.StatusCode == http.StatusPartialContent {
			cr := resp.Header.Get("Content-Range")
			i := strings.LastIndexByte(cr, '/')
			if i < 0 {
				body.Close()
				return nil, 0, "", fmt.Errorf("read blob %s: S3 answered Content-Range %q", key, cr)
			}
			if size, err = strconv.ParseInt(cr[i+1:], 10, 64); err != nil {
				body.Close()
				return nil, 0, "", fmt.Errorf("read blob %s: S3 answered Content-Range %q", key, cr)
			}
		}
		return body, size, strings.Trim(resp.Header.Get("ETag"), `"`), nil
	}
}

func roundTrip(c *rawConn, req *http.Request) (*http.Response, error) {
	if err := req.Write(c.nc); err != nil {
		return nil, err
	}
	return http.ReadResponse(c.br, req)
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
	if b.close() {
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
