package push

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/signature"
)

// memLimit is how much compressed NAR an upload keeps in memory before it
// spills to an (unlinked) temporary file.
const memLimit = 8 << 20

// dedupCheckSize is the compressed size from which an upload first asks
// whether the cache already has the file (a HEAD costs less than the PUT).
const dedupCheckSize = 1 << 20

// Uploader uploads single store paths: NAR first, narinfo second. It is
// safe for concurrent use.
type Uploader struct {
	Target Target
	// SigningKey, if set, signs every narinfo (replacing an existing
	// signature by a key of the same name).
	SigningKey *signature.SecretKey
	// Compression is "zstd" (the default when empty) or "none".
	Compression string
	// CompressionLevel is the zstd level (1-22); 0 means DefaultLevel.
	CompressionLevel int
	// TempDir holds NARs too big for memory while they upload; empty
	// means os.TempDir(). Files there are unlinked from the start.
	TempDir string

	encoders sync.Pool
}

// Upload streams the NAR of info.Path, compressed, to the cache under
// nar/<sha256 of the file>.nar.zst (a silo server: nar/<NarHash>-nh.nar.zst),
// checks that it hashes to info.NarHash,
// then uploads the narinfo. narBytes, if not nil, is called as the NAR
// streams. A failure or cancellation leaves no narinfo behind, so the path
// never appears in the cache half-uploaded.
func (u *Uploader) Upload(ctx context.Context, info *localstore.PathInfo, narBytes func(int64)) (*narinfo.NarInfo, error) {
	ni, err := u.UploadNAR(ctx, info, narBytes)
	if err != nil {
		return nil, err
	}
	if err := u.PutNarInfo(ctx, ni); err != nil {
		return nil, err
	}
	return ni, nil
}

// UploadNAR uploads the NAR of info.Path and returns the narinfo that
// describes it, signed if the Uploader has a key, not yet uploaded.
func (u *Uploader) UploadNAR(ctx context.Context, info *localstore.PathInfo, narBytes func(int64)) (*narinfo.NarInfo, error) {
	if st, ok := u.Target.(narStreamer); ok && st.StreamsNARs() {
		return u.streamNAR(ctx, info, narBytes)
	}
	buf := &spill{dir: u.TempDir}
	defer buf.Close()
	narHash := hash.NewWriter(hash.SHA256)
	fileHash := hash.NewWriter(hash.SHA256)
	sink := io.MultiWriter(fileHash, buf)

	compression, ext := "zstd", ".nar.zst"
	var enc *zstd.Encoder
	var w io.Writer = sink
	switch u.Compression {
	case "", "zstd":
		enc = u.encoder()
		enc.Reset(sink)
		defer u.encoders.Put(enc)
		w = enc
	case "none":
		compression, ext = "none", ".nar"
	default:
		return nil, fmt.Errorf("compression %q is not supported (want zstd or none)", u.Compression)
	}
	var counted io.Writer = narHash
	if narBytes != nil {
		counted = countWriter{narHash, narBytes}
	}
	if err := nar.Dump(ctx, io.MultiWriter(counted, w), info.Path.String()); err != nil {
		return nil, fmt.Errorf("read %s from the store: %w", info.Path, err)
	}
	if enc != nil {
		if err := enc.Close(); err != nil {
			return nil, fmt.Errorf("compress %s: %w", info.Path, err)
		}
	}
	if err := buf.err; err != nil {
		return nil, fmt.Errorf("buffer NAR of %s: %w (set --tmp-dir to a directory with space)", info.Path, err)
	}
	if got := narHash.Sum(); got != info.NarHash || narHash.Size() != info.NarSize {
		return nil, fmt.Errorf("%s has NAR hash %s and size %d in the store, but the Nix database records %s and %d: the path was modified (repair it with nix-store --verify --check-contents --repair)",
			info.Path, got, narHash.Size(), info.NarHash, info.NarSize)
	}

	ni := u.narInfo(info, "nar/"+fileHash.Sum().Nix32()+ext, compression)
	ni.FileHash, ni.FileSize = fileHash.Sum(), fileHash.Size()

	if ni.FileSize >= dedupCheckSize {
		if have, err := u.Target.HasFile(ctx, ni.URL); err == nil && have {
			return ni, nil
		}
	}
	err := u.Target.PutFile(ctx, ni.URL, typeNAR, int64(ni.FileSize), buf.Open)
	if err != nil {
		return nil, fmt.Errorf("upload NAR of %s: %w", info.Path, err)
	}
	return ni, nil
}

// narInfo describes info's NAR uploaded at url, signed if the Uploader
// has a key (the signature does not cover FileHash or FileSize).
func (u *Uploader) narInfo(info *localstore.PathInfo, url, compression string) *narinfo.NarInfo {
	ni := &narinfo.NarInfo{
		StorePath:   info.Path,
		URL:         url,
		Compression: compression,
		NarHash:     info.NarHash,
		NarSize:     info.NarSize,
		References:  slices.Clone(info.References),
		Deriver:     info.Deriver,
		Sigs:        slices.Clone(info.Sigs),
		CA:          info.CA,
	}
	if u.SigningKey != nil {
		ni.Sign(*u.SigningKey)
	}
	return ni
}

