package substitute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

// SubstitutableInfo is what a cache says about a path it has (Nix's
// SubstitutablePathInfo), with paths in the local store directory.
type SubstitutableInfo struct {
	Deriver      storepath.Path // zero if unknown
	References   []storepath.Path
	DownloadSize uint64 // the compressed NAR's size, 0 if unknown
	NarSize      uint64
}

// queryInfo fetches the narinfo of p (a path in c's store directory)
// from c, or from the daemon's narinfo cache. It returns nil if c does
// not have p (or names another path under p's hash part).
func (s *Session) queryInfo(ctx context.Context, c *Cache, p storepath.Path, cfg *Config) (*narinfo.NarInfo, error) {
	if err := c.checkEnabled(s); err != nil {
		return nil, err
	}
	key := c.key + "\x00" + p.HashPart()
	ni, ok := s.pool.infos.get(key, cfg)
	if !ok {
		act := s.log.StartActivity(worker.LvlTalkative, worker.ActQueryPath,
			fmt.Sprintf("querying info about '%s' on '%s'", p, c.URI),
			[]worker.Field{worker.StrField(p.String()), worker.StrField(c.URI)}, 0)
		data, err := c.t.getSmall(ctx, p.HashPart()+".narinfo", narinfo.MaxSize, cfg)
		s.log.StopActivity(act)
		switch {
		case errors.Is(err, errNotFound):
			ni = nil
		case err != nil:
			if ctx.Err() == nil {
				c.maybeDisable(s, cfg)
			}
			return nil, err
		default:
			if ni, err = narinfo.Parse(c.StoreDir, bytes.NewReader(data)); err != nil {
				return nil, fmt.Errorf("NAR info file '%s' of binary cache '%s' is corrupt: %w", p.HashPart()+".narinfo", c.URI, err)
			}
		}
		s.pool.infos.put(key, ni)
	}
	// Nix's goodStorePath: the narinfo must be about the path asked for.
	if ni == nil || ni.StorePath.HashPart() != p.HashPart() || ni.StorePath.Name() != p.Name() {
		return nil, nil
	}
	return ni, nil
}

// localInfo converts a cache's narinfo into the path info to add locally
// as path (in the local store). Ultimate is dropped, as copyStorePath does.
func localInfo(ni *narinfo.NarInfo, path storepath.Path) (*nixstore.PathInfo, error) {
	dir := path.Dir()
	info := &nixstore.PathInfo{Path: path, NarHash: ni.NarHash, NarSize: ni.NarSize, CA: ni.CA}
	for _, r := range ni.References {
		lr, err := dir.ParseBase(r.Base())
		if err != nil {
			return nil, err
		}
		if r == ni.StorePath {
			lr = path
		}
		info.References = append(info.References, lr)
	}
	slices.SortFunc(info.References, storepath.Compare)
	info.References = slices.Compact(info.References)
	if !ni.Deriver.IsZero() {
		d, err := dir.ParseBase(ni.Deriver.Base())
		if err != nil {
			return nil, err
		}
		info.Deriver = d
	}
	for _, sig := range ni.Sigs {
		info.Sigs = append(info.Sigs, sig.String())
	}
	return info, nil
}

// untrusted reports whether info would be refused for lacking a valid
// signature (Nix's pathInfoIsUntrusted): require-sigs is on, and it is
// neither content-addressed nor signed by a trusted key.
func untrusted(info *nixstore.PathInfo, requireSigs bool, keys *signature.KeySet) bool {
	if !requireSigs || info.ContentAddressed() {
		return false
	}
	var sigs []signature.Signature
	for _, t := range info.Sigs {
		if sig, err := signature.ParseSignature(t); err == nil {
			sigs = append(sigs, sig)
		}
	}
	return !keys.Verify(info.Fingerprint(), sigs)
}

// pathIn returns the path under which cache c would hold local path p:
// for a content address (ca), the path computed in c's store directory,
// so that a cache of another store directory can serve it; else p if c
// has the local store directory, else ok is false.
func pathIn(c *Cache, p storepath.Path, ca string) (sub storepath.Path, ok bool, err error) {
	if ca != "" {
		a, err := narinfo.ParseCA(ca)
		if err != nil {
			return storepath.Path{}, false, fmt.Errorf("content address of '%s': %w", p, err)
		}
		sub, err := a.Path(c.StoreDir, p.Name(), nil, storepath.Path{})
		if err != nil {
			return storepath.Path{}, false, err
		}
		return sub, true, nil
	}
	if c.StoreDir != p.Dir() {
		return storepath.Path{}, false, nil
	}
	return p, true, nil
}

