package publish

import (
	"net/http"
	"slices"
	"sync"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/signature"
)

// serveNarinfo answers GET and HEAD /<hashpart>.narinfo.
func (s *Server) serveNarinfo(w *statusWriter, r *http.Request, hp string) {
	e := s.lookup(w, r, hp)
	if e == nil {
		return
	}
	h := w.Header()
	h["Content-Type"] = narinfoType
	h["Content-Length"] = []string{e.length}
	h["Cache-Control"] = s.cacheControl(narinfoCacheControl, narinfoPrivateCacheControl)
	w.Write(e.narinfo)
}

// Header values of every narinfo answer, shared: net/http only reads them
// (and an append would copy: each slice is full).
var (
	narinfoType = []string{"text/x-nix-narinfo"}
	// Short: a path may be deleted, or deleted and built again differently.
	narinfoCacheControl        = []string{"public, max-age=60"}
	narinfoPrivateCacheControl = []string{"private, max-age=60"}
)

// narinfo returns the narinfo for info: NAR URL in nix-serve's form
// (nar/<hashpart>-<narhash>.nar, plus .zst when compressed URLs are
// advertised), the store's own signatures and one per configured key.
func (s *Server) narinfo(info *localstore.PathInfo) *narinfo.NarInfo {
	ni := &narinfo.NarInfo{
		StorePath:   info.Path,
		URL:         narURL(info, s.opts.Compression == "zstd"),
		Compression: s.opts.Compression,
		NarHash:     info.NarHash,
		NarSize:     info.NarSize,
		References:  info.References,
		Deriver:     info.Deriver,
		Sigs:        slices.Clone(info.Sigs),
		CA:          info.CA,
	}
	if len(s.opts.Keys) > 0 {
		fp := ni.Fingerprint()
		for _, sig := range s.sigs.get(fp, s.opts.Keys) {
			if !slices.ContainsFunc(ni.Sigs, sig.Equal) {
				ni.Sigs = append(ni.Sigs, sig)
			}
		}
	}
	return ni
}

// narURL is the URL of info's NAR relative to the cache.
func narURL(info *localstore.PathInfo, zstd bool) string {
	u := "nar/" + info.Path.HashPart() + "-" + info.NarHash.Nix32() + ".nar"
	if zstd {
		u += ".zst"
	}
	return u
}

// sigCache remembers the signatures made for a fingerprint, so that a
// narinfo asked for again costs no ed25519 signing. A fingerprint names the
// path, its NAR hash and size and its references, so a cached signature is
// never stale. The cache is dropped whole when it fills.
type sigCache struct {
	mu sync.Mutex
	m  map[string][]signature.Signature
}

const sigCacheSize = 1 << 16

func newSigCache() *sigCache { return &sigCache{m: map[string][]signature.Signature{}} }

func (c *sigCache) get(fingerprint string, keys []signature.SecretKey) []signature.Signature {
	c.mu.Lock()
	sigs, ok := c.m[fingerprint]
	c.mu.Unlock()
	if ok {
		return sigs
	}
	sigs = make([]signature.Signature, len(keys))
	for i, k := range keys {
		sigs[i] = k.Sign(fingerprint)
	}
	c.mu.Lock()
	if len(c.m) >= sigCacheSize {
		clear(c.m)
	}
	c.m[fingerprint] = sigs
	c.mu.Unlock()
	return sigs
}
