package substitute

import (
	"os"
	"sync"
	"time"

	"github.com/silo-cache/silo/internal/narinfo"
)

// infoCache remembers narinfo lookups for a daemon (Nix's in-memory
// pathInfoCache and its on-disk narinfo cache, in one bounded map). An
// entry is used only within the asking connection's TTL.
type infoCache struct {
	mu    sync.Mutex
	max   int
	m     map[string]infoEntry
	order []string // insertion order, for eviction
}

type infoEntry struct {
	ni *narinfo.NarInfo // nil: the cache does not have it
	at time.Time
}

func newInfoCache(max int) *infoCache { return &infoCache{max: max, m: map[string]infoEntry{}} }

// get returns the entry for key if it is younger than its TTL.
func (c *infoCache) get(key string, cfg *Config) (ni *narinfo.NarInfo, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return nil, false
	}
	ttl := cfg.NegativeTTL
	if e.ni != nil {
		ttl = cfg.PositiveTTL
	}
	if time.Since(e.at) >= ttl {
		return nil, false
	}
	return e.ni, true
}

func (c *infoCache) put(key string, ni *narinfo.NarInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok {
		c.order = append(c.order, key)
	}
	c.m[key] = infoEntry{ni: ni, at: time.Now()}
	for len(c.m) > c.max && len(c.order) > 0 {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
	if cap(c.order) > 4*c.max { // let the slice's front be collected
		c.order = append([]string(nil), c.order...)
	}
}

func statFile(name string) (time.Time, error) {
	st, err := os.Stat(name)
	if err != nil {
		return time.Time{}, err
	}
	return st.ModTime(), nil
}
