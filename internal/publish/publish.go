// Package publish serves a local Nix store as a read-only binary cache, the
// way nix-serve and harmonia do: nix-cache-info, a narinfo for every valid
// path, NARs written on the fly from the file system, .ls listings and build
// logs, optionally only to holders of a silo token.
//
// Invariants:
//   - Read-only: nothing here writes to the store, its database or its logs.
//     Validity is the store's answer, or a cached one only while the path's
//     root on disk is the same inode with the same ctime (infoCache), so a
//     path deleted, or deleted and rebuilt, is never answered from before.
//   - A NAR response that completes (all of Content-Length, or the final
//     chunk) carries exactly the NAR the narinfo promised. The window's last
//     byte is held back until the stream is checked: the first time a path
//     is sent, by hashing every byte against NarHash; afterwards, by a digest
//     of every object's inode, size, mode and times, which any write,
//     replacement, addition or removal changes. A path that vanishes or
//     changes mid-stream aborts the connection; a truncated or altered NAR
//     never ends in a clean 200.
//   - Memory does not grow with NAR size: NARs stream through fixed, pooled
//     buffers (file contents mostly by sendfile), listings and logs stream
//     too, and at most Options.MaxStreams NARs are sent at once; a client
//     that stops reading loses its stream after Options.StallTimeout.
//   - Narinfos keep every signature the store holds and add one per
//     configured key; signatures depend only on the key and the path's
//     fingerprint, so they are cached by fingerprint.
//   - A private store (Options.Authorize) answers nothing, /metrics
//     included, without a token, an unknown token ID as a wrong secret,
//     and says Cache-Control: private on everything it answers.
//   - Every request is logged in silo serve's format (package httplog).
//   - Content-Encoding is sent only to clients whose Accept-Encoding asks for
//     zstd; Nix 2.8 sends no Accept-Encoding, so it always gets plain NARs.
//     "Content-Encoding: identity" is never sent: Nix 2.8 hands any
//     encoding it does not know to libarchive, which rejects plain data.
package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/httplog"
	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// Store is what the server needs of the local store: localstore.DB and
// localstore.Daemon both provide it. Both methods return errors wrapping
// localstore.ErrNotFound for paths that are not valid.
type Store interface {
	QueryPathInfo(ctx context.Context, p storepath.Path) (*localstore.PathInfo, error)
	QueryPathFromHashPart(ctx context.Context, hashPart string) (storepath.Path, error)
}

// Options configure a Server. The zero value of each field means what its
// comment says.
type Options struct {
	// StoreDir is the directory store paths are named in; "" means /nix/store.
	StoreDir storepath.Dir
	// RealDir is where the store's files lie on disk, if not at StoreDir
	// (a chroot store such as /tmp/x/nix/store); "" means StoreDir.
	RealDir string
	// LogDir is Nix's log directory, holding drvs/xx/rest[.bz2]; "" means
	// /nix/var/log/nix.
	LogDir string
	// Keys each add a signature to every narinfo; none means the narinfo
	// carries only the signatures the store holds.
	Keys []signature.SecretKey
	// Priority is advertised in nix-cache-info; 0 means 30, nix-serve's.
	Priority int
	// Compression is how narinfos advertise NARs: "" or "none" for plain
	// NARs (nar/<hashpart>-<narhash>.nar, nix-serve's URL form), "zstd" for
	// zstd-compressed ones (the same URL plus .zst). Both URLs are served
	// whatever this says.
	Compression string
	// MaxStreams bounds how many NARs are sent at once; others wait.
	// 0 means 64.
	MaxStreams int
	// StallTimeout cuts off a NAR response whose client has accepted no
	// bytes for this long, so that clients that ask and never read cannot
	// hold every stream; 0 means 2 minutes. (A client must take at least
	// 256 KiB per StallTimeout.)
	StallTimeout time.Duration
	// Authorize, if set, decides whether a request may read the cache
	// (see TokenAuthorizer); it is asked for every path except /healthz,
	// /metrics included. A refused request gets 401 with the error's text,
	// which Nix treats as "not in this cache". With it, every answer says
	// Cache-Control: private.
	Authorize func(r *http.Request) error
	// Logger receives one line per request, in silo serve's format
	// (package httplog; narinfo lookups answered 200 or 404 at debug), and
	// the reasons of aborted NARs; nil means slog.Default().
	Logger *slog.Logger
}

