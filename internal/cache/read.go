package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/storepath"
)

// hashPartOf returns the hash part of "<hashpart><suffix>", or a 404.
func hashPartOf(rest, suffix string) (string, error) {
	h := strings.TrimSuffix(rest, suffix)
	if len(h) != storepath.HashLen || !nix32.IsValid(h) {
		return "", errorf(http.StatusNotFound, "%q is not <32 nix32 characters>%s", rest, suffix)
	}
	return h, nil
}

func (s *Server) getNarInfo(w http.ResponseWriter, r *http.Request, c meta.Cache, rest string) error {
	h, err := hashPartOf(rest, ".narinfo")
	if err != nil {
		return err
	}
	p, length, err := s.view.path(r.Context(), infoOf(r).gen, c.ID, h)
	if errors.Is(err, meta.ErrNotFound) {
		return errorf(http.StatusNotFound, "cache %s has no path with hash part %s", c.Name, h)
	}
	if err != nil {
		return internal("look up narinfo", err)
	}
	hdr := w.Header()
	// Both values are shared with other responses, read-only.
	hdr["Content-Type"] = narinfoType
	hdr["Content-Length"] = length
	if r.Method != http.MethodHead {
		io.WriteString(w, p.NarInfo)
	}
	return nil
}

// narinfoType is the Content-Type header's value for narinfos. Header
// values may be shared: net/http only reads them, and Header.Add on a
// one-element slice copies it.
var narinfoType = []string{"text/x-nix-narinfo"}

// redirector is a blob store that can send clients to fetch a blob
// elsewhere (blob/s3 with presigned URLs); on reports whether it does.
type redirector interface {
	RedirectURL(ctx context.Context, key string) (url string, on bool, err error)
}

// blobError answers a blob that cannot be opened. A missing one is a 404
// (decided before any byte is sent), so that Nix falls back to another
// substituter instead of failing on a body that ends early.
func blobError(key string, err error) error {
	if errors.Is(err, blob.ErrNotFound) {
		return &httpError{status: http.StatusNotFound, msg: key + " is missing from the server's storage",
			err: fmt.Errorf("metadata refers to a missing blob: %w", err)}
	}
	return internal("open "+key, err)
}

// serveBlob serves a stored blob of cache c with Range support; for the
// disk store the copy is a sendfile. An immutable blob (named by its
// hash) may be kept by caches in front, shared ones only if c is public.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, c meta.Cache, key, contentType string, immutable bool) error {
	if rd, ok := s.blobs.(redirector); ok && immutable {
		if url, on, err := rd.RedirectURL(r.Context(), key); on {
			if err != nil {
				return blobError(key, err)
			}
			w.Header().Set("Cache-Control", "private, no-store") // the URL expires
			http.Redirect(w, r, url, http.StatusTemporaryRedirect)
			return nil
		}
	}
	f, err := s.blobs.Open(r.Context(), key)
	if err != nil {
		return blobError(key, err)
	}
	defer f.Close()
	hdr := w.Header()
	hdr.Set("Content-Type", contentType)
	if immutable {
		// The key names the bytes (their hash), so it is a strong ETag.
		if c.Public {
			hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			hdr.Set("Cache-Control", "private, max-age=31536000, immutable")
		}
		hdr.Set("ETag", `"`+key+`"`)
	}
	defer cork(r)()
	http.ServeContent(sendVia(w, f), r, "", noModTime, f)
	return nil
}

// nixServeName matches the NAR URLs nix-serve hands out,
// "nar/<hashpart>-<narhash nix32>.nar", which migrating clients keep asking for.
var nixServeName = regexp.MustCompile(`^nar/([0-9a-df-np-sv-z]{32})-([0-9a-df-np-sv-z]{52})\.nar$`)

func (s *Server) getNAR(w http.ResponseWriter, r *http.Request, c meta.Cache, rest string) error {
	ctx := r.Context()
	n, err := s.view.servedNAR(ctx, infoOf(r).gen, c.ID, rest)
	if err == nil {
		return s.serveBlob(w, r, c, n.BlobKey, "application/x-nix-nar", true)
	}
	if !errors.Is(err, meta.ErrNotFound) {
		return internal("look up NAR", err)
	}
	if m := nixServeName.FindStringSubmatch(rest); m != nil {
		return s.serveNixServeNAR(w, r, c, m[1], m[2])
	}
	// A NAR file a client uploaded under its own name: it is here (so Nix
	// need not upload it again), but served under the cache's own URL.
	if u, err := s.meta.Upload(ctx, c.ID, rest); err == nil {
		if _, err := s.meta.NAR(ctx, u.NarHash); err == nil {
			if r.Method == http.MethodHead {
				w.Header().Set("Content-Type", "application/x-nix-nar")
				w.Header().Set("Content-Length", strconv.FormatInt(u.FileSize, 10))
				return nil
			}
			return errorf(http.StatusNotFound, "%s was uploaded and verified as NAR %s; cache %s serves it at the URL its narinfo names", rest, u.NarHash, c.Name)
		}
	}
	return errorf(http.StatusNotFound, "cache %s has no NAR file %s", c.Name, rest)
}