// acceptInfo checks a narinfo c returned for sub against local path p,
// as PathSubstitutionGoal: a path of another store directory is accepted
// only if it is content-addressed without references.
func acceptInfo(c *Cache, ni *narinfo.NarInfo, p storepath.Path) (*nixstore.PathInfo, error) {
	if c.StoreDir == p.Dir() {
		return localInfo(ni, p)
	}
	remote, err := localInfo(ni, ni.StorePath)
	if err != nil {
		return nil, err
	}
	if !remote.ContentAddressed() || len(ni.References) > 0 {
		return nil, fmt.Errorf("asked '%s' for '%s' but got '%s'", c.URI, p, ni.StorePath)
	}
	return localInfo(ni, p)
}

// QuerySubstitutablePathInfos asks the caches, in order, about paths (a
// map of path to content address, "" if none), as Nix's
// querySubstitutablePathInfos: the first cache having a path answers for
// it. A cache error fails the query, unless the client asked for
// --fallback (then it is logged and the cache skipped).
func (s *Session) QuerySubstitutablePathInfos(ctx context.Context, paths map[storepath.Path]string) (map[storepath.Path]*SubstitutableInfo, error) {
	out := map[storepath.Path]*SubstitutableInfo{}
	cfg := s.config()
	for _, c := range s.Caches(ctx) {
		var todo []storepath.Path
		for p := range paths {
			if out[p] == nil {
				todo = append(todo, p)
			}
		}
		slices.SortFunc(todo, storepath.Compare)
		var mu sync.Mutex
		err := parallel(ctx, cfg.httpConnections(), len(todo), func(i int) error {
			p := todo[i]
			sub, ok, err := pathIn(c, p, paths[p])
			if err != nil || !ok {
				return err
			}
			if sub != p {
				s.debugf("replaced path '%s' with '%s' for substituter '%s'", p, sub, c.URI)
			}
			s.debugf("checking substituter '%s' for path '%s'", c.URI, sub)
			ni, err := s.queryInfo(ctx, c, sub, &cfg)
			if err != nil {
				if errors.Is(err, errDisabled) {
					return nil
				}
				if cfg.TryFallback && ctx.Err() == nil {
					s.logError(err)
					return nil
				}
				return err
			}
			if ni == nil {
				return nil
			}
			info, err := acceptInfo(c, ni, p)
			if err != nil {
				return nil // another store's path that is not plain content
			}
			mu.Lock()
			out[p] = &SubstitutableInfo{Deriver: info.Deriver, References: info.References, DownloadSize: ni.FileSize, NarSize: ni.NarSize}
			mu.Unlock()
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// QuerySubstitutablePaths returns those of paths that a cache of the
// local store directory with want-mass-query has, as Nix's
// querySubstitutablePaths.
func (s *Session) QuerySubstitutablePaths(ctx context.Context, paths []storepath.Path) ([]storepath.Path, error) {
	cfg := s.config()
	remaining := slices.Clone(paths)
	var res []storepath.Path
	for _, c := range s.Caches(ctx) {
		if len(remaining) == 0 {
			break
		}
		if c.StoreDir != s.store.Dir() || !c.WantMassQuery {
			continue
		}
		have := make([]bool, len(remaining))
		err := parallel(ctx, cfg.httpConnections(), len(remaining), func(i int) error {
			ni, err := s.queryInfo(ctx, c, remaining[i], &cfg)
			if errors.Is(err, errDisabled) {
				return nil
			}
			have[i] = ni != nil
			return err
		})
		if err != nil {
			return nil, err
		}
		var next []storepath.Path
		for i, p := range remaining {
			if have[i] {
				res = append(res, p)
			} else {
				next = append(next, p)
			}
		}
		remaining = next
	}
	slices.SortFunc(res, storepath.Compare)
	return res, nil
}

// parallel runs f(0..n-1) on up to k goroutines; the first error is
// returned (the others still finish).
func parallel(ctx context.Context, k, n int, f func(i int) error) error {
	if n == 0 {
		return nil
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  int
	)
	for range min(k, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := first != nil || ctx.Err() != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
