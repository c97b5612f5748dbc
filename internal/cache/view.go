package cache

import (
	"context"
	"errors"
	"strconv"
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
	gen     uint64
	version int64
	synced  bool
	// Version checks: started counts the checks begun, checking says
	// whether one is in flight, and last is the outcome of the latest to
	// finish. checked is signalled when one finishes.
	started  uint64
	checking bool
	last     checkResult
	checked  sync.Cond
	caches   map[string]cacheEntry
	tokens   map[string]tokenEntry
	narinfos map[narinfoKey]narinfoEntry
	nars     map[narinfoKey]narEntry // by cache and blob key
	bytes    int
}

type narEntry struct {
	n   meta.NAR
	err error
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
	p      meta.Path
	length []string // Content-Length header value of p.NarInfo
	err    error
}

// maxViewBytes bounds the narinfo text a view keeps.
const maxViewBytes = 64 << 20

// Misses are remembered only for short keys and up to maxMisses of each
// kind, so that requests for made-up names cost no lasting memory.
const (
	maxMissKey = 128
	maxMisses  = 4096
)

// remember reports whether a lookup of key that ended in err should be
// kept in a map that holds n entries (cap for hits).
func remember(err error, key string, n, cap int) bool {
	if err == nil {
		return n < cap
	}
	return errors.Is(err, meta.ErrNotFound) && len(key) <= maxMissKey && n < maxMisses
}

func newView(m meta.Store) *view {
	v := &view{meta: m}
	v.checked.L = &v.mu
	v.reset()
	return v
}

func (v *view) reset() {
	v.gen++
	v.caches = map[string]cacheEntry{}
	v.tokens = map[string]tokenEntry{}
	v.narinfos = map[narinfoKey]narinfoEntry{}
	v.nars = map[narinfoKey]narEntry{}
	v.bytes = 0
}

// sync checks the metadata version, forgetting everything if it changed,
// and returns the generation the request's lookups belong to.
//
// Concurrent requests share checks: a request waits for a check that
// began after it arrived (that check sees every write committed before
// the request), and starts one itself if none is in flight. Under load
// this makes one version query serve many requests, without ever
// answering from a check older than the request.
func (v *view) sync(ctx context.Context) (uint64, error) {
	v.mu.Lock()
	// Any check numbered above those begun so far starts after now.
	want := v.started + 1
	for v.checking && v.last.seq < want {
		v.checked.Wait()
	}
	if v.last.seq >= want {
		r := v.last
		v.mu.Unlock()
		return r.gen, r.err
	}
	v.started++
	seq := v.started
	v.checking = true
	v.mu.Unlock()
	ver, err := v.meta.Version(ctx)
	v.mu.Lock()
	if err == nil && (!v.synced || ver != v.version) {
		v.reset()
		v.version, v.synced = ver, true
	}
	r := checkResult{seq: seq, gen: v.gen, err: err}
	v.last = r
	v.checking = false
	v.checked.Broadcast()
	v.mu.Unlock()
	return r.gen, r.err
}

// checkResult is the outcome of one meta.Version check.
type checkResult struct {
	seq uint64 // the check's number, from view.started
	gen uint64
	err error
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
		if v.gen == gen && remember(err, name, len(v.caches), 100_000) {
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
		if v.gen == gen && remember(err, id, len(v.tokens), 100_000) {
			v.tokens[id] = tokenEntry{t, err}
		}
		v.mu.Unlock()
	}
	return t, err
}

// path returns the cache's path with the hash part, and the length of its
// narinfo text as a Content-Length header value.
func (v *view) path(ctx context.Context, gen uint64, cacheID int64, hashPart string) (meta.Path, []string, error) {
	k := narinfoKey{cacheID, hashPart}
	v.mu.Lock()
	e, ok := v.narinfos[k]
	v.mu.Unlock()
	if ok {
		return e.p, e.length, e.err
	}
	p, err := v.meta.Path(ctx, cacheID, hashPart)
	length := []string{strconv.Itoa(len(p.NarInfo))}
	if cacheable(err) {
		v.mu.Lock()
		if v.gen == gen {
			size := len(p.NarInfo) + len(p.StorePath) + len(p.NarHash) + 128
			if v.bytes+size > maxViewBytes {
				v.narinfos = map[narinfoKey]narinfoEntry{}
				v.bytes = 0
			}
			v.narinfos[k] = narinfoEntry{p, length, err}
			v.bytes += size
		}
		v.mu.Unlock()
	}
	return p, length, err
}

func (v *view) servedNAR(ctx context.Context, gen uint64, cacheID int64, blobKey string) (meta.NAR, error) {
	k := narinfoKey{cacheID, blobKey}
	v.mu.Lock()
	e, ok := v.nars[k]
	v.mu.Unlock()
	if ok {
		return e.n, e.err
	}
	n, err := v.meta.ServedNAR(ctx, cacheID, blobKey)
	if cacheable(err) {
		v.mu.Lock()
		if v.gen == gen && remember(err, blobKey, len(v.nars), 100_000) {
			v.nars[k] = narEntry{n, err}
		}
		v.mu.Unlock()
	}
	return n, err
}
