package substitute

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/silo-cache/silo/internal/storepath"
)

// Cache is one binary cache opened as a substituter.
type Cache struct {
	// URI is the cache as Nix names it in messages (getUri): scheme and
	// location without parameters or a final slash ("file://" + path).
	URI string
	// StoreDir is the store directory of the cache's paths (?store=,
	// else the local store's), which its nix-cache-info must agree with.
	StoreDir storepath.Dir
	// Priority orders caches, lower first (?priority=, else
	// nix-cache-info's Priority, else 0).
	Priority int
	// WantMassQuery allows QuerySubstitutablePaths to ask this cache
	// (?want-mass-query=, else nix-cache-info's WantMassQuery).
	WantMassQuery bool
	// Trusted caches (?trusted=true) need no signatures.
	Trusted bool

	t   transport
	key string // the narinfo cache's key: URI, store dir and netrc file

	mu            sync.Mutex
	disabledUntil time.Time
}

// errDisabled is Nix's SubstituterDisabled: the cache failed with
// --fallback and is skipped for a while.
var errDisabled = errors.New("substituter disabled")

// checkEnabled fails while the cache is disabled (Nix's checkEnabled).
func (c *Cache) checkEnabled(s *Session) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.disabledUntil.IsZero() {
		return nil
	}
	if time.Now().After(c.disabledUntil) {
		c.disabledUntil = time.Time{}
		s.debugf("re-enabling binary cache '%s'", c.URI)
		return nil
	}
	return fmt.Errorf("substituter '%s' is disabled: %w", c.URI, errDisabled)
}

// maybeDisable disables the cache for a minute after an error, when the
// client asked for --fallback (Nix's maybeDisable).
func (c *Cache) maybeDisable(s *Session, cfg *Config) {
	if !cfg.TryFallback {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.disabledUntil.IsZero() {
		s.logError(fmt.Errorf("disabling binary cache '%s' for 60 seconds", c.URI))
		c.disabledUntil = time.Now().Add(time.Minute)
	}
}

// cacheParams are the store URI parameters silo reads; the others a
// binary cache store accepts are for writing and ignored here.
var ignoredParams = map[string]bool{
	"compression": true, "write-nar-listing": true, "write-debug-info": true, "index-debug-info": true,
	"secret-key": true, "local-nar-cache": true, "parallel-compression": true, "compression-level": true,
	"path-info-cache-size": true, "system-features": true,
}

// openCache opens a substituter URI: it parses the URI and reads the
// cache's nix-cache-info (remembered per daemon).
func (s *Session) openCache(ctx context.Context, uri string, cfg *Config) (*Cache, error) {
	c, priority, wantMass, err := parseCacheURI(uri, s.store.Dir(), s.log)
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasPrefix(c.URI, "file://"):
		c.t = &fileTransport{dir: strings.TrimPrefix(c.URI, "file://")}
	default:
		c.t = &httpTransport{pool: s.pool, session: s, base: c.URI}
	}
	c.key = c.URI + "\x00" + string(c.StoreDir) + "\x00" + cfg.NetrcFile
	info, err := s.cacheInfo(ctx, c, cfg)
	if err != nil {
		return nil, err
	}
	if info.storeDir != "" && info.storeDir != string(c.StoreDir) {
		return nil, fmt.Errorf("binary cache '%s' is for Nix stores with prefix '%s', not '%s'", c.URI, info.storeDir, c.StoreDir)
	}
	c.Priority, c.WantMassQuery = info.priority, info.wantMassQuery
	if priority != nil {
		c.Priority = *priority
	}
	if wantMass != nil {
		c.WantMassQuery = *wantMass
	}
	return c, nil
}