// compression returns the narinfo Compression and file extension.
func (u *Uploader) compression() (method, ext string, err error) {
	switch u.Compression {
	case "", "zstd":
		return "zstd", ".nar.zst", nil
	case "none":
		return "none", ".nar", nil
	}
	return "", "", fmt.Errorf("compression %q is not supported (want zstd or none)", u.Compression)
}

// streamNAR uploads info's NAR to a target that verifies NARs itself,
// chunked, as it is dumped and compressed: no temporary file, no hash of
// the compressed file. The name is known before compressing:
// nar/<NarHash>-nh.nar.zst (not Nix's nar/<FileHash>.nar.zst, which the
// server would check against the file), and the narinfo carries no
// FileHash; the server fills it in. The NAR is not hashed here: the
// server hashes it and refuses a narinfo whose NarHash or NarSize differs
// from the upload it names, so a store path modified on disk fails at its
// narinfo. A wrong size is caught here too, before the compressed frame
// ends.
func (u *Uploader) streamNAR(ctx context.Context, info *localstore.PathInfo, narBytes func(int64)) (*narinfo.NarInfo, error) {
	compression, ext, err := u.compression()
	if err != nil {
		return nil, err
	}
	url := "nar/" + info.NarHash.Nix32() + "-nh" + ext
	var last *narBody
	open := func() (io.Reader, error) {
		if last != nil {
			if err := last.finish(); err != nil {
				// A failure reading the store is not worth retrying.
				return nil, err
			}
		}
		last = &narBody{u: u, ctx: ctx, info: info, compression: compression, narBytes: narBytes}
		return last, nil
	}
	err = u.Target.PutFile(ctx, url, typeNAR, -1, open)
	var serr error
	if last != nil {
		serr = last.finish()
	}
	if serr != nil {
		return nil, serr
	}
	if err != nil {
		return nil, fmt.Errorf("upload NAR of %s: %w", info.Path, err)
	}
	ni := u.narInfo(info, url, compression)
	ni.FileSize = uint64(last.fileSize)
	return ni, nil
}

// narStream is one attempt at streaming a NAR: a goroutine dumps,
// hashes and compresses it into a pipe the HTTP request reads.
type narStream struct {
	pr       *io.PipeReader
	done     chan struct{}
	err      error // reading or checking the NAR; set before done closes
	fileSize int64
}

var errStreamStopped = fmt.Errorf("NAR stream stopped")

// stop ends the attempt (if the request has not read it all) and returns
// its error reading or checking the store path, if any.
func (s *narStream) stop() error {
	s.pr.CloseWithError(errStreamStopped)
	<-s.done
	return s.err
}

func (u *Uploader) startStream(ctx context.Context, info *localstore.PathInfo, compression string, narBytes func(int64)) *narStream {
	pr, pw := io.Pipe()
	s := &narStream{pr: pr, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		counted := &countingWriter{w: pw}
		err := u.encodeNAR(ctx, info, compression, counted, narBytes)
		switch {
		case counted.err != nil:
			// The request ended; its error is the one to report.
			pw.CloseWithError(err)
		case err != nil:
			// The frame is not closed: the server sees a truncated upload.
			s.err = err
			pw.CloseWithError(err)
		default:
			s.fileSize = counted.n
			pw.Close()
		}
	}()
	return s
}

// encodeNAR dumps info's NAR, compressed, into dst, checking its size
// (the server hashes it and refuses a narinfo whose NarHash differs, so
// the hash is not computed here). A NAR of the wrong size returns an error
// before the compressed frame ends.
func (u *Uploader) encodeNAR(ctx context.Context, info *localstore.PathInfo, compression string, dst io.Writer, narBytes func(int64)) error {
	w := dst
	var enc *zstd.Encoder
	if compression == "zstd" {
		enc = u.encoder()
		enc.Reset(dst)
		defer u.encoders.Put(enc)
		w = enc
	}
	sized := &sizeWriter{w: w, progress: narBytes}
	if err := nar.Dump(ctx, sized, info.Path.String()); err != nil {
		return fmt.Errorf("read %s from the store: %w", info.Path, err)
	}
	if sized.n != info.NarSize {
		return fmt.Errorf("%s has a NAR of %d bytes in the store, but the Nix database records %d: the path was modified (repair it with nix-store --verify --check-contents --repair)",
			info.Path, sized.n, info.NarSize)
	}
	if enc != nil {
		if err := enc.Close(); err != nil {
			return fmt.Errorf("compress %s: %w", info.Path, err)
		}
	}
	return nil
}

