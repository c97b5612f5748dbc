package s3

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/minio/minio-go/v7"
)

// reader reads an object: it streams the body of one GET while reads are
// sequential, and after a Seek elsewhere sends a ranged GET from there.
type reader struct {
	s        *Store
	ctx      context.Context
	key, obj string
	size     int64
	etag     string
	pos      int64         // where the next Read reads
	body     io.ReadCloser // a GET's body, at bodyPos; nil if none
	bodyPos  int64
	closed   bool
}

func (r *reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errors.New("read blob: reader closed")
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if r.body != nil && r.bodyPos != r.pos {
		r.body.Close()
		r.body = nil
	}
	if r.body == nil {
		if err := r.open(-1); err != nil {
			return 0, err
		}
	}
	if max := r.size - r.pos; int64(len(p)) > max {
		p = p[:max]
	}
	n, err := r.body.Read(p)
	r.pos += int64(n)
	r.bodyPos += int64(n)
	if err == io.EOF {
		r.body.Close()
		r.body = nil
		if r.pos < r.size {
			return n, fmt.Errorf("read blob %s: %w after %d of %d bytes", r.key, io.ErrUnexpectedEOF, r.pos, r.size)
		}
		err = nil
	}
	if err != nil {
		err = wrapErr("read", r.key, err)
	}
	return n, err
}

// open sends a GET from the current position to end (or to the end).
func (r *reader) open(end int64) error {
	if g := r.s.raw; g != nil {
		body, _, _, err := g.get(r.ctx, r.key, r.obj, r.pos, end, r.etag)
		if err != nil {
			return err
		}
		r.body, r.bodyPos = body, r.pos
		return nil
	}
	opts := minio.GetObjectOptions{}
	if r.pos > 0 || end >= 0 {
		if err := opts.SetRange(r.pos, max(end, 0)); err != nil {
			return err
		}
	}
	// The object must be the one whose size was reported.
	if err := opts.SetMatchETag(r.etag); err != nil {
		return err
	}
	body, _, _, err := r.s.core.GetObject(r.ctx, r.s.opts.Bucket, r.obj, opts)
	if err != nil {
		return wrapErr("read", r.key, err)
	}
	r.body, r.bodyPos = body, r.pos
	return nil
}

// SendTo writes the next n bytes to w. With a plain-HTTP S3 server they
// go from its socket to w's without a copy through user space, when w is
// an HTTP response on a TCP connection (the cache server's NAR downloads).
func (r *reader) SendTo(w io.Writer, n int64) (int64, error) {
	n = min(n, r.size-r.pos)
	raw, ok := r.body.(*rawBody)
	if r.s.raw == nil || n <= 0 {
		return io.CopyN(w, r, n)
	}
	if !ok || r.bodyPos != r.pos {
		if r.body != nil {
			r.body.Close()
			r.body = nil
		}
		// Exactly the bytes wanted, so that the connection is reusable after.
		if err := r.open(r.pos + n - 1); err != nil {
			return 0, err
		}
		raw = r.body.(*rawBody)
	}
	m, err := raw.sendTo(w, n)
	r.pos += m
	r.bodyPos += m
	if raw.c == nil {
		r.body = nil
	}
	if err != nil {
		err = wrapErr("send", r.key, err)
	}
	return m, err
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.pos + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, fmt.Errorf("seek blob %s: bad whence %d", r.key, whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("seek blob %s: negative position %d", r.key, abs)
	}
	r.pos = abs
	return abs, nil
}

func (r *reader) Close() error {
	r.closed = true
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	return nil
}