// Server is an http.Handler serving a store. It is safe for concurrent use.
type Server struct {
	store     Store
	opts      Options
	realDir   string
	logDir    string
	cacheInfo []byte
	streams   chan struct{}
	sigs      *sigCache
	verified  verifiedTrees
	infos     infoCache
	metrics   *metrics
	mux       *http.ServeMux
	log       *slog.Logger
}

// New returns a Server for store.
func New(store Store, opts Options) (*Server, error) {
	if opts.StoreDir == "" {
		opts.StoreDir = storepath.DefaultDir
	}
	if _, err := storepath.NewDir(string(opts.StoreDir)); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	switch opts.Compression {
	case "":
		opts.Compression = "none"
	case "none", "zstd":
	default:
		return nil, fmt.Errorf("publish: compression %q not supported (want none or zstd)", opts.Compression)
	}
	if opts.Priority == 0 {
		opts.Priority = 30
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 64
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = 2 * time.Minute
	}
	s := &Server{
		store:   store,
		opts:    opts,
		realDir: opts.RealDir,
		logDir:  opts.LogDir,
		streams: make(chan struct{}, opts.MaxStreams),
		sigs:    newSigCache(),
		metrics: newMetrics(),
		log:     opts.Logger,
	}
	if s.realDir == "" {
		s.realDir = string(opts.StoreDir)
	}
	if s.logDir == "" {
		s.logDir = "/nix/var/log/nix"
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.cacheInfo = fmt.Appendf(nil, "StoreDir: %s\nWantMassQuery: 1\nPriority: %d\n", opts.StoreDir, opts.Priority)

	mux := http.NewServeMux()
	// GET patterns also match HEAD.
	mux.HandleFunc("GET /healthz", s.logged("healthz", s.serveHealth))
	mux.HandleFunc("GET /metrics", s.guarded("metrics", func(w *statusWriter, r *http.Request) { s.metrics.handler().ServeHTTP(w, r) }))
	mux.HandleFunc("GET /nix-cache-info", s.guarded("cache-info", s.serveCacheInfo))
	mux.HandleFunc("GET /{file}", s.guarded("other", s.serveFile))
	mux.HandleFunc("GET /nar/{file}", s.guarded("nar", s.serveNAR))
	mux.HandleFunc("GET /log/{drv}", s.guarded("log", s.serveLog))
	mux.HandleFunc("/", s.logged("other", func(w *statusWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "silo publish serves the store read-only (push with silo serve instead)", http.StatusMethodNotAllowed)
			return
		}
		notFound(w, noSuchFile)
	}))
	s.mux = mux
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// MetricsHandler serves the metrics to anyone: for an address of their
// own (silo publish --metrics-listen).
func (s *Server) MetricsHandler() http.Handler { return s.metrics.handler() }

// logged counts the request under kind (which h may change) and logs it.
func (s *Server) logged(kind string, h func(w *statusWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{Writer: httplog.Writer{ResponseWriter: w}, kind: kind}
		sw.entry.Begin(w, r)
		defer func() {
			v := recover()
			code := sw.code()
			if v != nil {
				code = 0 // aborted
				if sw.entry.Err == nil {
					sw.entry.Err = errAborted
				}
			}
			s.metrics.request(sw.kind, code)
			level := httplog.Level(&sw.Writer, r, sw.kind == "narinfo")
			if v != nil {
				level = slog.LevelInfo // the client went away, or stream logged why
			}
			httplog.Log(s.log, level, &sw.entry, &sw.Writer, r, sw.entry.Elapsed())
			if v != nil {
				panic(v)
			}
		}()
		h(sw, r)
	}
}

var errAborted = errors.New("response aborted mid-body")

// guarded checks authorization, then serves and logs the request as logged.
func (s *Server) guarded(kind string, h func(w *statusWriter, r *http.Request)) http.HandlerFunc {
	return s.logged(kind, func(sw *statusWriter, r *http.Request) {
		if s.opts.Authorize != nil {
			if err := s.opts.Authorize(r); err != nil {
				sw.entry.Err = err
				sw.Header().Set("WWW-Authenticate", `Basic realm="silo publish"`)
				sw.Header().Set("Cache-Control", "no-store")
				http.Error(sw, err.Error(), http.StatusUnauthorized)
				return
			}
			// Nothing of a private store may be kept by a shared cache
			// in front (handlers may make it "private, ...").
			sw.Header().Set("Cache-Control", "private")
		}
		h(sw, r)
	})
}

