package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/listen"
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

// listingKey names the stored listing of a NAR: zstd-compressed, so that
// what a listing costs to store follows what its upload cost (a NAR of a
// million empty files compresses to a few hundred KiB; its listing would
// take tens of MiB).
func listingKey(narHash hash.Hash) string { return "ls/" + narHash.Nix32() + ".ls.zst" }

// putNAR receives a NAR file, verifies it while it streams, and stores it
// as a staged upload of this cache under the URL the client chose.
func (s *Server) putNAR(w http.ResponseWriter, r *http.Request, c meta.Cache, rest string) error {
	if err := blob.ValidKey(rest); err != nil {
		return errorf(http.StatusBadRequest, "NAR file name %q: %v", rest, err)
	}
	if max := s.maxNARSize(); max > 0 && r.ContentLength > max {
		s.metrics.reject("too_large")
		return errorf(http.StatusRequestEntityTooLarge, "NAR file %s is %d bytes; this server accepts at most %d (--max-nar-size)", rest, r.ContentLength, max)
	}
	release, err := s.uploads.acquire(r.Context(), c.ID, s.opts.UploadWait)
	if err != nil {
		return err
	}
	defer release()
	res, err := s.receiveNAR(r.Context(), s.body(w, r), s.maxNARSize())
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

// slots bound the uploads verified at once, overall and per cache, so
// that a tenant trickling uploads holds only its own cache's share.
type slots struct {
	global  chan struct{}
	perSize int
	mu      sync.Mutex
	per     map[int64]chan struct{}
}

func newSlots(global, perCache int) *slots {
	return &slots{global: make(chan struct{}, global), perSize: perCache, per: map[int64]chan struct{}{}}
}

// acquire takes a slot of the cache and one of the server, waiting at
// most wait; it returns the function that gives them back.
func (sl *slots) acquire(ctx context.Context, cacheID int64, wait time.Duration) (func(), error) {
	sl.mu.Lock()
	per := sl.per[cacheID]
	if per == nil {
		per = make(chan struct{}, sl.perSize)
		sl.per[cacheID] = per
	}
	sl.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	busy := func(what string) error {
		return &httpError{status: http.StatusServiceUnavailable,
			msg: fmt.Sprintf("every upload slot of %s is busy (%s); retry later", what, wait)}
	}
	select {
	case per <- struct{}{}:
	case <-t.C:
		return nil, busy("this cache")
	case <-ctx.Done():
		return nil, internal("wait for an upload slot", ctx.Err())
	}
	select {
	case sl.global <- struct{}{}:
	case <-t.C:
		<-per
		return nil, busy("the server")
	case <-ctx.Done():
		<-per
		return nil, internal("wait for an upload slot", ctx.Err())
	}
	return func() { <-sl.global; <-per }, nil
}

// body returns the request body, every read of which is held to the
// upload rate: UploadIdleTimeout of grace, then MinUploadRate on average
// (see listen.Rate), so that a client that stalls or trickles holds
// nothing for long.
func (s *Server) body(w http.ResponseWriter, r *http.Request) io.Reader {
	rate := listen.Rate{Idle: s.opts.UploadIdleTimeout, Min: s.opts.MinUploadRate}
	return &rateReader{r: r.Body, rc: http.NewResponseController(w), b: rate.NewBudget()}
}

// rateReader sets the read deadline of each read of a request body from
// its budget.
type rateReader struct {
	r   io.Reader
	rc  *http.ResponseController
	b   listen.Budget
	err error // once set (io.EOF included), reads return it without touching the deadline
}

func (rr *rateReader) Read(p []byte) (int, error) {
	if rr.err != nil {
		// net/http's read of the next request (or its check that the
		// client is still there) must not inherit a body's deadline.
		return 0, rr.err
	}
	start := time.Now()
	rr.rc.SetReadDeadline(rr.b.Deadline(start, 0))
	n, err := rr.r.Read(p)
	rr.b.Done(time.Since(start), n)
	if err != nil {
		rr.err = err
		if err == io.EOF {
			rr.rc.SetReadDeadline(time.Time{})
		}
		// After a failure the deadline stays: net/http must not wait to
		// discard the rest of a body nobody will read.
	}
	return n, err
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
// it and writing its (compressed) listing, and compresses it into a new
// blob.
//
// The stored file is always the server's own compression of exactly the
// NAR's bytes, whatever the client sent: its bytes depend on the NAR
// alone. So a NAR stored once for several caches (see storeNAR) carries
// nothing of the tenant who sent it first (a zstd skippable frame, xz
// padding, a pessimal encoding), and what a cache serves for a path does
// not tell whether another cache held its NAR before.
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
	dec, err := compress.NewReader(method, br)
	if err != nil {
		s.metrics.reject("decompress")
		return nil, errorf(http.StatusBadRequest, "NAR upload (%s): %v", method, err)
	}
	defer dec.Close()
	syncEnc, err := compress.NewWriter(s.opts.Compression, io.MultiWriter(res.nar, storedHash), s.opts.CompressionLevel)
	if err != nil {
		return nil, internal("store NAR", err)
	}
	enc := newAsyncWriter(syncEnc)
	encClosed := false
	defer func() {
		if !encClosed {
			enc.Close()
		}
	}()
	lenc, err := compress.NewWriter(compress.Zstd, res.listing, 0)
	if err != nil {
		return nil, internal("store listing", err)
	}
	narHash := hash.NewWriter(hash.SHA256)
	// The limits hold for what the body expands to as well, so a small
	// compressed bomb costs no more than an honest upload.
	decoded := &capReader{r: dec, limited: max > 0, left: max, sent: fileHash, ratio: s.expansionLimit()}
	src := &errReader{r: decoded}
	nr := nar.NewReader(io.TeeReader(src, io.MultiWriter(narHash, &encWriter{enc})))
	nr.SetLimits(s.opts.NARLimits)
	err = nar.WriteReaderListing(&encWriter{lenc}, nr)
	encClosed = true
	if cerr := enc.Close(); err == nil && cerr != nil {
		err = &storeError{cerr}
	}
	if cerr := lenc.Close(); err == nil && cerr != nil {
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
// exceeds the size limit; errNARExpands when it expands too much.
var (
	errNARTooLarge = errors.New("decompressed NAR exceeds the size limit")
	errNARExpands  = errors.New("decompressed NAR expands too much")
)

// expansionLimit is the MaxNARExpansion capReader enforces, 0 for none.
func (s *Server) expansionLimit() int64 { return max(0, s.opts.MaxNARExpansion) }

// expansionGrace is what any upload may expand to, however small it was
// sent: MaxNARExpansion counts only past it.
const expansionGrace = 256 << 20

// capReader fails with errNARTooLarge once more than left bytes are read
// (if limited), and with errNARExpands once more than expansionGrace
// bytes were read and more than ratio times what sent has counted of the
// body (ratio 0: no limit).
type capReader struct {
	r       io.Reader
	limited bool
	left    int64
	read    int64
	sent    *hash.Writer
	ratio   int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.limited {
		if c.left < 0 {
			return 0, errNARTooLarge
		}
		if int64(len(p)) > c.left+1 {
			p = p[:c.left+1]
		}
	}
	n, err := c.r.Read(p)
	c.read += int64(n)
	if c.limited {
		if c.left -= int64(n); c.left < 0 {
			return n, errNARTooLarge
		}
	}
	if c.ratio > 0 && c.read > expansionGrace && c.read > c.ratio*int64(c.sent.Size()) {
		return n, errNARExpands
	}
	return n, err
}

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
	case errors.Is(err, errNARExpands):
		s.metrics.reject("too_large")
		return errorf(http.StatusRequestEntityTooLarge, "NAR upload of %d bytes expands more than %d times, past its first 256 MiB (a decompression bomb? --max-nar-expansion)", got, s.opts.MaxNARExpansion)
	case errors.Is(err, nar.ErrInvalid):
		s.metrics.reject("invalid_nar")
		return errorf(http.StatusBadRequest, "NAR upload rejected: %v", err)
	case errors.Is(err, context.Canceled):
		return internal("receive NAR", err)
	}
	s.metrics.reject("decompress")
	return errorf(http.StatusBadRequest, "NAR upload rejected: reading the %s stream after %d bytes: %v", method, got, err)
}

// storeNAR commits a received NAR and records the upload; a NAR stored
// already (for any cache) keeps its record, shared.
func (s *Server) storeNAR(ctx context.Context, c meta.Cache, url string, res *received) (meta.NAR, error) {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	n := meta.NAR{
		NarHash: res.narHash.String(), NarSize: int64(res.narSize),
		BlobKey: narKey(res.storedHash, s.opts.Compression), Compression: s.opts.Compression,
		FileHash: res.storedHash.String(), FileSize: int64(res.storedSize),
		ListingKey: listingKey(res.narHash),
	}
	// Commit whether or not the NAR is stored already: the stored form
	// depends on the NAR alone, so the key is the same and the bytes too
	// (committing over them changes nothing), and a NAR another cache
	// holds answers exactly as fast as a new one.
	if err := res.listing.Commit(ctx, n.ListingKey); err != nil {
		return meta.NAR{}, internal("store listing", err)
	}
	if err := res.nar.Commit(ctx, n.BlobKey); err != nil {
		return meta.NAR{}, internal("store NAR", err)
	}
	u := meta.Upload{CacheID: c.ID, URL: url, FileHash: res.fileHash.String(), FileSize: int64(res.fileSize),
		NarHash: n.NarHash, NarSize: n.NarSize}
	stored, _, err := s.meta.AddUpload(ctx, u, n)
	if err != nil {
		if errors.Is(err, meta.ErrNotFound) {
			return meta.NAR{}, errorf(http.StatusNotFound, "cache %s was deleted during the upload", c.Name)
		}
		return meta.NAR{}, internal("record upload", err)
	}
	// A NAR stored before under other keys (by an older silo, or other
	// settings) keeps them: ours are then unused.
	if stored.BlobKey != n.BlobKey {
		s.blobs.Delete(ctx, n.BlobKey)
	}
	if stored.ListingKey != n.ListingKey {
		s.blobs.Delete(ctx, n.ListingKey)
	}
	return stored, nil
}
