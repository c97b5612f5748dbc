package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// putNarInfo makes a path visible: its narinfo must match a verified
// upload to this cache (and, with RequireClosure, its references must be
// in the cache). The first narinfo of a path wins, atomically: another
// for the same path is accepted only if it says the same (or with an
// admin token, which replaces it).
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
	if _, err := copyLimited(&body, s.body(w, r), narinfo.MaxSize); err != nil {
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
	if ni.CA != "" {
		// As Nix checks on import: the content address must be the NAR's.
		if err := s.checkCA(ctx, ni, n); err != nil {
			s.metrics.reject("ca")
			return err
		}
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
	p := meta.Path{CacheID: c.ID, HashPart: h, StorePath: ni.StorePath.String(), NarHash: n.NarHash, NarInfo: served.String()}
	err = s.meta.PutPath(ctx, p)
	replaced := false
	if errors.Is(err, meta.ErrExists) {
		// First writer wins: a path is never silently changed (a push
		// token must not rewrite what clients already trust, its
		// references above all). The same narinfo again is a no-op.
		old, lerr := s.meta.Path(ctx, c.ID, h)
		if lerr != nil {
			return internal("look up the existing path", lerr)
		}
		diffs := narinfoDiffs(old.NarInfo, ni, key.Name(), storepath.Dir(c.StoreDir))
		if len(diffs) == 0 {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintf(w, "cache %s already holds %s with this narinfo\n", c.Name, ni.StorePath)
			return nil
		}
		if s.authorize(r, c, meta.PermAdmin) != nil {
			s.metrics.reject("conflict")
			return errorf(http.StatusConflict, "narinfo rejected: cache %s already holds %s, with another %s; a path is not replaced once stored, nor its narinfo changed (an admin token may replace it)", c.Name, ni.StorePath, strings.Join(diffs, ", "))
		}
		err = s.meta.ReplacePath(ctx, p)
		replaced = true
	}
	if errors.Is(err, meta.ErrNotFound) {
		return errorf(http.StatusConflict, "narinfo rejected: NAR %s or cache %s vanished meanwhile; upload again", n.NarHash, c.Name)
	}
	if err != nil {
		return internal("store path", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if replaced {
		fmt.Fprintf(w, "replaced %s in cache %s\n", ni.StorePath, c.Name)
	} else {
		fmt.Fprintf(w, "stored %s in cache %s\n", ni.StorePath, c.Name)
	}
	return nil
}

// narinfoDiffs names the fields in which ni says something else than the
// stored narinfo text old, leaving out what the server sets itself (URL,
// Compression, FileHash, FileSize) and signatures by the cache's own key.
func narinfoDiffs(old string, ni *narinfo.NarInfo, cacheKey string, dir storepath.Dir) []string {
	o, err := narinfo.ParseString(dir, old)
	if err != nil {
		return []string{"narinfo (the stored one does not parse)"}
	}
	var diffs []string
	if o.NarHash != ni.NarHash || o.NarSize != ni.NarSize {
		diffs = append(diffs, "NAR")
	}
	if !samePaths(o.References, ni.References) {
		diffs = append(diffs, "References")
	}
	if o.Deriver != ni.Deriver {
		diffs = append(diffs, "Deriver")
	}
	if o.System != ni.System {
		diffs = append(diffs, "System")
	}
	if o.CA != ni.CA {
		diffs = append(diffs, "CA")
	}
	if !sameSigs(o.Sigs, ni.Sigs, cacheKey) {
		diffs = append(diffs, "Sig")
	}
	return diffs
}

func samePaths(a, b []storepath.Path) bool {
	if len(a) != len(b) {
		return false
	}
	set := make(map[storepath.Path]bool, len(a))
	for _, p := range a {
		set[p] = true
	}
	for _, p := range b {
		if !set[p] {
			return false
		}
	}
	return true
}

func sameSigs(a, b []signature.Signature, skipKey string) bool {
	set := map[string]bool{}
	for _, s := range a {
		if s.KeyName != skipKey {
			set[s.String()] = true
		}
	}
	n := 0
	for _, s := range b {
		if s.KeyName == skipKey {
			continue
		}
		if !set[s.String()] {
			return false
		}
		n++
	}
	return n == len(set)
}

// checkCA checks a narinfo's content address against the NAR it names,
// as Nix does when it imports the path: a recursive (fixed:r:) hash is of
// the whole NAR, a flat (fixed:) or text hash of the single regular file
// the NAR must hold. (That the CA yields the store path is checked
// before.) Only a recursive sha256 hash, the NarHash itself, needs no
// reading of the stored NAR.
func (s *Server) checkCA(ctx context.Context, ni *narinfo.NarInfo, n meta.NAR) error {
	ca, err := narinfo.ParseCA(ni.CA)
	if err != nil {
		return errorf(http.StatusBadRequest, "narinfo rejected: CA %q: %v", ni.CA, err)
	}
	if ca.Recursive && ca.Hash.Algo() == hash.SHA256 {
		if ca.Hash != ni.NarHash {
			return errorf(http.StatusBadRequest, "narinfo rejected: CA %s is not the NAR's hash (%s): Nix would refuse the path", ni.CA, ni.NarHash)
		}
		return nil
	}
	got, err := s.hashStoredNAR(ctx, n, ca.Recursive, ca.Hash.Algo())
	if err != nil {
		return err
	}
	if got != ca.Hash {
		what := "its file's contents hash"
		if ca.Recursive {
			what = "the NAR hashes"
		}
		return errorf(http.StatusBadRequest, "narinfo rejected: CA %s does not match the NAR: %s to %s: Nix would refuse the path", ni.CA, what, got)
	}
	return nil
}

// hashStoredNAR hashes the stored NAR n with algo: all of it if
// recursive, else the contents of the single regular file it must hold.
func (s *Server) hashStoredNAR(ctx context.Context, n meta.NAR, recursive bool, algo hash.Algo) (hash.Hash, error) {
	f, err := s.blobs.Open(ctx, n.BlobKey)
	if err != nil {
		return hash.Hash{}, internal("open "+n.BlobKey, err)
	}
	defer f.Close()
	dec, err := compress.NewReader(n.Compression, bufio.NewReaderSize(f, 64<<10))
	if err != nil {
		return hash.Hash{}, internal("decompress "+n.BlobKey, err)
	}
	defer dec.Close()
	hw := hash.NewWriter(algo)
	if recursive {
		if _, err := io.Copy(hw, dec); err != nil {
			return hash.Hash{}, internal("read "+n.BlobKey, err)
		}
		return hw.Sum(), nil
	}
	nr := nar.NewReader(dec)
	h, err := nr.Next()
	if err != nil {
		return hash.Hash{}, internal("read "+n.BlobKey, err)
	}
	if h.Type != nar.TypeRegular {
		return hash.Hash{}, errorf(http.StatusBadRequest, "narinfo rejected: a flat or text content address needs a NAR of one regular file, and this one is a %s", h.Type)
	}
	if _, err := io.Copy(hw, nr); err != nil {
		return hash.Hash{}, internal("read "+n.BlobKey, err)
	}
	if _, err := nr.Next(); err != io.EOF {
		return hash.Hash{}, internal("read "+n.BlobKey, err)
	}
	return hw.Sum(), nil
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
	if _, err := copyLimited(io.Discard, s.body(w, r), 256<<20); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// putLog stores a build log, as `nix store copy-log --to` sends it. The
// first log of a derivation wins (an admin token replaces it), and each
// cache's logs are held to LogLimits.
func (s *Server) putLog(w http.ResponseWriter, r *http.Request, c meta.Cache, rest string) error {
	ctx := r.Context()
	drv := strings.TrimPrefix(rest, "log/")
	p, err := storepath.Dir(c.StoreDir).ParseBase(drv)
	if err != nil || !p.IsDerivation() {
		return errorf(http.StatusBadRequest, "log/%s: not the base name of a derivation (<hash>-<name>.drv)", drv)
	}
	if r.ContentLength > s.opts.MaxLogSize {
		return errorf(http.StatusRequestEntityTooLarge, "build log of %d bytes; this server accepts at most %d (--max-log-size)", r.ContentLength, s.opts.MaxLogSize)
	}
	// Refuse a second log before reading it.
	admin := false
	if _, err := s.meta.Log(ctx, c.ID, drv); err == nil {
		if admin = s.authorize(r, c, meta.PermAdmin) == nil; !admin {
			return errorf(http.StatusConflict, "cache %s already holds a build log for %s; it is never replaced (an admin token may replace it)", c.Name, drv)
		}
	} else if !errors.Is(err, meta.ErrNotFound) {
		return internal("look up log", err)
	}
	bw, err := s.blobs.Create(ctx)
	if err != nil {
		return internal("store log", err)
	}
	defer bw.Abort()
	hw := hash.NewWriter(hash.SHA256)
	if _, err := copyLimited(io.MultiWriter(bw, hw), bufio.NewReader(s.body(w, r)), s.opts.MaxLogSize); err != nil {
		return err
	}
	key := "log/" + hw.Sum().Nix32()
	if err := bw.Commit(ctx, key); err != nil {
		return internal("store log", err)
	}
	l := meta.Log{CacheID: c.ID, Drv: drv, BlobKey: key, Size: int64(hw.Size())}
	if admin {
		err = s.meta.ReplaceLog(ctx, l)
	} else {
		err = s.meta.PutLog(ctx, l, s.opts.LogLimits)
	}
	switch {
	case errors.Is(err, meta.ErrExists):
		if old, lerr := s.meta.Log(ctx, c.ID, drv); lerr == nil && old.BlobKey == key {
			break // the same log, raced with itself
		}
		return errorf(http.StatusConflict, "cache %s already holds a build log for %s; it is never replaced (an admin token may replace it)", c.Name, drv)
	case errors.Is(err, meta.ErrLimit):
		return errorf(http.StatusInsufficientStorage, "cache %s holds as many build logs as it may (%d logs or %d bytes: --max-logs-per-cache, --max-log-bytes-per-cache)", c.Name, s.opts.LogLimits.Count, s.opts.LogLimits.Bytes)
	case errors.Is(err, meta.ErrNotFound):
		return errorf(http.StatusNotFound, "cache %s was deleted during the upload", c.Name)
	case err != nil:
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
	sc := bufio.NewScanner(io.LimitReader(s.body(w, r), MaxMissingQuery*(storepath.HashLen+2)+1))
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
