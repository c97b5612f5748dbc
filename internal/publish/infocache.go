package publish

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/storepath"
)

// infoCache keeps recent answers of the store by hash part, with the
// narinfo rendered, so that a path asked for again costs a stat instead of
// two database queries and a signature.
//
// An entry is used only while the path's root on disk is the very inode it
// was when the entry was made (same device, inode and ctime): Nix deletes a
// path's files when it invalidates it, and a path deleted and built again
// is a new inode, so neither is ever answered from the cache. The stat is
// taken before the store is asked, so a change between the two makes the
// entry stale at once rather than wrong. Other changes to a path's record
// (signatures added with nix store sign) show after at most infoTTL.
type infoCache struct {
	mu sync.Mutex
	m  map[string]*cachedInfo
}

type cachedInfo struct {
	info    *localstore.PathInfo
	narinfo []byte
	length  string // of narinfo, for Content-Length
	dev     uint64
	ino     uint64
	ctime   unix.Timespec
	expires time.Time
}

const (
	infoTTL      = 10 * time.Second
	maxInfoCache = 1 << 16
)

// rootStat identifies the current root of a store path on disk.
func rootStat(real string) (unix.Stat_t, bool) {
	var st unix.Stat_t
	err := unix.Lstat(real, &st)
	return st, err == nil
}

// get returns the entry for hash part hp if it still describes the path on
// disk (real gives a path's location on disk), and forgets it otherwise.
func (c *infoCache) get(hp string, now time.Time, real func(storepath.Path) string) *cachedInfo {
	c.mu.Lock()
	e := c.m[hp]
	c.mu.Unlock()
	if e == nil {
		return nil
	}
	if now.After(e.expires) {
		c.forget(hp)
		return nil
	}
	st, ok := rootStat(real(e.info.Path))
	if !ok || st.Dev != e.dev || st.Ino != e.ino || st.Ctim != e.ctime {
		c.forget(hp)
		return nil
	}
	return e
}

func (c *infoCache) put(hp string, e *cachedInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxInfoCache {
		c.m = map[string]*cachedInfo{}
	}
	c.m[hp] = e
}

func (c *infoCache) forget(hp string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, hp)
}
