// Package cache is silo's binary cache HTTP server: the protocol Nix
// speaks to http:// substituters and `nix copy --to`, for several caches
// at /<cache>/, on top of a meta.Store and a blob.Store.
//
// Invariants:
//   - Nothing is visible before it is verified. A NAR upload is
//     decompressed, parsed strictly and hashed while it streams, and stored
//     only as a staged upload; a path appears only when its narinfo arrives
//     and matches a verified upload (NarHash, NarSize, FileHash, FileSize),
//     names this cache's hash part, and its references are already in the
//     cache. Anything else is a 4xx whose body says what did not match.
//   - Narinfos served describe what is served: the stored file's URL,
//     compression, hash and size, the uploader's signatures and the
//     cache's own.
//   - Every request first checks meta.Version; caches, tokens and
//     narinfos remembered from earlier requests are dropped when it
//     changed, so admin commands (token revoke, cache delete) take effect
//     on the next request. A private cache answers 401 to every
//     unauthenticated request, existing path or not.
//   - One server per metadata store (silo serve locks its data directory).
//   - Only the garbage collector deletes NARs and blobs, holding gcMu
//     exclusively; uploads hold it shared from the moment they find or
//     store a NAR until their record is written.
package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/meta"
)

// Options configure a Server. Zero values mean the documented defaults.
type Options struct {
	Meta  meta.Store // required
	Blobs blob.Store // required
	// Compression is how NARs are stored and served: zstd (default), xz or none.
	Compression string
	// CompressionLevel is passed to the compressor; 0 is its default.
	CompressionLevel int
	// MaxNARSize bounds an uploaded NAR file's size; 0 means no limit.
	MaxNARSize int64
	// MaxUploads bounds the NAR uploads verified at once; more wait their
	// turn. 0 means 4 per CPU.
	MaxUploads int
	// UploadIdleTimeout ends an upload whose client sends nothing for this
	// long; 0 means 2 minutes.
	UploadIdleTimeout time.Duration
	// UploadTTL is how long a verified NAR upload waits for its narinfo
	// before the garbage collector drops it; 0 means 24 hours.
	UploadTTL time.Duration
	// RequireClosure refuses a narinfo whose references are not already in
	// the cache. Off by default: like Nix's own binary caches (and attic,
	// cachix), a cache may hold a path whose dependencies come from an
	// upstream cache such as cache.nixos.org, which silo push skips.
	RequireClosure bool
	// Logger receives request logs; nil means slog.Default().
	Logger *slog.Logger
	// Registry receives the server's metrics; nil means a new registry.
	Registry *prometheus.Registry
}

// Server serves the caches. It is an http.Handler.
type Server struct {
	opts    Options
	meta    meta.Store
	blobs   blob.Store
	log     *slog.Logger
	metrics *metrics
	view    *view
	uploads chan struct{} // semaphore of MaxUploads
	ids     *requestIDs
	gcMu    sync.RWMutex
	now     func() time.Time
}

// New returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Meta == nil || opts.Blobs == nil {
		return nil, errors.New("cache server: Meta and Blobs are required")
	}
	if opts.Compression == "" {
		opts.Compression = compress.Zstd
	}
	if _, err := compress.ParseStored(opts.Compression); err != nil {
		return nil, err
	}
	if opts.MaxUploads <= 0 {
		opts.MaxUploads = 4 * runtime.GOMAXPROCS(0)
	}
	if opts.UploadIdleTimeout == 0 {
		opts.UploadIdleTimeout = 2 * time.Minute
	}
	if opts.UploadTTL == 0 {
		opts.UploadTTL = 24 * time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	s := &Server{opts: opts, meta: opts.Meta, blobs: opts.Blobs, log: opts.Logger, now: time.Now,
		uploads: make(chan struct{}, opts.MaxUploads), ids: newRequestIDs()}
	s.metrics = newMetrics(opts.Registry, opts.Meta)
	s.view = newView(opts.Meta)
	return s, nil
}

