package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// putNarInfo makes a path visible: its narinfo must match a verified
// upload to this cache, and its references must be in the cache.
func (s *Server) putNarInfo(w http.ResponseWriter, r *http.Request, c meta.Cache, rest string) error {
	ctx := r.Context()
	h, err := hashPartOf(rest, ".narinfo")
	if err != nil {
		return errorf(http.StatusBadRequest, "%s", err.(*httpError).msg)
	}
	key, err := signature.ParseSecretKey(c.SecretKey)
	if err != nil {
		return internal("load the signing key of cache "+c.Name, err)
	}
	var body strings.Builder
	if _, err := copyLimited(&body, r.Body, narinfo.MaxSize); err != nil {
		return err
	}
	ni, err := narinfo.ParseString(storepath.Dir(c.StoreDir), body.String())
	if err != nil {
		s.metrics.reject("narinfo")
		return errorf(http.StatusBadRequest, "narinfo rejected: %v", err)
	}
	if ni.StorePath.HashPart() != h {
		s.metrics.reject("narinfo")
		return errorf(http.StatusBadRequest, "narinfo rejected: it describes %s but was sent to %s.narinfo", ni.StorePath, h)
	}
	if ni.CA != "" && !ni.ContentAddressed() {
		s.metrics.reject("narinfo")
		return errorf(http.StatusBadRequest, "narinfo rejected: CA %q does not produce the store path %s", ni.CA, ni.StorePath)
	}

	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	n, err := s.uploadedNAR(r, c, ni)
	if err != nil {
		s.metrics.reject("mismatch")
		return err
	}
	if s.opts.RequireClosure {
		if err := s.checkClosure(ctx, c, ni); err != nil {
			return err
		}
	}

	// First writer wins: a path is never silently replaced by another NAR
	// (a push token must not poison what clients already trust). The same
	// NAR again is a no-op; an admin token may replace.
	if old, err := s.meta.Path(ctx, c.ID, h); err == nil && old.NarHash != n.NarHash {
		if s.authorize(r, c, meta.PermAdmin) != nil {
			s.metrics.reject("conflict")
			return errorf(http.StatusConflict, "narinfo rejected: cache %s already holds %s with NarHash %s, not %s; a path is not replaced by a different NAR (an admin token may replace it)", c.Name, ni.StorePath, old.NarHash, n.NarHash)
		}
	} else if err != nil && !errors.Is(err, meta.ErrNotFound) {
		return internal("look up the existing path", err)
	}

	// Describe what is served, signed by the cache.
	served := *ni
	served.URL = n.BlobKey
	served.Compression = n.Compression
	if served.FileHash, err = hash.Parse(n.FileHash); err != nil {
		return internal("stored file hash", err)
	}
	served.FileSize = uint64(n.FileSize)
	served.Sigs = append([]signature.Signature(nil), ni.Sigs...)
	served.Sign(key)
	err = s.meta.PutPath(ctx, meta.Path{CacheID: c.ID, HashPart: h, StorePath: ni.StorePath.String(), NarHash: n.NarHash, NarInfo: served.String()})
	if errors.Is(err, meta.ErrNotFound) {
		return errorf(http.StatusConflict, "narinfo rejected: NAR %s or cache %s vanished meanwhile; upload again", n.NarHash, c.Name)
	}
	if err != nil {
		return internal("store path", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "stored %s in cache %s\n", ni.StorePath, c.Name)
	return nil
}

// uploadedNAR returns the stored NAR a narinfo's URL names, checking that
// it is what the narinfo says.
func (s *Server) uploadedNAR(r *http.Request, c meta.Cache, ni *narinfo.NarInfo) (meta.NAR, error) {
	ctx := r.Context()
	var got struct {
		narHash, fileHash string
		narSize, fileSize int64
	}
	var n meta.NAR
	u, err := s.meta.Upload(ctx, c.ID, ni.URL)
	switch {
	case err == nil:
		got.narHash, got.narSize, got.fileHash, got.fileSize = u.NarHash, u.NarSize, u.FileHash, u.FileSize
		if n, err = s.meta.NAR(ctx, u.NarHash); err != nil {
			if errors.Is(err, meta.ErrNotFound) {
				return meta.NAR{}, errorf(http.StatusConflict, "narinfo rejected: the upload %s expired; upload the NAR again", ni.URL)
			}
			return meta.NAR{}, internal("look up NAR", err)
		}
	case errors.Is(err, meta.ErrNotFound):
		// A file this cache already serves (silo's own clients may name it).
		n, err = s.meta.ServedNAR(ctx, c.ID, ni.URL)
		if errors.Is(err, meta.ErrNotFound) {
			return meta.NAR{}, errorf(http.StatusConflict, "narinfo rejected: its URL %s names no NAR uploaded to cache %s (PUT the NAR to /%s/%s first)", ni.URL, c.Name, c.Name, ni.URL)
		}
		if err != nil {
			return meta.NAR{}, internal("look up NAR", err)
		}
		got.narHash, got.narSize, got.fileHash, got.fileSize = n.NarHash, n.NarSize, n.FileHash, n.FileSize
	default:
		return meta.NAR{}, internal("look up upload", err)
	}
	var diffs []string
	if ni.NarHash.String() != got.narHash {
		diffs = append(diffs, fmt.Sprintf("NarHash is %s but the NAR uploaded as %s hashes to %s", ni.NarHash, ni.URL, got.narHash))
	}
	if int64(ni.NarSize) != got.narSize {
		diffs = append(diffs, fmt.Sprintf("NarSize is %d but the NAR uploaded as %s has %d bytes", ni.NarSize, ni.URL, got.narSize))
	}
	if !ni.FileHash.IsZero() && ni.FileHash.String() != got.fileHash {
		diffs = append(diffs, fmt.Sprintf("FileHash is %s but the file uploaded as %s hashes to %s", ni.FileHash, ni.URL, got.fileHash))
	}
	if ni.FileSize != 0 && int64(ni.FileSize) != got.fileSize {
		diffs = append(diffs, fmt.Sprintf("FileSize is %d but the file uploaded as %s has %d bytes", ni.FileSize, ni.URL, got.fileSize))
	}
	if len(diffs) > 0 {
		return meta.NAR{}, errorf(http.StatusBadRequest, "narinfo for %s rejected: %s", ni.StorePath, strings.Join(diffs, "; "))
	}
	return n, nil
}

// putListing accepts the .ls file Nix uploads with write-nar-listing=true
// and drops it: the server writes its own listing of every NAR it verifies.
func (s *Server) putListing(w http.ResponseWriter, r *http.Request, c meta.Cache, rest string) error {
	if _, err := hashPartOf(rest, ".ls"); err != nil {
		return errorf(http.StatusBadRequest, "%s", err.(*httpError).msg)
	}
	if _, err := copyLimited(io.Discard, r.Body, 256<<20); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// maxLogSize bounds an uploaded build log.
const maxLogSize = 1 << 30

// putLog stores a build log, as `nix store copy-log --to` sends it.
func (s *Server) putLog(w http.ResponseWriter, r *http.Request, c meta.Cache, rest string) error {
	ctx := r.Context()
	drv := strings.TrimPrefix(rest, "log/")
	p, err := storepath.Dir(c.StoreDir).ParseBase(drv)
	if err != nil || !p.IsDerivation() {
		return errorf(http.StatusBadRequest, "log/%s: not the base name of a derivation (<hash>-<name>.drv)", drv)
	}
	bw, err := s.blobs.Create(ctx)
	if err != nil {
		return internal("store log", err)
	}
	defer bw.Abort()
	hw := hash.NewWriter(hash.SHA256)
	body := &idleReader{r: r.Body, rc: http.NewResponseController(w), idle: s.opts.UploadIdleTimeout}
	if _, err := copyLimited(io.MultiWriter(bw, hw), bufio.NewReader(body), maxLogSize); err != nil {
		return err
	}
	key := "log/" + hw.Sum().Nix32()
	if err := bw.Commit(ctx, key); err != nil {
		return internal("store log", err)
	}
	if err := s.meta.PutLog(ctx, meta.Log{CacheID: c.ID, Drv: drv, BlobKey: key, Size: int64(hw.Size())}); err != nil {
		return internal("record log", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// MaxMissingQuery bounds the hash parts one missing query may ask about.
const MaxMissingQuery = 100_000

// missing answers which of the hash parts in the body (one per line) the
// cache has no path for, one per line, in the order asked.
func (s *Server) missing(w http.ResponseWriter, r *http.Request, c meta.Cache, _ string) error {
	var parts []string
	sc := bufio.NewScanner(io.LimitReader(r.Body, MaxMissingQuery*(storepath.HashLen+2)+1))
	for line := 1; sc.Scan(); line++ {
		h := strings.TrimSpace(sc.Text())
		if h == "" {
			continue
		}
		if len(h) != storepath.HashLen || !nix32.IsValid(h) {
			return errorf(http.StatusBadRequest, "line %d: %q is not a store path hash part (32 nix32 characters)", line, h)
		}
		if len(parts) == MaxMissingQuery {
			return errorf(http.StatusRequestEntityTooLarge, "more than %d hash parts in one query; split it", MaxMissingQuery)
		}
		parts = append(parts, h)
	}
	if err := sc.Err(); err != nil {
		return errorf(http.StatusBadRequest, "reading hash parts: %v", err)
	}
	missing, err := s.meta.Missing(r.Context(), c.ID, parts)
	if err != nil {
		return internal("query missing paths", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	bw := bufio.NewWriter(w)
	for _, h := range missing {
		bw.WriteString(h)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// checkClosure refuses ni if the cache lacks any of its references.
func (s *Server) checkClosure(ctx context.Context, c meta.Cache, ni *narinfo.NarInfo) error {
	var refs []string
	for _, ref := range ni.References {
		if ref != ni.StorePath {
			refs = append(refs, ref.HashPart())
		}
	}
	missing, err := s.meta.Missing(ctx, c.ID, refs)
	if err != nil {
		return internal("check references", err)
	}
	if len(missing) > 0 {
		s.metrics.reject("missing_reference")
		var names []string
		for _, ref := range ni.References {
			for _, m := range missing {
				if ref.HashPart() == m {
					names = append(names, ref.String())
				}
			}
		}
		return errorf(http.StatusConflict, "narinfo rejected: cache %s lacks references of %s: %s (push them first)", c.Name, ni.StorePath, strings.Join(names, ", "))
	}
	return nil
}
