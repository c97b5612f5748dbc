package publish

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/storepath"
)

// serveNAR answers GET and HEAD /nar/<hashpart>-<narhash>.nar[.zst].
//
// The NAR hash in the URL must be the path's current one: a path deleted
// and built again with other contents has another NAR, and a client
// holding the old narinfo must not get it (nix-serve does the same).
func (s *Server) serveNAR(w *statusWriter, r *http.Request) {
	hp, narHash, compressed, ok := parseNARFile(r.PathValue("file"))
	if !ok {
		notFound(w, "no such NAR (want nar/<hashpart>-<nix32 narhash>.nar or .nar.zst)")
		return
	}
	e := s.lookup(w, r, hp)
	if e == nil {
		return
	}
	info := e.info
	if info.NarHash.Nix32() != narHash {
		notFound(w, "the store path's NAR hash is not the one in this URL; it was deleted and rebuilt: fetch its narinfo again")
		return
	}
	real := s.realPath(info.Path)
	if _, err := os.Lstat(real); err != nil {
		s.log.Warn("publish: path registered but missing on disk", "path", real, "err", err)
		notFound(w, "store path "+info.Path.String()+" is gone from disk")
		return
	}

	h := w.Header()
	etag := `"` + narHash + `"` // the URL's contents never change
	h.Set("ETag", etag)
	h["Cache-Control"] = s.cacheControl(narCacheControl, narPrivateCacheControl)
	if compressed {
		h.Set("Content-Type", "application/zstd")
		if r.Method == http.MethodHead {
			return
		}
		s.stream(w, r, info, real, window{0, info.NarSize}, true)
		return
	}
	h.Set("Content-Type", "application/x-nix-archive")
	h.Set("Accept-Ranges", "bytes")
	h.Add("Vary", "Accept-Encoding")

	win := window{0, info.NarSize}
	status := http.StatusOK
	if rh := r.Header.Get("Range"); rh != "" && ifRangeMatches(r, etag) {
		from, to, err := parseRange(rh, info.NarSize)
		switch {
		case errors.Is(err, errUnsatisfiable):
			h.Set("Content-Range", "bytes */"+strconv.FormatUint(info.NarSize, 10))
			http.Error(w, "range not satisfiable", http.StatusRequestedRangeNotSatisfiable)
			return
		case err == nil:
			win = window{from, to}
			status = http.StatusPartialContent
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to-1, info.NarSize))
		}
		// A Range header that does not parse, or asks for several
		// ranges, is ignored: the whole NAR is an allowed answer.
	}
	zstdEncoded := status == http.StatusOK && acceptsZstd(r)
	if zstdEncoded {
		h.Set("Content-Encoding", "zstd")
	} else {
		h.Set("Content-Length", strconv.FormatUint(win.to-win.from, 10))
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	s.stream(w, r, info, real, win, zstdEncoded)
}

// Cache-Control of NAR answers: their URL names their contents.
var (
	narCacheControl        = []string{"public, max-age=31536000, immutable"}
	narPrivateCacheControl = []string{"private, max-age=31536000, immutable"}
)

// parseNARFile splits "<hashpart>-<narhash>.nar[.zst]".
func parseNARFile(file string) (hashPart, narHash string, compressed, ok bool) {
	base, ok := cutSuffix(file, ".nar")
	if !ok {
		if base, ok = cutSuffix(file, ".nar.zst"); !ok {
			return "", "", false, false
		}
		compressed = true
	}
	hashPart, narHash, ok = strings.Cut(base, "-")
	if !ok || len(hashPart) != storepath.HashLen || !nix32.IsValid(hashPart) ||
		len(narHash) != nix32.EncodedLen(32) || !nix32.IsValid(narHash) {
		return "", "", false, false
	}
	return hashPart, narHash, compressed, true
}

// window is the part [from, to) of a NAR a response carries.
type window struct{ from, to uint64 }

