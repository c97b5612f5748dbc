package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"time"

	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/nar"
)

var noModTime time.Time

// nixNARName matches the names Nix gives uploaded NAR files,
// "nar/<nix32 sha256 of the file>.nar[.ext]".
var nixNARName = regexp.MustCompile(`^nar/([0-9a-df-np-sv-z]{52})\.nar(\.[a-z0-9]+)?$`)

// narKey names a stored NAR file by its own hash, so equal keys mean
// equal bytes.
func narKey(fileHash hash.Hash, method string) string {
	return "nar/" + fileHash.Nix32() + ".nar" + compress.Ext(method)
}

func listingKey(narHash hash.Hash) string { return "ls/" + narHash.Nix32() + ".ls" }

// putNAR receives a NAR file, verifies it while it streams, and stores it
// as a staged upload of this cache under the URL the client chose.
func (s *Server) putNAR(w http.ResponseWriter, r *http.Request, c meta.Cache, rest string) error {
	if err := blob.ValidKey(rest); err != nil {
		return errorf(http.StatusBadRequest, "NAR file name %q: %v", rest, err)
	}
	if max := s.opts.MaxNARSize; max > 0 && r.ContentLength > max {
		s.metrics.reject("too_large")
		return errorf(http.StatusRequestEntityTooLarge, "NAR file %s is %d bytes; this server accepts at most %d (--max-nar-size)", rest, r.ContentLength, max)
	}
	select {
	case s.uploads <- struct{}{}:
		defer func() { <-s.uploads }()
	case <-r.Context().Done():
		return internal("wait for an upload slot", r.Context().Err())
	}
	body := &idleReader{r: r.Body, rc: http.NewResponseController(w), idle: s.opts.UploadIdleTimeout}
	res, err := s.receiveNAR(r.Context(), body, s.opts.MaxNARSize)
	if err != nil {
		return err
	}
	defer res.abort()
	if m := nixNARName.FindStringSubmatch(rest); m != nil && m[1] != res.fileHash.Nix32() {
		s.metrics.reject("file_hash")
		return errorf(http.StatusBadRequest, "NAR file %s: its name says sha256:%s but the body received hashes to %s (corrupted in transit?)", rest, m[1], res.fileHash)
	}
	s.metrics.uploadBytes.WithLabelValues("file").Add(float64(res.fileSize))
	s.metrics.uploadBytes.WithLabelValues("nar").Add(float64(res.narSize))

	stored, err := s.storeNAR(r.Context(), c, rest, res)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "verified NAR %s (%d bytes); stored as %s\n", res.narHash, res.narSize, stored.BlobKey)
	return nil
}

// idleReader gives each read of a request body idle seconds, so that a
// client that stops sending does not hold an upload slot forever.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	ir.rc.SetReadDeadline(time.Now().Add(ir.idle))
	return ir.r.Read(p)
}

// received is a NAR upload that streamed through verification into
// uncommitted blobs.
type received struct {
	fileHash, narHash, storedHash hash.Hash
	fileSize, narSize, storedSize uint64
	nar, listing                  blob.Writer
}

func (res *received) abort() {
	res.nar.Abort()
	res.listing.Abort()
}

// receiveNAR reads a possibly compressed NAR from body: it hashes the
// bytes as sent, decompresses them, parses the NAR strictly while hashing
// it and writing its listing, and recompresses it into a new blob.
func (s *Server) receiveNAR(ctx context.Context, body io.Reader, max int64) (_ *received, err error) {
	fileHash := hash.NewWriter(hash.SHA256)
	var limited io.Reader = body
	if max > 0 {
		limited = io.LimitReader(body, max+1)
	}
	br := bufio.NewReaderSize(io.TeeReader(limited, fileHash), 64<<10)
	prefix, _ := br.Peek(compress.SniffLen)
	method, err := compress.Sniff(prefix)
	if err != nil {
		s.metrics.reject("compression")
		if len(prefix) == 0 {
			return nil, errorf(http.StatusBadRequest, "empty NAR upload")
		}
		return nil, errorf(http.StatusUnsupportedMediaType, "NAR upload: %v", err)
	}
	res := &received{}
	if res.nar, err = s.blobs.Create(ctx); err != nil {
		return nil, internal("store NAR", err)
	}
	if res.listing, err = s.blobs.Create(ctx); err != nil {
		res.nar.Abort()
		return nil, internal("store NAR", err)
	}
	defer func() {
		if err != nil {
			res.abort()
		}
	}()
	storedHash := hash.NewWriter(hash.SHA256)
	storedSink := io.MultiWriter(res.nar, storedHash)

	// An upload already in the stored form is kept byte for byte once it
	// verifies: the decompressor reads it through a tee into the blob, and
	// recompressing is skipped. Only an explicit --compression-level asks
	// for recompression.
	var decIn io.Reader = br
	var raw *sinkWriter
	if method == s.opts.Compression && s.opts.CompressionLevel == 0 {
		raw = &sinkWriter{w: storedSink}
		decIn = io.TeeReader(br, raw)
	}
	dec, err := compress.NewReader(method, decIn)
	if err != nil {
		s.metrics.reject("decompress")
		return nil, errorf(http.StatusBadRequest, "NAR upload (%s): %v", method, err)
	}
	defer dec.Close()

	var enc io.WriteCloser = nopCloser{io.Discard}
	if raw == nil {
		if enc, err = compress.NewWriter(s.opts.Compression, storedSink, s.opts.CompressionLevel); err != nil {
			return nil, internal("store NAR", err)
		}
	}
	narHash := hash.NewWriter(hash.SHA256)
	var decoded io.Reader = dec
	if max > 0 {
		// The limit holds for what the body expands to as well, so a small
		// compressed bomb costs no more than an honest upload of max bytes.
		decoded = &capReader{r: dec, left: max}
	}
	src := &errReader{r: decoded}
	tee := io.TeeReader(src, io.MultiWriter(narHash, &encWriter{enc}))
	err = nar.WriteListing(&encWriter{res.listing}, tee)
	if cerr := enc.Close(); err == nil && cerr != nil {
		err = &storeError{cerr}
	}
	if err == nil {
		// The compressed stream must end where the NAR ends.
		var n int64
		n, err = io.Copy(io.Discard, br)
		if err == nil && n > 0 {
			err = fmt.Errorf("%d bytes follow the end of the %s stream", n, method)
		}
	}
	if raw != nil && raw.err != nil {
		// The blob failed under the decompressor, whatever that reported.
		err = &storeError{raw.err}
	}
	if err != nil {
		if src.err != nil && method != compress.None && !errors.As(err, new(*storeError)) {
			err = fmt.Errorf("%w (%s stream: %v)", err, method, src.err)
		}
		return nil, s.uploadError(method, max, fileHash.Size(), err)
	}
	res.fileHash, res.fileSize = fileHash.Sum(), fileHash.Size()
	res.narHash, res.narSize = narHash.Sum(), narHash.Size()
	res.storedHash, res.storedSize = storedHash.Sum(), storedHash.Size()
	return res, nil
}