// serveNixServeNAR serves a path's NAR uncompressed, as nix-serve does.
func (s *Server) serveNixServeNAR(w http.ResponseWriter, r *http.Request, c meta.Cache, hashPart, narHash string) error {
	ctx := r.Context()
	p, err := s.meta.Path(ctx, c.ID, hashPart)
	if err != nil || p.NarHash != "sha256:"+narHash {
		return errorf(http.StatusNotFound, "cache %s has no path %s with NAR hash sha256:%s", c.Name, hashPart, narHash)
	}
	n, err := s.meta.NAR(ctx, p.NarHash)
	if err != nil {
		return internal("look up NAR", err)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/x-nix-nar")
	hdr.Set("Content-Length", strconv.FormatInt(n.NarSize, 10))
	if r.Method == http.MethodHead {
		return nil
	}
	f, err := s.blobs.Open(ctx, n.BlobKey)
	if err != nil {
		return blobError(n.BlobKey, err)
	}
	defer f.Close()
	dec, err := compress.NewReader(n.Compression, f)
	if err != nil {
		return internal("decompress "+n.BlobKey, err)
	}
	defer dec.Close()
	if _, err := io.Copy(w, dec); err != nil {
		// Headers are sent; the short body tells the client.
		setLogError(r, fmt.Errorf("stream %s uncompressed: %w", n.BlobKey, err))
	}
	return nil
}

func (s *Server) getListing(w http.ResponseWriter, r *http.Request, c meta.Cache, rest string) error {
	h, err := hashPartOf(rest, ".ls")
	if err != nil {
		return err
	}
	ctx := r.Context()
	p, err := s.meta.Path(ctx, c.ID, h)
	if errors.Is(err, meta.ErrNotFound) {
		return errorf(http.StatusNotFound, "cache %s has no path with hash part %s", c.Name, h)
	}
	if err != nil {
		return internal("look up path", err)
	}
	n, err := s.meta.NAR(ctx, p.NarHash)
	if err != nil {
		return internal("look up NAR", err)
	}
	if !strings.HasSuffix(n.ListingKey, ".zst") {
		return s.serveBlob(w, r, c, n.ListingKey, "application/json", false) // stored before listings were compressed
	}
	return s.serveCompressedListing(w, r, n.ListingKey)
}

// serveCompressedListing serves a zstd-compressed listing: as it is
// stored to a client that accepts zstd, decompressed to others (Nix 2.8
// sends no Accept-Encoding).
func (s *Server) serveCompressedListing(w http.ResponseWriter, r *http.Request, key string) error {
	f, err := s.blobs.Open(r.Context(), key)
	if err != nil {
		return internal("open "+key, err)
	}
	defer f.Close()
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Add("Vary", "Accept-Encoding")
	if acceptsZstd(r) {
		hdr.Set("Content-Encoding", "zstd")
		http.ServeContent(w, r, "", noModTime, f)
		return nil
	}
	if r.Method == http.MethodHead {
		return nil
	}
	dec, err := compress.NewReader(compress.Zstd, bufio.NewReaderSize(f, 32<<10))
	if err != nil {
		return internal("decompress "+key, err)
	}
	defer dec.Close()
	if _, err := io.Copy(w, dec); err != nil {
		// Headers are sent; the short body tells the client.
		setLogError(r, fmt.Errorf("stream %s decompressed: %w", key, err))
	}
	return nil
}

// acceptsZstd reports whether the request's Accept-Encoding allows zstd.
func acceptsZstd(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(name), "zstd") {
				continue
			}
			q := 1.0
			for _, p := range strings.Split(params, ";") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(p), "q="); ok {
					q, _ = strconv.ParseFloat(v, 64)
				}
			}
			return q > 0
		}
	}
	return false
}

func (s *Server) getLog(w http.ResponseWriter, r *http.Request, c meta.Cache, rest string) error {
	drv := strings.TrimPrefix(rest, "log/")
	l, err := s.meta.Log(r.Context(), c.ID, drv)
	if errors.Is(err, meta.ErrNotFound) {
		return errorf(http.StatusNotFound, "cache %s has no build log for %s", c.Name, drv)
	}
	if err != nil {
		return internal("look up log", err)
	}
	return s.serveBlob(w, r, c, l.BlobKey, "text/plain; charset=utf-8", false)
}