// stream sends the window win of the NAR of info's path (on disk at real)
// to w, through zstd if compress, and checks it against info before the
// window's last byte goes out; anything short of the registered NAR aborts
// the response.
//
// The first time a path is sent, every byte is hashed and compared with
// NarHash; the tree's stat digest is then remembered with that NarHash. A
// later stream of a tree with the same digest (no file written, replaced,
// added or removed since: any of these changes an inode or a ctime) needs
// no hashing, reads only the window, and sends file contents with
// sendfile. The digest is taken before such a stream (a tree changed since
// is hashed again) and computed again during it (a tree changing meanwhile
// aborts it).
func (s *Server) stream(w http.ResponseWriter, r *http.Request, info *localstore.PathInfo, real string, win window, compress bool) {
	ctx := r.Context()
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	case <-ctx.Done():
		panic(http.ErrAbortHandler)
	}

	// Every write gets StallTimeout to complete; the deadline must not
	// outlive the response on a kept-alive connection.
	rc := http.NewResponseController(w)
	defer rc.SetWriteDeadline(time.Time{})
	var dst io.Writer = &stallWriter{w: w, rc: rc, timeout: s.opts.StallTimeout}
	var enc *zstd.Encoder
	if compress {
		enc = getEncoder(w)
		defer putEncoder(enc)
		dst = enc
	}
	known, haveKnown := s.verified.get(info.Path, info.NarHash)
	if haveKnown {
		// A tree touched since it was verified (nix-store --optimise
		// replaces files with hard links) is hashed again rather than
		// found out at the end of the stream.
		if d, err := statDigest(ctx, real); err != nil || d != known {
			haveKnown = false
		}
	}
	ns, err := streamNAR(ctx, dst, real, win, !haveKnown)
	defer ns.done()
	if err == nil {
		err = s.check(ns, info, known, haveKnown)
	}
	if err == nil {
		err = ns.out.release()
	}
	if err == nil && enc != nil {
		if err = enc.Close(); err != nil {
			err = &writeError{err}
		}
	}
	s.metrics.narBytes.Add(float64(ns.out.sent))
	if err == nil {
		return
	}
	var we *writeError
	switch {
	case errors.As(err, &we) || ctx.Err() != nil:
		s.metrics.aborted.WithLabelValues("client").Inc()
	default:
		s.verified.forget(info.Path)
		s.metrics.aborted.WithLabelValues("store").Inc()
		s.log.Error("publish: NAR aborted: the path no longer matches the store's record", "path", info.Path.String(), "err", err)
	}
	// Closes the connection without completing the body.
	panic(http.ErrAbortHandler)
}

// check compares a finished stream with the path's record: its size, and
// either its hash (which then makes the tree's digest known) or, for a
// tree verified before, its stat digest.
func (s *Server) check(ns *narStream, info *localstore.PathInfo, known [32]byte, haveKnown bool) error {
	if ns.out.off != info.NarSize {
		return fmt.Errorf("%w: %d bytes, registered %d", errMismatch, ns.out.off, info.NarSize)
	}
	digest := ns.sum()
	if haveKnown {
		if digest != known {
			return fmt.Errorf("%w: files changed since their NAR hash was checked", errMismatch)
		}
		return nil
	}
	if got := ns.hash.Sum(); got != info.NarHash {
		return fmt.Errorf("%w: NAR hash %s, registered %s", errMismatch, got, info.NarHash)
	}
	s.verified.put(info.Path, info.NarHash, digest)
	return nil
}

// errMismatch is wrapped by errors about a tree that is not the one
// registered.
var errMismatch = errors.New("NAR differs from the store's record")

// writeError marks a failure to send to the client.
type writeError struct{ err error }

func (e *writeError) Error() string { return "send to client: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// verifiedTrees remembers, per path, a NarHash checked by hashing a whole
// stream and the stat digest of the tree that produced it. It holds at
// most maxVerified paths and is dropped whole when full.
type verifiedTrees struct {
	mu sync.Mutex
	m  map[storepath.Path]verifiedTree
}

type verifiedTree struct {
	narHash hash.Hash
	digest  [32]byte
}

const maxVerified = 1 << 17

func (v *verifiedTrees) get(p storepath.Path, narHash hash.Hash) ([32]byte, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	t, ok := v.m[p]
	if !ok || t.narHash != narHash {
		return [32]byte{}, false
	}
	return t.digest, true
}

func (v *verifiedTrees) put(p storepath.Path, narHash hash.Hash, digest [32]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= maxVerified {
		v.m = map[storepath.Path]verifiedTree{}
	}
	v.m[p] = verifiedTree{narHash, digest}
}

func (v *verifiedTrees) forget(p storepath.Path) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.m, p)
}

// stallWriter gives each write to the client StallTimeout to complete, so
// that a client that stops reading is cut off and frees its stream. File
// contents sent with sendfile go in chunks of stallChunk, each with its
// own deadline, so that a large file is not held to one.
type stallWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

const stallChunk = 256 << 10

func (s *stallWriter) Write(p []byte) (int, error) {
	s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	return s.w.Write(p)
}

// ReadFrom keeps sendfile: the response's ReadFrom uses it for an
// *io.LimitedReader of an *os.File, which is what narOut.file passes.
func (s *stallWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := s.w.(io.ReaderFrom)
	lr, isLimited := r.(*io.LimitedReader)
	if !ok || !isLimited {
		return io.Copy(struct{ io.Writer }{s}, r)
	}
	var total int64
	for lr.N > 0 {
		chunk := &io.LimitedReader{R: lr.R, N: min(lr.N, stallChunk)}
		s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
		n, err := rf.ReadFrom(chunk)
		total += n
		lr.N -= n
		if err != nil {
			return total, err
		}
		if n == 0 {
			break // the file ended early; the caller checks the count
		}
	}
	return total, nil
}