// parseCacheURI parses a substituter URI as Nix's openStore: parameters
// after "?" ("a=b&c=d", percent-decoded) configure the store.
func parseCacheURI(uri string, local storepath.Dir, log Logger) (c *Cache, priority *int, wantMass *bool, err error) {
	base, query, _ := strings.Cut(uri, "?")
	scheme, rest, ok := strings.Cut(base, "://")
	c = &Cache{StoreDir: local}
	switch {
	case ok && (scheme == "http" || scheme == "https"):
		c.URI = strings.TrimSuffix(base, "/")
		u, err := url.Parse(c.URI)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("invalid substituter URL '%s': %v", uri, err)
		}
		if u.Host == "" {
			return nil, nil, nil, fmt.Errorf("invalid substituter URL '%s': no host", uri)
		}
	case ok && scheme == "file":
		if rest == "" {
			return nil, nil, nil, fmt.Errorf("invalid substituter URL '%s': no directory", uri)
		}
		c.URI = base
	default:
		return nil, nil, nil, fmt.Errorf("silo daemon cannot substitute from '%s': only http://, https:// and file:// binary caches are supported", uri)
	}
	if query == "" {
		return c, nil, nil, nil
	}
	for kv := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		switch k {
		case "store":
			d, err := storepath.NewDir(v)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("substituter '%s': store: %v", uri, err)
			}
			c.StoreDir = d
		case "priority":
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("setting 'priority' has invalid value '%s'", v)
			}
			priority = &n
		case "want-mass-query", "trusted":
			b, err := parseBool(k, v)
			if err != nil {
				return nil, nil, nil, err
			}
			if k == "trusted" {
				c.Trusted = b
			} else {
				wantMass = &b
			}
		default:
			if !ignoredParams[k] {
				log.Warn(fmt.Sprintf("unknown setting '%s'", k))
			}
		}
	}
	return c, priority, wantMass, nil
}

func parseBool(name, v string) (bool, error) {
	switch v {
	case "true", "yes", "1":
		return true, nil
	case "false", "no", "0":
		return false, nil
	}
	return false, fmt.Errorf("Boolean setting '%s' has invalid value '%s'", name, v)
}

// cacheInfo is a cache's nix-cache-info.
type cacheInfo struct {
	storeDir      string
	wantMassQuery bool
	priority      int
}

type cacheInfoEntry struct {
	info cacheInfo
	at   time.Time
}

// cacheInfo reads the cache's nix-cache-info, or remembers it for
// narinfo-cache-positive-ttl. A file:// cache without one is an empty
// cache of the expected store directory (Nix would write one there; silo
// does not write into caches it substitutes from).
func (s *Session) cacheInfo(ctx context.Context, c *Cache, cfg *Config) (cacheInfo, error) {
	p := s.pool
	p.mu.Lock()
	e, ok := p.cacheInfos[c.key]
	p.mu.Unlock()
	if ok && time.Since(e.at) < cfg.PositiveTTL {
		return e.info, nil
	}
	data, err := c.t.getSmall(ctx, "nix-cache-info", 64<<10, cfg)
	var info cacheInfo
	switch {
	case errors.Is(err, errNotFound) && strings.HasPrefix(c.URI, "file://"):
		return cacheInfo{}, nil
	case errors.Is(err, errNotFound):
		return cacheInfo{}, fmt.Errorf("'%s' does not appear to be a binary cache", c.URI)
	case err != nil:
		return cacheInfo{}, err
	}
	if info, err = parseCacheInfo(data); err != nil {
		return cacheInfo{}, fmt.Errorf("binary cache '%s': nix-cache-info: %w", c.URI, err)
	}
	p.mu.Lock()
	p.cacheInfos[c.key] = cacheInfoEntry{info: info, at: time.Now()}
	if len(p.cacheInfos) > 1024 { // a bound against clients naming many caches
		clear(p.cacheInfos)
	}
	p.mu.Unlock()
	return info, nil
}

// parseCacheInfo reads nix-cache-info as Nix's BinaryCacheStore::init:
// "Name: value" lines, unknown names and lines without a colon ignored.
func parseCacheInfo(data []byte) (cacheInfo, error) {
	var info cacheInfo
	for line := range strings.SplitSeq(string(data), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch name {
		case "StoreDir":
			info.storeDir = value
		case "WantMassQuery":
			info.wantMassQuery = value == "1"
		case "Priority":
			n, err := strconv.Atoi(value)
			if err != nil {
				return cacheInfo{}, fmt.Errorf("invalid Priority '%s'", value)
			}
			info.priority = n
		}
	}
	return info, nil
}
