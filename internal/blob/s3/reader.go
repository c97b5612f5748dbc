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
		opts := minio.GetObjectOptions{}
		if r.pos > 0 {
			if err := opts.SetRange(r.pos, 0); err != nil {
				return 0, err
			}
		}
		// The object must be the one whose size was reported.
		if err := opts.SetMatchETag(r.etag); err != nil {
			return 0, err
		}
		body, _, _, err := r.s.core.GetObject(r.ctx, r.s.opts.Bucket, r.obj, opts)
		if err != nil {
			return 0, wrapErr("read", r.key, err)
		}
		r.body, r.bodyPos = body, r.pos
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