// narBody is one attempt's request body. The HTTP transport copies a body
// with WriteTo when it has one: the NAR is then dumped and compressed
// straight into the connection by the transport's goroutine, with no pipe
// and no handoffs. Read, for any other reader, streams through a pipe
// from a goroutine (narStream).
type narBody struct {
	u           *Uploader
	ctx         context.Context
	info        *localstore.PathInfo
	compression string
	narBytes    func(int64)

	wrote    bool  // WriteTo ran
	err      error // reading or checking the NAR (not writing it)
	fileSize int64
	s        *narStream // started by Read
}

func (b *narBody) WriteTo(w io.Writer) (int64, error) {
	if b.wrote || b.s != nil {
		return 0, fmt.Errorf("NAR of %s: request body read twice", b.info.Path)
	}
	b.wrote = true
	counted := &countingWriter{w: w}
	err := b.u.encodeNAR(b.ctx, b.info, b.compression, counted, b.narBytes)
	if err != nil && counted.err == nil {
		b.err = err
	}
	if err == nil {
		b.fileSize = counted.n
	}
	return counted.n, err
}

func (b *narBody) Read(p []byte) (int, error) {
	if b.s == nil {
		if b.wrote {
			return 0, fmt.Errorf("NAR of %s: request body read twice", b.info.Path)
		}
		b.s = b.u.startStream(b.ctx, b.info, b.compression, b.narBytes)
	}
	return b.s.pr.Read(p)
}

// finish ends the attempt and returns its error reading or checking the
// NAR, if any.
func (b *narBody) finish() error {
	if b.s != nil {
		err := b.s.stop()
		b.fileSize = b.s.fileSize
		return err
	}
	return b.err
}

// sizeWriter counts the bytes written through it, telling progress.
type sizeWriter struct {
	w        io.Writer
	n        uint64
	progress func(int64)
}

func (s *sizeWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.n += uint64(n)
	if s.progress != nil {
		s.progress(int64(n))
	}
	return n, err
}

// countingWriter counts bytes written and remembers the first error.
type countingWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// PutNarInfo uploads ni as <hashpart>.narinfo.
func (u *Uploader) PutNarInfo(ctx context.Context, ni *narinfo.NarInfo) error {
	text := ni.String()
	err := u.Target.PutFile(ctx, ni.StorePath.HashPart()+".narinfo", typeNarInfo, int64(len(text)),
		func() (io.Reader, error) { return strings.NewReader(text), nil })
	if err != nil {
		return fmt.Errorf("upload narinfo of %s: %w", ni.StorePath, err)
	}
	return nil
}

// DefaultLevel is the zstd level push compresses with unless told
// otherwise: level 1, about 1.5x faster than Nix's default level 3 for
// files a few percent larger. Uploading is where a user waits, and a silo
// server recompresses what it stores at its own level anyway.
const DefaultLevel = 1

// encoder returns a pooled zstd encoder, single-threaded (parallelism
// comes from uploading several paths at once) and without the optional
// frame checksum, as Nix writes zstd.
func (u *Uploader) encoder() *zstd.Encoder {
	if e, ok := u.encoders.Get().(*zstd.Encoder); ok {
		return e
	}
	level := u.CompressionLevel
	if level == 0 {
		level = DefaultLevel
	}
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
	if err != nil {
		panic("push: zstd encoder: " + err.Error()) // only for invalid options
	}
	return e
}

type countWriter struct {
	w io.Writer
	n func(int64)
}

func (c countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n(int64(n))
	return n, err
}

var memPool = sync.Pool{New: func() any { b := make([]byte, 0, 256<<10); return &b }}

// spill holds a compressed NAR in memory up to memLimit, then in a
// temporary file unlinked as soon as it is created, so nothing is left
// behind by a crash.
type spill struct {
	dir  string
	mem  *[]byte
	f    *os.File
	size int64
	err  error
}

func (s *spill) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.f == nil && s.size+int64(len(p)) <= memLimit {
		if s.mem == nil {
			s.mem = memPool.Get().(*[]byte)
		}
		*s.mem = append(*s.mem, p...)
		s.size += int64(len(p))
		return len(p), nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "silo-push-*.nar")
		if err != nil {
			s.err = err
			return 0, err
		}
		os.Remove(f.Name())
		s.f = f
		if s.mem != nil {
			if _, err := f.Write(*s.mem); err != nil {
				s.err = err
				return 0, err
			}
			s.release()
		}
	}
	n, err := s.f.Write(p)
	s.size += int64(n)
	if err != nil {
		s.err = err
	}
	return n, err
}

// Open returns a reader of everything written, from the start.
func (s *spill) Open() (io.Reader, error) {
	if s.f != nil {
		return io.NewSectionReader(s.f, 0, s.size), nil
	}
	if s.mem == nil {
		return bytes.NewReader(nil), nil
	}
	return bytes.NewReader(*s.mem), nil
}

func (s *spill) release() {
	if s.mem != nil {
		*s.mem = (*s.mem)[:0]
		if cap(*s.mem) <= memLimit*2 {
			memPool.Put(s.mem)
		}
		s.mem = nil
	}
}

func (s *spill) Close() error {
	s.release()
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}
