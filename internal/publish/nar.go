package publish

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/nar"
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
	info, ok := s.lookup(w, r, hp)
	if !ok {
		return
	}
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
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
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
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	w.WriteHeader(status)
	s.stream(w, r, info, real, win, zstdEncoded)
}

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

// stream dumps the NAR of the path at real into w (through zstd if
// compress), passing on only the bytes in win, and checks it against info.
// Anything short of a complete, verified NAR aborts the response.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, info *localstore.PathInfo, real string, win window, compress bool) {
	ctx := r.Context()
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	case <-ctx.Done():
		panic(http.ErrAbortHandler)
	}

	var dst io.Writer = w
	var enc *zstd.Encoder
	if compress {
		enc = getEncoder(w)
		defer putEncoder(enc)
		dst = enc
	}
	g := &guard{dst: dst, want: info.NarHash, size: info.NarSize, win: win, h: hash.NewWriter(hash.SHA256)}
	err := nar.Dump(ctx, g, real)
	if err == nil {
		err = g.finish()
	}
	if err == nil && enc != nil {
		if err = enc.Close(); err != nil {
			err = &writeError{err}
		}
	}
	s.metrics.narBytes.Add(float64(g.sent))
	if err == nil {
		return
	}
	var we *writeError
	switch {
	case errors.As(err, &we) || ctx.Err() != nil:
		s.metrics.aborted.WithLabelValues("client").Inc()
	default:
		s.metrics.aborted.WithLabelValues("store").Inc()
		s.log.Error("publish: NAR aborted: the path no longer matches the store's record", "path", info.Path.String(), "err", err)
	}
	// Closes the connection without completing the body.
	panic(http.ErrAbortHandler)
}

// errMismatch is wrapped by guard's errors about a NAR that is not the
// one registered.
var errMismatch = errors.New("NAR differs from the store's record")

// writeError marks a failure to send to the client.
type writeError struct{ err error }

func (e *writeError) Error() string { return "send to client: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// guard sits between nar.Dump and the client. It passes on the bytes of
// the NAR that fall in win, except the very last one, which it releases
// only from finish once the whole NAR has been seen and has exactly the
// registered size and hash.
type guard struct {
	dst  io.Writer
	want hash.Hash
	size uint64
	win  window
	h    *hash.Writer
	sent uint64 // bytes passed to dst
	last byte   // the window's last byte, once seen
}

func (g *guard) Write(p []byte) (int, error) {
	off := g.h.Size()
	if off+uint64(len(p)) > g.size {
		return 0, fmt.Errorf("%w: longer than the registered %d bytes", errMismatch, g.size)
	}
	g.h.Write(p)
	// Pass on [max(off, from), min(off+len, to-1)).
	lo, hi := max(off, g.win.from), min(off+uint64(len(p)), g.win.to-1)
	if lo < hi {
		n, err := g.dst.Write(p[lo-off : hi-off])
		g.sent += uint64(n)
		if err != nil {
			return 0, &writeError{err}
		}
	}
	if end := off + uint64(len(p)); off <= g.win.to-1 && g.win.to-1 < end {
		g.last = p[g.win.to-1-off]
	}
	return len(p), nil
}

// finish checks the NAR seen and releases the last byte of the window.
func (g *guard) finish() error {
	if n := g.h.Size(); n != g.size {
		return fmt.Errorf("%w: %d bytes, registered %d", errMismatch, n, g.size)
	}
	if got := g.h.Sum(); got != g.want {
		return fmt.Errorf("%w: NAR hash %s, registered %s", errMismatch, got, g.want)
	}
	n, err := g.dst.Write([]byte{g.last})
	g.sent += uint64(n)
	if err != nil {
		return &writeError{err}
	}
	return nil
}