// errReader remembers the first error of the decompressor, so that a
// corrupt or truncated stream is reported as such and not only as the
// broken NAR it yields.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// errNARTooLarge is returned by capReader when the decompressed NAR
// exceeds the size limit.
var errNARTooLarge = errors.New("decompressed NAR exceeds the size limit")

// capReader fails with errNARTooLarge once more than left bytes are read.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, errNARTooLarge
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return n, errNARTooLarge
	}
	return n, err
}

// sinkWriter remembers the first error of the blob it writes to, which a
// decompressor reading through a tee would otherwise report as its own.
type sinkWriter struct {
	w   io.Writer
	err error
}

func (s *sinkWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil && s.err == nil {
		s.err = err
	}
	return n, err
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// encWriter marks errors of the storage side, so they are not blamed on the client.
type encWriter struct{ w io.Writer }

func (e *encWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		err = &storeError{err}
	}
	return n, err
}

type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

func (s *Server) uploadError(method string, max int64, got uint64, err error) error {
	var se *storeError
	switch {
	case errors.As(err, &se):
		return internal("store NAR", se.err)
	case max > 0 && got > uint64(max):
		s.metrics.reject("too_large")
		return errorf(http.StatusRequestEntityTooLarge, "NAR upload is larger than %d bytes (--max-nar-size)", max)
	case errors.Is(err, errNARTooLarge):
		s.metrics.reject("too_large")
		return errorf(http.StatusRequestEntityTooLarge, "NAR upload expands to more than %d bytes (--max-nar-size bounds the NAR as well as the file sent)", max)
	case errors.Is(err, nar.ErrInvalid):
		s.metrics.reject("invalid_nar")
		return errorf(http.StatusBadRequest, "NAR upload rejected: %v", err)
	case errors.Is(err, context.Canceled):
		return internal("receive NAR", err)
	}
	s.metrics.reject("decompress")
	return errorf(http.StatusBadRequest, "NAR upload rejected: reading the %s stream after %d bytes: %v", method, got, err)
}

// storeNAR commits a received NAR (unless the same NAR is stored already)
// and records the upload.
func (s *Server) storeNAR(ctx context.Context, c meta.Cache, url string, res *received) (meta.NAR, error) {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	n := meta.NAR{
		NarHash: res.narHash.String(), NarSize: int64(res.narSize),
		BlobKey: narKey(res.storedHash, s.opts.Compression), Compression: s.opts.Compression,
		FileHash: res.storedHash.String(), FileSize: int64(res.storedSize),
		ListingKey: listingKey(res.narHash),
	}
	committed := false
	existing, err := s.meta.NAR(ctx, n.NarHash)
	switch {
	case err == nil:
		n = existing // stored once: drop ours
		res.abort()
	case errors.Is(err, meta.ErrNotFound):
		committed = true
		if err := res.listing.Commit(ctx, n.ListingKey); err != nil {
			return meta.NAR{}, internal("store listing", err)
		}
		if err := res.nar.Commit(ctx, n.BlobKey); err != nil {
			return meta.NAR{}, internal("store NAR", err)
		}
	default:
		return meta.NAR{}, internal("look up NAR", err)
	}
	u := meta.Upload{CacheID: c.ID, URL: url, FileHash: res.fileHash.String(), FileSize: int64(res.fileSize),
		NarHash: n.NarHash, NarSize: n.NarSize}
	stored, inserted, err := s.meta.AddUpload(ctx, u, n)
	if err != nil {
		if errors.Is(err, meta.ErrNotFound) {
			return meta.NAR{}, errorf(http.StatusNotFound, "cache %s was deleted during the upload", c.Name)
		}
		return meta.NAR{}, internal("record upload", err)
	}
	if committed && !inserted && stored.BlobKey != n.BlobKey {
		// Another upload of the same NAR won the race with other bytes.
		s.blobs.Delete(ctx, n.BlobKey)
	}
	return stored, nil
}
