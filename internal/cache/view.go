package cache

import (
	"context"
	"errors"
	"sync"

	"github.com/silo-cache/silo/internal/meta"
)

// view remembers what requests read most (caches by name, tokens by ID,
// narinfos, found or not) for as long as meta.Version stays the same.
// Every request checks the version first, so a write by any process,
// such as an admin revoking a token, is seen by the next request.
type view struct {
	meta meta.Store
	mu   sync.Mutex
	// gen counts the times the maps were emptied. A lookup stores what it
	// read only if no change was seen since the request's sync: its read
	// may predate the write that emptied the maps.
	gen      uint64
	version  int64
	synced   bool
	caches   map[string]cacheEntry
	tokens   map[string]tokenEntry
	narinfos map[narinfoKey]narinfoEntry
	bytes    int
}

type cacheEntry struct {
	c   meta.Cache
	err error
}

type tokenEntry struct {
	t   meta.Token
	err error
}

type narinfoKey struct {
	cache    int64
	hashPart string
}

type narinfoEntry struct {
	p   meta.Path
	err error
}

// maxViewBytes bounds the narinfo text a view keeps.
const maxViewBytes = 64 << 20

func newView(m meta.Store) *view {
	v := &view{meta: m}
	v.reset()
	return v
}

func (v *view) reset() {
	v.gen++
	v.caches = map[string]cacheEntry{}
	v.tokens = map[string]tokenEntry{}
	v.narinfos = map[narinfoKey]narinfoEntry{}
	v.bytes = 0
}

// sync checks the metadata version, forgetting everything if it changed,
// and returns the generation the request's lookups belong to.
func (v *view) sync(ctx context.Context) (uint64, error) {
	ver, err := v.meta.Version(ctx)
	if err != nil {
		return 0, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.synced || ver != v.version {
		v.reset()
		v.version, v.synced = ver, true
	}
	return v.gen, nil
}

// cacheable reports whether a lookup's result may be remembered: found,
// or definitely absent.
func cacheable(err error) bool { return err == nil || errors.Is(err, meta.ErrNotFound) }

func (v *view) cache(ctx context.Context, gen uint64, name string) (meta.Cache, error) {
	v.mu.Lock()
	e, ok := v.caches[name]
	v.mu.Unlock()
	if ok {
		return e.c, e.err
	}
	c, err := v.meta.Cache(ctx, name)
	if cacheable(err) {
		v.mu.Lock()
		if v.gen == gen {
			v.caches[name] = cacheEntry{c, err}
		}
		v.mu.Unlock()
	}
	return c, err
}

func (v *view) token(ctx context.Context, gen uint64, id string) (meta.Token, error) {
	v.mu.Lock()
	e, ok := v.tokens[id]
	v.mu.Unlock()
	if ok {
		return e.t, e.err
	}
	t, err := v.meta.Token(ctx, id)
	if cacheable(err) {
		v.mu.Lock()
		if v.gen == gen && len(v.tokens) < 100_000 {
			v.tokens[id] = tokenEntry{t, err}
		}
		v.mu.Unlock()
	}
	return t, err
}

func (v *view) path(ctx context.Context, gen uint64, cacheID int64, hashPart string) (meta.Path, error) {
	k := narinfoKey{cacheID, hashPart}
	v.mu.Lock()
	e, ok := v.narinfos[k]
	v.mu.Unlock()
	if ok {
		return e.p, e.err
	}
	p, err := v.meta.Path(ctx, cacheID, hashPart)
	if cacheable(err) {
		v.mu.Lock()
		if v.gen == gen {
			size := len(p.NarInfo) + len(p.StorePath) + len(p.NarHash) + 128
			if v.bytes+size > maxViewBytes {
				v.narinfos = map[narinfoKey]narinfoEntry{}
				v.bytes = 0
			}
			v.narinfos[k] = narinfoEntry{p, err}
			v.bytes += size
		}
		v.mu.Unlock()
	}
	return p, err
}
