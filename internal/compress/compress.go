// Package compress names the NAR compression methods Nix uses in binary
// caches and streams them: it recognises a compressed NAR by its first
// bytes, decompresses xz, zstd, bzip2, gzip and brotli (which has no magic
// number: only by name) with bounded memory, and
// compresses to zstd or xz for storage.
//
// Readers and writers stream; their memory is bounded by the method's
// window (zstd decoders refuse windows over MaxZstdWindow), never by the
// size of the data.
package compress

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// The methods, named as narinfo's Compression field names them.
const (
	None  = "none"
	XZ    = "xz"
	Zstd  = "zstd"
	Bzip2 = "bzip2"
	Gzip  = "gzip"
	// Brotli is Nix's "br"; Sniff cannot recognise it.
	Brotli = "br"
)

// ErrUnsupported is returned (wrapped) for data or a method this package
// cannot decompress.
var ErrUnsupported = errors.New("unsupported compression")

// MaxZstdWindow is the largest zstd window a decoder accepts (zstd
// --ultra -22 uses 128 MiB; Nix's default level uses a few MiB).
const MaxZstdWindow = 128 << 20

// SniffLen is how many leading bytes Sniff needs to decide.
const SniffLen = 16

var narMagic = []byte("\x0d\x00\x00\x00\x00\x00\x00\x00nix-archive-1")

// Sniff returns the method data (at least SniffLen bytes, unless shorter)
// was compressed with, from its magic number: None for a plain NAR.
func Sniff(prefix []byte) (string, error) {
	switch {
	case len(prefix) == 0:
		return "", fmt.Errorf("%w: empty data", ErrUnsupported)
	case bytes.HasPrefix(narMagic, prefix[:min(len(prefix), len(narMagic))]):
		return None, nil
	case bytes.HasPrefix(prefix, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd, nil
	case bytes.HasPrefix(prefix, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return XZ, nil
	case bytes.HasPrefix(prefix, []byte("BZh")):
		return Bzip2, nil
	case bytes.HasPrefix(prefix, []byte{0x1f, 0x8b}):
		return Gzip, nil
	case bytes.HasPrefix(prefix, []byte{0x04, 0x22, 0x4d, 0x18}):
		return "", fmt.Errorf("%w: lz4 (upload with compression=zstd, xz, bzip2 or none)", ErrUnsupported)
	case bytes.HasPrefix(prefix, []byte("LZIP")):
		return "", fmt.Errorf("%w: lzip (upload with compression=zstd, xz, bzip2 or none)", ErrUnsupported)
	}
	return "", fmt.Errorf("%w: data starts with %x, which is neither a NAR nor zstd, xz, bzip2 or gzip (brotli is not supported; upload with compression=zstd)", ErrUnsupported, prefix[:min(len(prefix), 8)])
}

// Ext returns the file name extension Nix gives a NAR compressed with method.
func Ext(method string) string {
	switch method {
	case XZ:
		return ".xz"
	case Zstd:
		return ".zst"
	case Bzip2:
		return ".bz2"
	case Brotli:
		return ".br"
	}
	return ""
}

// ParseStored checks a method silo can store NARs with.
func ParseStored(method string) (string, error) {
	switch method {
	case Zstd, XZ, None:
		return method, nil
	}
	return "", fmt.Errorf("%w: cannot store NARs as %q (choose zstd, xz or none)", ErrUnsupported, method)
}

var zstdDecoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(MaxZstdWindow))
	if err != nil {
		panic(err) // only for invalid options
	}
	return d
}}

type zstdReader struct{ d *zstd.Decoder }

func (z *zstdReader) Read(p []byte) (int, error) {
	if z.d == nil {
		return 0, errors.New("zstd: read after close")
	}
	return z.d.Read(p)
}

func (z *zstdReader) Close() error {
	if z.d != nil {
		z.d.Reset(nil)
		zstdDecoders.Put(z.d)
		z.d = nil
	}
	return nil
}

// NewReader returns a reader of what r decompresses to under method.
// Close releases its resources (it does not close r).
func NewReader(method string, r io.Reader) (io.ReadCloser, error) {
	switch method {
	case None:
		return io.NopCloser(r), nil
	case Zstd:
		d := zstdDecoders.Get().(*zstd.Decoder)
		if err := d.Reset(r); err != nil {
			zstdDecoders.Put(d)
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return &zstdReader{d: d}, nil
	case XZ:
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return io.NopCloser(xr), nil
	case Bzip2:
		return io.NopCloser(bzip2.NewReader(r)), nil
	case Gzip:
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return gr, nil
	case Brotli:
		return io.NopCloser(brotli.NewReader(r)), nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupported, method)
}

var zstdEncoders sync.Map // zstd.EncoderLevel → *sync.Pool

type zstdWriter struct {
	e    *zstd.Encoder
	pool *sync.Pool
}

func (z *zstdWriter) Write(p []byte) (int, error) {
	if z.e == nil {
		return 0, errors.New("zstd: write after close")
	}
	return z.e.Write(p)
}

func (z *zstdWriter) Close() error {
	if z.e == nil {
		return nil
	}
	err := z.e.Close()
	z.e.Reset(io.Discard)
	z.pool.Put(z.e)
	z.e = nil
	return err
}

// NewWriter returns a writer compressing to w with method at level (0:
// the method's default; zstd levels are zstd's 1-22, mapped onto the
// encoder's four speeds). Close flushes; it does not close w.
func NewWriter(method string, w io.Writer, level int) (io.WriteCloser, error) {
	switch method {
	case None:
		return nopWriteCloser{w}, nil
	case Zstd:
		lvl := zstd.SpeedDefault
		if level != 0 {
			lvl = zstd.EncoderLevelFromZstd(level)
		}
		p, _ := zstdEncoders.LoadOrStore(lvl, &sync.Pool{New: func() any {
			e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(lvl), zstd.WithLowerEncoderMem(true))
			if err != nil {
				panic(err) // only for invalid options
			}
			return e
		}})
		pool := p.(*sync.Pool)
		e := pool.Get().(*zstd.Encoder)
		e.Reset(w)
		return &zstdWriter{e: e, pool: pool}, nil
	case XZ:
		cfg := xz.WriterConfig{}
		if level > 0 {
			// xz -N uses a dictionary of 2^(N+19) bytes up to -9 (64 MiB); cap it.
			cfg.DictCap = 1 << min(19+level, 26)
		}
		xw, err := cfg.NewWriter(w)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return xw, nil
	}
	return nil, fmt.Errorf("%w: cannot compress to %q", ErrUnsupported, method)
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
