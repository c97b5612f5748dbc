// Package push copies store paths from the local Nix store to a binary
// cache: a silo server, any Nix HTTP cache that accepts PUT, or a file://
// directory.
//
// Invariants: a narinfo is uploaded only after its NAR, and only after the
// narinfos of all its references that this push uploads, so a cache never
// names a path whose NAR or references it lacks (Nix's order). NARs stream
// from the store through zstd to the cache. To a silo server (which
// verifies every NAR itself) they stream chunked as they compress, named
// by NarHash, with no FileHash in the narinfo; to other caches a NAR is
// held in memory only up to a few MiB, beyond that in an unlinked
// temporary file, never whole in memory, and is named by its FileHash.
// A NAR that differs from the Nix database's NarHash is never named by a
// narinfo: push hashes it as it is read (a silo server does so itself and
// refuses the narinfo). An interrupted push leaves no narinfo for a path whose upload
// did not complete. Push never writes to the local store.
package push

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// DefaultUpstreamKeys is trusted by default to sign paths that need no
// pushing: whoever can reach the cache can reach cache.nixos.org.
const DefaultUpstreamKeys = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="

// DefaultJobs is how many paths upload at once unless told otherwise.
const DefaultJobs = 8

// Options configures Push.
type Options struct {
	Store    localstore.Store
	Uploader *Uploader
	// Jobs bounds the paths uploading at once; 0 means DefaultJobs.
	Jobs int
	// SkipSignedBy: paths carrying a valid signature by one of these keys
	// are left out (clients substitute them from upstream). Nil skips none.
	SkipSignedBy *signature.KeySet
	// Progress receives events; nil means none.
	Progress Progress
}

// Progress is told what a push does. Its methods may be called from
// several goroutines at once.
type Progress interface {
	// Planned is called once the paths to upload are known.
	Planned(r Result, toUpload []*localstore.PathInfo)
	// NarBytes is called as NAR bytes are read and compressed.
	NarBytes(n int64)
	// Uploaded is called after a path's narinfo is uploaded, or with err
	// after its upload failed.
	Uploaded(info *localstore.PathInfo, ni *narinfo.NarInfo, err error)
}

// Result counts what a push did.
type Result struct {
	Closure        int    // paths in the closure of the roots
	SignedUpstream int    // left out: signed by a SkipSignedBy key
	Present        int    // already in the cache
	Uploaded       int    // uploaded by this push
	Failed         int    // failed, or not uploaded because a reference failed
	NarBytes       uint64 // NAR size of the uploaded paths
	FileBytes      uint64 // compressed size of the uploaded paths
}

// Push uploads the closure of roots to the Uploader's target, except paths
// the target has and paths signed upstream.
func Push(ctx context.Context, roots []storepath.Path, opts Options) (Result, error) {
	var res Result
	if len(roots) == 0 {
		return res, nil
	}
	u := opts.Uploader
	if err := u.Target.Init(ctx, roots[0].Dir()); err != nil {
		return res, fmt.Errorf("cache %s: %w", u.Target, err)
	}
	closure, err := localstore.Closure(ctx, opts.Store, roots)
	if err != nil {
		return res, err
	}
	res.Closure = len(closure)

	var candidates []*localstore.PathInfo
	skipped := map[storepath.Path]bool{}
	for _, info := range closure {
		if SignedBy(info, opts.SkipSignedBy) {
			res.SignedUpstream++
			skipped[info.Path] = true
			continue
		}
		candidates = append(candidates, info)
	}
	hashParts := make([]string, len(candidates))
	for i, info := range candidates {
		hashParts[i] = info.Path.HashPart()
	}
	missing, err := u.Target.Missing(ctx, hashParts)
	if err != nil {
		return res, fmt.Errorf("ask %s which paths it lacks: %w", u.Target, err)
	}
	lacks := make(map[string]bool, len(missing))
	for _, h := range missing {
		lacks[h] = true
	}
	var todo []*localstore.PathInfo
	for _, info := range candidates {
		if lacks[info.Path.HashPart()] {
			todo = append(todo, info)
		}
	}
	res.Present = len(candidates) - len(todo)
	if opts.Progress != nil {
		opts.Progress.Planned(res, todo)
	}

	up := uploadAll(ctx, u, todo, skipped, opts)
	res.Uploaded, res.Failed, res.NarBytes, res.FileBytes = up.uploaded, up.failed, up.narBytes, up.fileBytes
	if up.firstErr != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("push interrupted after %d of %d paths: %w", res.Uploaded, len(todo), ctx.Err())
		}
		return res, fmt.Errorf("%d of %d paths failed to upload; first: %w", res.Failed, len(todo), up.firstErr)
	}
	return res, nil
}