// httpError is an error with the status and plain-text message a client gets.
type httpError struct {
	status int
	msg    string
	err    error // logged, not shown
}

func (e *httpError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *httpError) Unwrap() error { return e.err }

func errorf(status int, format string, a ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, a...)}
}

// internal wraps an unexpected error as a 500 (or 507 for a full store).
func internal(what string, err error) *httpError {
	switch {
	case errors.Is(err, blob.ErrFull):
		return &httpError{status: http.StatusInsufficientStorage, msg: what + ": the server's storage is full", err: err}
	case errors.Is(err, context.Canceled):
		return &httpError{status: 499, msg: what + ": request cancelled", err: err}
	}
	return &httpError{status: http.StatusInternalServerError, msg: what + ": internal error (see the server log)", err: err}
}

func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		he = internal("request failed", err)
	}
	if he.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="silo"`)
	}
	setLogError(r, err)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Del("Content-Length")
	w.Header().Del("Content-Encoding")
	status := he.status
	if status == 499 {
		status = http.StatusBadRequest
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		fmt.Fprintln(w, he.msg)
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.logged(w, r, s.route)
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) (string, error) {
	p := r.URL.Path
	switch p {
	case "/healthz":
		return "healthz", s.healthz(w, r)
	case "/metrics":
		s.metrics.handler.ServeHTTP(w, r)
		return "metrics", nil
	case "/", "":
		return "root", s.root(w, r)
	}
	name, rest, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	kind, handle := s.handlerFor(r.Method, rest)
	if handle == nil {
		return kind, errorf(http.StatusNotFound, "no such endpoint: %s %s", r.Method, p)
	}
	if err := ValidCacheName(name); err != nil {
		return kind, errorf(http.StatusNotFound, "no cache named %q", name)
	}
	gen, err := s.view.sync(r.Context())
	if err != nil {
		return kind, internal("read metadata version", err)
	}
	infoOf(r).gen = gen
	c, err := s.view.cache(r.Context(), gen, name)
	if errors.Is(err, meta.ErrNotFound) {
		return kind, errorf(http.StatusNotFound, "no cache named %q on this server (create it with: silo cache create %s)", name, name)
	}
	if err != nil {
		return kind, internal("look up cache", err)
	}
	need := meta.PermPull
	if r.Method == http.MethodPut || r.Method == http.MethodPost || r.Method == http.MethodDelete {
		need = meta.PermPush
	}
	if err := s.authorizeRead(w, r, c, need); err != nil {
		return kind, err
	}
	return kind, handle(s, w, r, c, rest)
}

type handlerFunc func(s *Server, w http.ResponseWriter, r *http.Request, c meta.Cache, rest string) error

// handlerFor picks the handler for a path below /<cache>/.
func (s *Server) handlerFor(method, rest string) (string, handlerFunc) {
	get := method == http.MethodGet || method == http.MethodHead
	put := method == http.MethodPut
	switch {
	case rest == "nix-cache-info":
		if get {
			return "cache-info", (*Server).cacheInfo
		}
		if put {
			return "cache-info", (*Server).putCacheInfo
		}
	case strings.HasSuffix(rest, ".narinfo") && !strings.Contains(rest, "/"):
		if get {
			return "narinfo", (*Server).getNarInfo
		}
		if put {
			return "narinfo", (*Server).putNarInfo
		}
	case strings.HasSuffix(rest, ".ls") && !strings.Contains(rest, "/"):
		if get {
			return "ls", (*Server).getListing
		}
		if put {
			return "ls", (*Server).putListing
		}
	case strings.HasPrefix(rest, "nar/"):
		if get {
			return "nar", (*Server).getNAR
		}
		if put {
			return "nar", (*Server).putNAR
		}
	case strings.HasPrefix(rest, "log/"):
		if get {
			return "log", (*Server).getLog
		}
		if put {
			return "log", (*Server).putLog
		}
	case rest == "_silo/missing":
		if method == http.MethodPost {
			return "missing", (*Server).missing
		}
	}
	return "other", nil
}

// ValidCacheName reports why name cannot name a cache, or nil: 1 to 64
// characters [A-Za-z0-9._-], not starting with '.', '_' or '-', and not a
// name the server uses itself.
func ValidCacheName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("cache name %q must have 1 to 64 characters", name)
	}
	if name == "metrics" || name == "healthz" {
		return fmt.Errorf("cache name %q is reserved by the server", name)
	}
	if c := name[0]; c == '.' || c == '_' || c == '-' {
		return fmt.Errorf("cache name %q must not start with %q", name, c)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("cache name %q has character %q (allowed: A-Z a-z 0-9 . _ -)", name, c)
		}
	}
	return nil
}

// authorize checks that the request may do need on cache c.
func (s *Server) authorize(r *http.Request, c meta.Cache, need meta.Perm) error {
	text, presented := auth.FromRequest(r)
	if !presented {
		if need == meta.PermPull && c.Public {
			return nil
		}
		if need == meta.PermPull {
			return errorf(http.StatusUnauthorized, "cache %s is private: authenticate with a token (netrc password, or Authorization: Bearer)", c.Name)
		}
		return errorf(http.StatusUnauthorized, "pushing to cache %s needs a token with push permission (netrc password, or Authorization: Bearer)", c.Name)
	}
	id, err := auth.ID(text)
	if err != nil {
		return &httpError{status: http.StatusUnauthorized, msg: "the credentials presented are not a silo token (" + err.Error() + ")"}
	}
	rec, err := s.view.token(r.Context(), infoOf(r).gen, id)
	if errors.Is(err, meta.ErrNotFound) {
		// Spend the time a comparison would, so that probing IDs learns nothing.
		auth.Check(meta.Token{Hash: make([]byte, 32)}, text, s.now())
		return errorf(http.StatusUnauthorized, "token %s is unknown or revoked", id)
	}
	if err != nil {
		return internal("look up token", err)
	}
	if err := auth.Check(rec, text, s.now()); err != nil {
		return &httpError{status: http.StatusUnauthorized, msg: err.Error()}
	}
	setLogToken(r, id)
	if auth.Allows(rec, c.Name, need) {
		return nil
	}
	if need == meta.PermPull && c.Public {
		return nil
	}
	verb := "read from"
	if need == meta.PermPush {
		verb = "push to"
	}
	return errorf(http.StatusForbidden, "token %s may not %s cache %s (it grants %s on caches matching %q)",
		id, verb, c.Name, auth.PermString(rec.Perms), rec.CachePattern)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.meta.Caches(r.Context()); err != nil {
		return internal("metadata store", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
	return nil
}

func (s *Server) root(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "silo binary cache server: caches are served at /<cache>/ (see silo cache list)")
	return nil
}

func (s *Server) cacheInfo(w http.ResponseWriter, r *http.Request, c meta.Cache, _ string) error {
	w.Header().Set("Content-Type", "text/x-nix-cache-info")
	body := fmt.Sprintf("StoreDir: %s\nWantMassQuery: 1\nPriority: %d\n", c.StoreDir, c.Priority)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	if r.Method != http.MethodHead {
		io.WriteString(w, body)
	}
	return nil
}

// putCacheInfo accepts the nix-cache-info Nix uploads to a cache it
// believes new; the server's own answer stays authoritative. It only
// refuses a store directory other than the cache's.
func (s *Server) putCacheInfo(w http.ResponseWriter, r *http.Request, c meta.Cache, _ string) error {
	var buf strings.Builder
	if _, err := copyLimited(&buf, r.Body, 64<<10); err != nil {
		return err
	}
	for _, line := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "StoreDir:"); ok && strings.TrimSpace(v) != c.StoreDir {
			return errorf(http.StatusConflict, "cache %s is for store directory %s, not %s", c.Name, c.StoreDir, strings.TrimSpace(v))
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
