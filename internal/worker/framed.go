package worker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FramedReader reads a framed stream (Nix's FramedSource): frames of a
// u64 length and that many raw bytes (no padding), ending with an empty
// frame. Read returns io.EOF after the empty frame.
//
// Invariant: whatever happens to the data, the owner calls Drain before
// reading the next request, so the connection stays in step with the
// client (Nix's FramedSource destructor does the same).
type FramedReader struct {
	d       *Decoder
	left    uint64 // bytes left in the current frame
	eof     bool
	err     error
	Limit   uint64 // if not 0, more payload than this is an error
	payload uint64
}

// ErrFrameLimit is returned by a FramedReader whose stream exceeds Limit.
var ErrFrameLimit = errors.New("framed stream exceeds its size limit")

// NewFramedReader returns a reader of the framed stream that follows on d.
func NewFramedReader(d *Decoder) *FramedReader { return &FramedReader{d: d} }

func (f *FramedReader) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if err := f.next(); err != nil {
		return 0, err
	}
	if uint64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.d.r.Read(p)
	f.left -= uint64(n)
	if err != nil {
		f.err = fmt.Errorf("read frame: %w", eof(err))
		return n, f.err
	}
	return n, nil
}

// next reads frame headers until one with data, the end, or an error.
func (f *FramedReader) next() error {
	if f.err != nil {
		return f.err
	}
	if f.eof {
		return io.EOF
	}
	for f.left == 0 {
		n, err := f.d.Uint64()
		if err != nil {
			f.err = fmt.Errorf("read frame length: %w", err)
			return f.err
		}
		if n == 0 {
			f.eof = true
			return io.EOF
		}
		f.left = n
		f.payload += n
		if f.Limit != 0 && f.payload > f.Limit {
			f.err = fmt.Errorf("%w (%d bytes)", ErrFrameLimit, f.Limit)
			return f.err
		}
	}
	return nil
}

// WriteTo copies the stream's payload to w, frame by frame, without an
// intermediate buffer.
func (f *FramedReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if err := f.next(); err == io.EOF {
			return total, nil
		} else if err != nil {
			return total, err
		}
		n, err := io.CopyN(w, f.d.r, int64(min(f.left, 1<<30))) // a claimed length may not fit an int64
		total += n
		f.left -= uint64(n)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			// Either the writer or the connection failed.
			f.err = fmt.Errorf("copy frame: %w", err)
			return total, f.err
		}
	}
}

// Drain discards the rest of the stream up to its empty frame. It returns
// an error only if the connection failed or the stream is malformed;
// then the connection cannot be used any more.
func (f *FramedReader) Drain() error {
	if f.eof {
		return nil
	}
	if f.err != nil && !errors.Is(f.err, ErrFrameLimit) {
		return f.err
	}
	f.err = nil
	f.Limit = 0
	_, err := f.WriteTo(io.Discard)
	return err
}

// Done reports whether the empty frame has been read.
func (f *FramedReader) Done() bool { return f.eof }

// FramedWriter writes a framed stream (Nix's FramedSink): each Write is
// one frame; Close writes the empty frame. It does not flush.
type FramedWriter struct{ e *Encoder }

// NewFramedWriter returns a writer of a framed stream on e.
func NewFramedWriter(e *Encoder) *FramedWriter { return &FramedWriter{e: e} }

func (f *FramedWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(len(p)))
	f.e.write(b[:])
	f.e.write(p)
	if f.e.err != nil {
		return 0, f.e.err
	}
	return len(p), nil
}

// Close ends the stream with an empty frame.
func (f *FramedWriter) Close() error {
	f.e.Uint64(0)
	return f.e.err
}