// SignedBy reports whether info carries a valid signature by a key in ks.
func SignedBy(info *localstore.PathInfo, ks *signature.KeySet) bool {
	if ks == nil || len(info.Sigs) == 0 {
		return false
	}
	return ks.Verify(narinfo.Fingerprint(info.Path, info.NarHash, info.NarSize, info.References), info.Sigs)
}

type uploadState struct {
	mu                  sync.Mutex
	uploaded, failed    int
	narBytes, fileBytes uint64
	firstErr            error
}

// uploadAll uploads todo (in dependency order) with bounded parallelism.
// NARs upload in any order; a narinfo waits for its references' narinfos.
func uploadAll(ctx context.Context, u *Uploader, todo []*localstore.PathInfo, skipped map[storepath.Path]bool, opts Options) *uploadState {
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = DefaultJobs
	}
	type pathState struct {
		done chan struct{}
		ok   bool
	}
	states := make(map[storepath.Path]*pathState, len(todo))
	for _, info := range todo {
		states[info.Path] = &pathState{done: make(chan struct{})}
	}
	st := &uploadState{}
	var narBytes func(int64)
	if opts.Progress != nil {
		narBytes = opts.Progress.NarBytes
	}

	one := func(info *localstore.PathInfo) (*narinfo.NarInfo, error) {
		ni, err := u.UploadNAR(ctx, info, narBytes)
		if err != nil {
			return nil, err
		}
		for _, r := range info.References {
			ps, ours := states[r]
			if !ours || r == info.Path {
				continue
			}
			select {
			case <-ps.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if !ps.ok {
				return nil, fmt.Errorf("%s not uploaded: its reference %s failed", info.Path, r)
			}
		}
		err = u.PutNarInfo(ctx, ni)
		if err != nil {
			for _, r := range info.References {
				if skipped[r] {
					// A cache that insists on holding every reference (silo
					// serve does) refuses paths whose references stay upstream.
					return nil, fmt.Errorf("%w (its reference %s was left out as signed upstream; if the cache requires every reference, push with --skip-signed-by none)", err, r)
				}
			}
		}
		return ni, err
	}

	work := make(chan *localstore.PathInfo)
	var wg sync.WaitGroup
	for range min(jobs, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for info := range work {
				ni, err := one(info)
				ps := states[info.Path]
				ps.ok = err == nil
				close(ps.done)
				st.mu.Lock()
				if err != nil {
					st.failed++
					if st.firstErr == nil || errors.Is(st.firstErr, context.Canceled) {
						st.firstErr = err
					}
				} else {
					st.uploaded++
					st.narBytes += ni.NarSize
					st.fileBytes += ni.FileSize
				}
				st.mu.Unlock()
				if opts.Progress != nil {
					opts.Progress.Uploaded(info, ni, err)
				}
			}
		}()
	}
	for _, info := range todo {
		if ctx.Err() != nil {
			break
		}
		work <- info
	}
	close(work)
	wg.Wait()
	if ctx.Err() != nil && st.firstErr == nil {
		st.firstErr = ctx.Err()
	}
	return st
}
