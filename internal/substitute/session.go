package substitute

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

// Store is the local store substitutes go into; *nixstore.Store is one.
type Store interface {
	Dir() storepath.Dir
	// RealStoreDir is where the store's paths are on disk (the key of
	// in-flight downloads shared between connections).
	RealStoreDir() string
	IsValid(ctx context.Context, p storepath.Path) (bool, error)
	AddTempRoot(ctx context.Context, p storepath.Path) error
	// AddToStoreNar verifies and adds one path whose references are
	// valid (see nixstore.Store.AddToStoreNar).
	AddToStoreNar(ctx context.Context, info *nixstore.PathInfo, nar io.Reader, o nixstore.AddOptions) error
}

var _ Store = (*nixstore.Store)(nil)

// Logger is the client's log channel: what a substitution shows, as Nix's
// logger calls. The daemon's connection implements it; methods are called
// from several goroutines at once.
type Logger interface {
	// Log sends a message at a verbosity level (filtered by the client's).
	Log(level uint64, msg string)
	// Warn sends a warning (Nix's "warning: " prefix is the Logger's).
	Warn(msg string)
	StartActivity(level, typ uint64, text string, fields []worker.Field, parent uint64) uint64
	StopActivity(id uint64)
	Result(id, typ uint64, fields []worker.Field)
}

// errorPrefix is how Nix shows an error it logs (logError, printError of
// an Error's what()).
const errorPrefix = "\x1b[31;1merror:\x1b[0m "

// PoolOptions configure a Pool. The zero value is usable.
type PoolOptions struct {
	// Jobs bounds concurrent NAR downloads in the daemon (0 means 4: on
	// two cores more only add decompression windows to memory).
	// Nix 2.8 runs substitutions in max-jobs build slots; silo runs them
	// beside builds, as later Nix does with max-substitution-jobs.
	Jobs int
	// MaxInfos bounds the narinfo cache (0 means 16384 entries).
	MaxInfos int
	// Transport, if set, replaces the HTTP transport (tests).
	Transport http.RoundTripper
}

// Pool is the daemon-wide part of substitution: HTTP connections, the
// narinfo cache and downloads in flight. It is safe for concurrent use.
type Pool struct {
	opts  PoolOptions
	jobs  chan struct{}
	infos *infoCache

	mu         sync.Mutex
	transports map[time.Duration]http.RoundTripper // by connect timeout
	cacheInfos map[string]cacheInfoEntry           // nix-cache-info by cache key
	flights    map[string]*flight                  // downloads by real path
}

// NewPool returns a Pool.
func NewPool(o PoolOptions) *Pool {
	if o.Jobs <= 0 {
		o.Jobs = 4
	}
	if o.MaxInfos <= 0 {
		o.MaxInfos = 16384
	}
	return &Pool{opts: o, jobs: make(chan struct{}, o.Jobs), infos: newInfoCache(o.MaxInfos),
		transports: map[time.Duration]http.RoundTripper{}, cacheInfos: map[string]cacheInfoEntry{},
		flights: map[string]*flight{}}
}

// Close releases idle HTTP connections.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.transports {
		if ci, ok := t.(interface{ CloseIdleConnections() }); ok {
			ci.CloseIdleConnections()
		}
	}
}

// transport returns the shared HTTP transport for a connect timeout.
func (p *Pool) transport(connect time.Duration) http.RoundTripper {
	if p.opts.Transport != nil {
		return p.opts.Transport
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.transports[connect]; ok {
		return t
	}
	d := &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         d.DialContext,
		TLSHandshakeTimeout: connect,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        100,
		MaxIdleConnsPerHost: 25,
		IdleConnTimeout:     90 * time.Second,
		// NARs are compressed already, and a transparently gunzipped
		// body could not be resumed at an offset.
		DisableCompression: true,
	}
	p.transports[connect] = t
	return t
}

// flight is a download in progress; done is closed when it ends.
type flight struct{ done chan struct{} }

// join registers a download of key: it returns (nil, release) to the one
// that should download, or (f, nil) to wait for f.done, after which the
// waiter re-checks validity.
func (p *Pool) join(key string) (*flight, func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.flights[key]; ok {
		return f, nil
	}
	f := &flight{done: make(chan struct{})}
	p.flights[key] = f
	return nil, func() {
		p.mu.Lock()
		delete(p.flights, key)
		p.mu.Unlock()
		close(f.done)
	}
}

// Session is one connection's substitution: its store, its log channel,
// its settings and its list of opened caches. It is safe for concurrent
// use.
type Session struct {
	pool  *Pool
	store Store
	log   Logger

	mu     sync.Mutex
	cfg    Config
	opened bool
	caches []*Cache
	keys   *signature.KeySet
}

// NewSession returns a connection's Session. Call Configure before use.
func (p *Pool) NewSession(store Store, log Logger) *Session {
	return &Session{pool: p, store: store, log: log}
}

// Configure sets the connection's current settings. The substituters and
// trusted keys of the first Configure before first use are kept (see the
// package doc); the rest applies from now on.
func (s *Session) Configure(c Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = c
}

// Started reports whether the session has opened its caches (and so
// fixed its substituters and trusted keys).
func (s *Session) Started() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened
}

func (s *Session) config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Caches returns the connection's substituters, opened on first use
// (their nix-cache-info read), sorted by priority; one that cannot be
// opened is left out with a warning, as Nix does. With substitute off
// there are none.
func (s *Session) Caches(ctx context.Context) []*Cache {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cfg.UseSubstitutes {
		return nil
	}
	if s.opened {
		return s.caches
	}
	s.opened = true
	s.keys = s.cfg.TrustedKeys
	if s.keys == nil {
		s.keys = signature.NewKeySet()
	}
	seen := map[string]bool{}
	for _, uri := range s.cfg.Substituters {
		if seen[uri] {
			continue
		}
		seen[uri] = true
		c, err := s.openCache(ctx, uri, &s.cfg)
		if err != nil {
			s.log.Warn(err.Error())
			continue
		}
		s.caches = append(s.caches, c)
	}
	slices.SortStableFunc(s.caches, func(a, b *Cache) int { return a.Priority - b.Priority })
	return s.caches
}

func (s *Session) trustedKeys() *signature.KeySet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys
}

// logError logs err as Nix's logError/printError of an Error.
func (s *Session) logError(err error) { s.log.Log(worker.LvlError, errorPrefix+err.Error()) }

func (s *Session) debugf(format string, a ...any) {
	s.log.Log(worker.LvlDebug, fmt.Sprintf(format, a...))
}