// cacheControl returns the Cache-Control of an answer that caches in front
// may keep for maxAge ("public, ..." or, for a private store, "private, ...").
func (s *Server) cacheControl(public []string, private []string) []string {
	if s.opts.Authorize != nil {
		return private
	}
	return public
}

// serveHealth answers /healthz: 200 if the store answers a query (for a
// path that does not exist), 503 if it does not.
func (s *Server) serveHealth(w *statusWriter, r *http.Request) {
	_, err := s.store.QueryPathFromHashPart(r.Context(), healthProbe)
	if err != nil && !errors.Is(err, localstore.ErrNotFound) {
		s.log.Error("publish: health check: the store does not answer", "err", err)
		http.Error(w, "the store does not answer: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// healthProbe is a hash part no real path has (all zero bits).
const healthProbe = "00000000000000000000000000000000"

func (s *Server) serveCacheInfo(w *statusWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/x-nix-cache-info")
	h.Set("Content-Length", strconv.Itoa(len(s.cacheInfo)))
	w.Write(s.cacheInfo)
}

// serveFile serves the files at the top of the cache: <hashpart>.narinfo
// and <hashpart>.ls.
func (s *Server) serveFile(w *statusWriter, r *http.Request) {
	file := r.PathValue("file")
	if hp, ok := cutHashPart(file, ".narinfo"); ok {
		w.kind = "narinfo"
		s.serveNarinfo(w, r, hp)
		return
	}
	if hp, ok := cutHashPart(file, ".ls"); ok {
		w.kind = "ls"
		s.serveListing(w, r, hp)
		return
	}
	notFound(w, noSuchFile)
}

const noSuchFile = "no such file in this binary cache (it has nix-cache-info, <hash>.narinfo, <hash>.ls, nar/<hash>-<narhash>.nar[.zst], log/<drv>)"

// cutHashPart returns the store path hash part that file is named by, if
// file is "<32 nix32 characters><suffix>".
func cutHashPart(file, suffix string) (string, bool) {
	hp, ok := cutSuffix(file, suffix)
	if !ok || len(hp) != storepath.HashLen || !nix32.IsValid(hp) {
		return "", false
	}
	return hp, true
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) < len(suffix) || s[len(s)-len(suffix):] != suffix {
		return "", false
	}
	return s[:len(s)-len(suffix)], true
}

// lookup returns the valid path with hash part hp, its info and narinfo.
// A path that is not valid is reported to the client as 404 and returns
// nil; so is a failure to ask the store, as 500.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request, hp string) *cachedInfo {
	ctx := r.Context()
	now := time.Now()
	if e := s.infos.get(hp, now, s.realPath); e != nil {
		s.metrics.infoCache.WithLabelValues("hit").Inc()
		return e
	}
	s.metrics.infoCache.WithLabelValues("miss").Inc()
	p, err := s.store.QueryPathFromHashPart(ctx, hp)
	var info *localstore.PathInfo
	var st unix.Stat_t
	var onDisk bool
	if err == nil {
		// Stat before reading the record: see infoCache.
		st, onDisk = rootStat(s.realPath(p))
		info, err = s.store.QueryPathInfo(ctx, p)
	}
	switch {
	case err == nil:
		ni := s.narinfo(info).String()
		e := &cachedInfo{info: info, narinfo: []byte(ni), length: strconv.Itoa(len(ni))}
		if onDisk {
			e.dev, e.ino, e.ctime, e.expires = st.Dev, st.Ino, st.Ctim, now.Add(infoTTL)
			s.infos.put(hp, e)
		}
		return e
	case errors.Is(err, localstore.ErrNotFound):
		notFound(w, "no valid store path with hash "+hp+" in "+string(s.opts.StoreDir))
	case ctx.Err() != nil:
		// The client went away; nobody reads the answer.
	default:
		s.log.Error("publish: query store", "hash", hp, "err", err)
		http.Error(w, "cannot query the store", http.StatusInternalServerError)
	}
	return nil
}

// realPath returns where p's files are on disk.
func (s *Server) realPath(p storepath.Path) string { return filepath.Join(s.realDir, p.Base()) }

func notFound(w http.ResponseWriter, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, msg, http.StatusNotFound)
}

// statusWriter is a response being written: its status and size, its
// kind for the metrics, and its log entry.
type statusWriter struct {
	httplog.Writer
	kind  string // metrics label
	entry httplog.Entry
}

func (w *statusWriter) code() int { return w.Code() }
