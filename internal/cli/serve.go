package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/silo-cache/silo/internal/blob/disk"
	"github.com/silo-cache/silo/internal/cache"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/listen"
	"github.com/silo-cache/silo/internal/meta/sqlite"
)

// serveFlags are silo serve's settings. The admin commands (silo cache,
// silo token) define them too, so that they accept the same --config file
// and find the same --data-dir.
type serveFlags struct {
	listen, dataDir, url                   string
	compression                            string
	compressionLevel, maxUploads           int
	maxNARSize                             byteSize
	uploadTTL, gcInterval, shutdownTimeout time.Duration
	uploadIdle                             time.Duration
	logLevel, logFormat                    string
	requireClosure                         bool
}

func defineServeFlags(fs *flag.FlagSet) *serveFlags {
	f := &serveFlags{}
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address to listen on: host:port or unix:/path (systemd socket activation overrides it)")
	fs.StringVar(&f.dataDir, "data-dir", "silo-data", "`DIR` holding the metadata (silo.db) and NAR blobs (blobs/)")
	fs.StringVar(&f.url, "url", "", "public base `URL` of the server, for the substituter lines silo cache info prints (default: from --listen)")
	fs.StringVar(&f.compression, "compression", compress.Zstd, "how NARs are stored and served: zstd, xz or none")
	fs.IntVar(&f.compressionLevel, "compression-level", 0, "compression level (0: the method's default; zstd 1-22, xz 1-9)")
	f.maxNARSize = 0
	fs.Var(&f.maxNARSize, "max-nar-size", "largest NAR file accepted, e.g. 20G (0: no limit)")
	fs.IntVar(&f.maxUploads, "max-uploads", 0, "NAR uploads verified at once; more wait (0: 4 per CPU)")
	fs.DurationVar(&f.uploadIdle, "upload-idle-timeout", 2*time.Minute, "cut off an upload whose client sends nothing for this long")
	fs.BoolVar(&f.requireClosure, "require-closure", false, "refuse a narinfo whose references are not already in the cache (by default they may come from an upstream cache such as cache.nixos.org)")
	fs.DurationVar(&f.uploadTTL, "upload-ttl", 24*time.Hour, "how long a verified NAR upload waits for its narinfo")
	fs.DurationVar(&f.gcInterval, "gc-interval", 10*time.Minute, "how often unused NARs and expired uploads are deleted")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests may finish on SIGTERM")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error (requests are logged at info, narinfo lookups answered 200 or 404 at debug)")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.String("config", "", "TOML config `FILE` setting any of these flags (keys are the flag names)")
	return f
}

// byteSize is a flag holding a byte count: 1024, 10M, 20G (powers of 1024).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	mult := int64(1)
	t := strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B")
	if t != "" {
		if i := strings.IndexByte("KMGT", t[len(t)-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a size (want e.g. 1048576, 512M or 20G)", s)
	}
	*b = byteSize(n * mult)
	return nil
}

// dataPaths returns the metadata database and blob directory in dir.
func dataPaths(dir string) (db, blobs string) {
	return filepath.Join(dir, "silo.db"), filepath.Join(dir, "blobs")
}

func openMeta(ctx context.Context, dir string) (*sqlite.Store, error) {
	db, _ := dataPaths(dir)
	return sqlite.Open(ctx, db)
}

func init() {
	Register(&Command{
		Name:  "serve",
		Short: "run the binary cache server that nix copy pushes to and Nix substitutes from",
		Long: `Serves binary caches over HTTP at http://HOST:PORT/<cache>/: Nix pushes with
  nix copy --to 'http://HOST:PORT/<cache>?compression=zstd' PATH
(a token with push permission in a netrc file) and substitutes with
  substituters = http://HOST:PORT/<cache>  and the cache's trusted-public-keys.
Every upload is verified before it becomes visible; narinfos are signed with
the cache's own key. Create caches and tokens with silo cache create and silo
token create (they work while the server runs). Also serves /metrics
(Prometheus) and /healthz.

Data lives in --data-dir (default ./silo-data): silo.db (SQLite) and blobs/.
One server per data directory. SIGTERM lets in-flight requests finish for
--shutdown-timeout; uploads cut off then are discarded, never half-visible.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			f := defineServeFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return Usagef("serve: takes no arguments, got %q", args)
				}
				return runServe(ctx, env, f)
			}
		},
	})
}

func newLogger(env *Env, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, Usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(env.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.Stderr, opts)), nil
	}
	return nil, Usagef("--log-format %q: want text or json", format)
}

// lockDataDir takes an exclusive lock on dir for the process's lifetime,
// so that two servers never share a data directory.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	name := filepath.Join(dir, "serve.lock")
	lf, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("another silo serve is using %s (lock %s held); stop it or choose another --data-dir", dir, name)
	}
	return lf, nil
}

func runServe(ctx context.Context, env *Env, f *serveFlags) error {
	log, err := newLogger(env, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	if _, err := compress.ParseStored(f.compression); err != nil {
		return Usagef("serve: --compression: %v", err)
	}
	lock, err := lockDataDir(f.dataDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer lock.Close()
	m, err := openMeta(ctx, f.dataDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer m.Close()
	_, blobDir := dataPaths(f.dataDir)
	blobs, err := disk.Open(blobDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	// We hold the data directory's lock: every temporary file is a leftover.
	if n, err := blobs.CleanTemp(0); err != nil {
		return fmt.Errorf("serve: %w", err)
	} else if n > 0 {
		log.Info("removed unfinished uploads left by an earlier run", "files", n)
	}
	srv, err := cache.New(cache.Options{
		Meta: m, Blobs: blobs,
		Compression: f.compression, CompressionLevel: f.compressionLevel,
		MaxNARSize: int64(f.maxNARSize), MaxUploads: f.maxUploads, UploadTTL: f.uploadTTL, UploadIdleTimeout: f.uploadIdle, Logger: log,
		RequireClosure: f.requireClosure,
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	l, err := listen.Listen(ctx, f.listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	base := listen.URL(l)
	handler := withAdminAPI(srv, m, recordServerURL(log, f.dataDir, f.url, l), log)
	log.Info("silo serve listening", "url", base, "data_dir", f.dataDir, "compression", f.compression)
	if caches, err := m.Caches(ctx); err == nil && len(caches) == 0 {
		log.Info("no caches yet; create one (works while the server runs)",
			"command", fmt.Sprintf("silo cache create main --data-dir %s", f.dataDir))
	} else {
		for _, c := range caches {
			log.Info("serving cache", "cache", c.Name, "url", base+"/"+c.Name, "public", c.Public)
		}
	}

	// Requests' contexts end only after the shutdown deadline, so
	// in-flight transfers may finish first.
	reqCtx, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	var inflight sync.WaitGroup
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inflight.Add(1)
			defer inflight.Done()
			handler.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
		ConnContext:       cache.ConnContext,
	}
	gcCtx, stopGC := context.WithCancel(ctx)
	defer stopGC()
	go srv.RunGC(gcCtx, f.gcInterval)

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: on %s: %w", base, err)
	case <-ctx.Done():
	}
	log.Info("shutting down: letting in-flight requests finish", "timeout", f.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.shutdownTimeout)
	defer cancel()
	err = hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown deadline passed: cutting off the remaining requests (their uploads are discarded)")
		cancelRequests()
		hs.Close()
	} else if err != nil {
		return fmt.Errorf("serve: shutting down: %w", err)
	}
	inflight.Wait()
	log.Info("stopped")
	return nil
}
