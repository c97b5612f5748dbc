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
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/silo-cache/silo/internal/cache"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/listen"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/nar"
)

// serveFlags are silo serve's settings. The admin commands (silo cache,
// silo token) define them too, so that they accept the same --config file
// and find the same --data-dir.
type serveFlags struct {
	listen, dataDir, url              string
	compression                       string
	compressionLevel, maxUploads      int
	maxUploadsPerCache                int
	maxNARSize                        byteSize
	maxNARExpansion                   int64
	maxNARObjects, maxNARDepth        int
	maxLogSize, maxLogBytes           byteSize
	maxLogs                           int64
	uploadTTL, gcInterval, uploadWait time.Duration
	uploadIdle                        time.Duration
	requireClosure                    bool
	net                               netFlags
	store                             storageFlags
}

func defineServeFlags(fs *flag.FlagSet) *serveFlags {
	f := &serveFlags{}
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address to listen on: host:port or unix:/path (systemd socket activation overrides it)")
	fs.StringVar(&f.dataDir, "data-dir", "silo-data", "`DIR` holding the metadata (silo.db) and NAR blobs (blobs/); made 0700, its files 0600")
	fs.StringVar(&f.url, "url", "", "public base `URL` of the server, for the substituter lines silo cache info prints (default: from --listen)")
	fs.StringVar(&f.compression, "compression", compress.Zstd, "how NARs are stored and served: zstd, xz or none (every upload is recompressed to it)")
	fs.IntVar(&f.compressionLevel, "compression-level", 0, "compression level of stored NARs (0: zstd 1, xz 6; zstd 1-22, xz 1-9): every upload is compressed again, and zstd 3 costs three times the CPU of zstd 1 for files about a tenth smaller")
	f.maxNARSize = cache.DefaultMaxNARSize
	fs.Var(&f.maxNARSize, "max-nar-size", "largest NAR accepted, as sent and uncompressed: a `SIZE` such as 64G (0: no limit)")
	fs.Int64Var(&f.maxNARExpansion, "max-nar-expansion", cache.DefaultMaxNARExpansion, "refuse an upload that expands more than this many times its size as sent, past its first 256 MiB (0: no limit)")
	fs.IntVar(&f.maxNARObjects, "max-nar-objects", nar.DefaultMaxObjects, "most files, directories and symlinks one NAR may hold")
	fs.IntVar(&f.maxNARDepth, "max-nar-depth", nar.DefaultMaxDepth, "deepest directory nesting one NAR may have")
	fs.IntVar(&f.maxUploads, "max-uploads", 0, "NAR uploads verified at once; more wait (0: 4 per CPU)")
	fs.IntVar(&f.maxUploadsPerCache, "max-uploads-per-cache", 0, "NAR uploads to one cache verified at once (0: half of --max-uploads)")
	fs.DurationVar(&f.uploadWait, "upload-wait", time.Minute, "how long an upload waits for a slot before it is answered 503 (clients retry)")
	fs.DurationVar(&f.uploadIdle, "upload-idle-timeout", 2*time.Minute, "cut off a request body (NAR, narinfo, log) whose client sends nothing for this long, or averages less than --min-transfer-rate after it")
	f.maxLogSize = cache.DefaultMaxLogSize
	fs.Var(&f.maxLogSize, "max-log-size", "largest build log accepted: a `SIZE` such as 64M")
	fs.Int64Var(&f.maxLogs, "max-logs-per-cache", cache.DefaultLogLimits.Count, "most build logs one cache may hold (0: no limit)")
	f.maxLogBytes = byteSize(cache.DefaultLogLimits.Bytes)
	fs.Var(&f.maxLogBytes, "max-log-bytes-per-cache", "most bytes of build logs one cache may hold: a `SIZE` (0: no limit)")
	fs.BoolVar(&f.requireClosure, "require-closure", false, "refuse a narinfo whose references are not already in the cache (by default they may come from an upstream cache such as cache.nixos.org)")
	fs.DurationVar(&f.uploadTTL, "upload-ttl", 24*time.Hour, "how long a verified NAR upload waits for its narinfo")
	fs.DurationVar(&f.gcInterval, "gc-interval", 10*time.Minute, "how often unused NARs and expired uploads are deleted")
	defineNetFlags(fs, &f.net)
	defineStorageFlags(fs, &f.store)
	fs.String("config", "", "TOML config `FILE` setting any of these flags (keys are the flag names)")
	return f
}

// netFlags are how a server (silo serve, silo publish) listens, guards
// its connections and logs.
type netFlags struct {
	metricsListen           string
	tlsCert, tlsKey         string
	socketMode, socketGroup string
	maxConns, maxConnsPerIP int
	idle                    time.Duration
	minRate                 byteSize
	shutdownTimeout         time.Duration
	logLevel, logFormat     string
}

func defineNetFlags(fs *flag.FlagSet, f *netFlags) {
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "serve every metric, to anyone, on this address of its own (host:port or unix:/path); /metrics on --listen then still answers only admin tokens")
	fs.StringVar(&f.tlsCert, "tls-cert-file", "", "serve HTTPS with this certificate `FILE` (PEM, chain after the leaf); read again on SIGHUP")
	fs.StringVar(&f.tlsKey, "tls-key-file", "", "the private key `FILE` of --tls-cert-file; read again on SIGHUP")
	fs.StringVar(&f.socketMode, "socket-mode", "", "permission bits of a unix socket, e.g. 0660 (connecting needs write permission)")
	fs.StringVar(&f.socketGroup, "socket-group", "", "group (name or ID) of a unix socket, e.g. the reverse proxy's")
	fs.IntVar(&f.maxConns, "max-connections", 0, "most connections open at once; more are answered 503 (0: from the open-file limit)")
	fs.IntVar(&f.maxConnsPerIP, "max-connections-per-ip", listen.DefaultMaxConnsPerAddr, "most connections open at once from one client address (IPv6: one /64); 0: no limit, as behind a reverse proxy")
	fs.DurationVar(&f.idle, "idle-timeout", listen.DefaultIdle, "cut off a connection that sends or accepts nothing for this long in the middle of a request or response")
	f.minRate = listen.DefaultMinRate
	fs.Var(&f.minRate, "min-transfer-rate", "`SIZE` per second (bytes) a client must average while a request or response waits on it, after --idle-timeout of grace (0: none)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests may finish on SIGTERM")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error (requests are logged at info, narinfo lookups answered 200 or 404 at debug)")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
}

// limits are the connection limits the flags ask for.
func (f *netFlags) limits() listen.Limits {
	per := f.maxConnsPerIP
	if per == 0 {
		per = -1
	}
	rate := int64(f.minRate)
	if rate == 0 {
		rate = -1
	}
	return listen.Limits{MaxConns: f.maxConns, MaxConnsPerAddr: per, Rate: listen.Rate{Idle: f.idle, Min: rate}}
}

// check refuses settings that do not go together, before anything starts.
func (f *netFlags) check(cmd string) error {
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return Usagef("%s: --tls-cert-file and --tls-key-file go together", cmd)
	}
	if _, err := listen.ParseSocketMode(f.socketMode); err != nil {
		return Usagef("%s: --socket-mode: %v", cmd, err)
	}
	if f.maxConns < 0 || f.maxConnsPerIP < 0 {
		return Usagef("%s: --max-connections and --max-connections-per-ip must not be negative", cmd)
	}
	if f.idle <= 0 {
		return Usagef("%s: --idle-timeout must be positive", cmd)
	}
	return nil
}

// httpServer is a server's listeners, guarded, and its certificate.
type httpServer struct {
	main, metrics net.Listener // metrics may be nil
	cert          *listen.Certificate
	guard         *listen.Guard
	url           string // of main
}

// open raises the open-file limit and opens the listeners.
func (f *netFlags) open(ctx context.Context, log *slog.Logger, addr string) (*httpServer, error) {
	if n, err := listen.RaiseFileLimit(); err != nil {
		log.Warn("open-file limit", "limit", n, "err", err)
	} else {
		log.Debug("open-file limit", "limit", n)
	}
	mode, _ := listen.ParseSocketMode(f.socketMode)
	sock := listen.Socket{Mode: mode, Group: f.socketGroup}
	hs := &httpServer{}
	if f.tlsCert != "" {
		cert, err := listen.LoadCertificate(f.tlsCert, f.tlsKey)
		if err != nil {
			return nil, err
		}
		hs.cert = cert
	}
	l, err := listen.ListenSocket(ctx, addr, sock)
	if err != nil {
		return nil, err
	}
	hs.url = listen.URL(l, hs.cert != nil)
	if hs.cert != nil {
		l = listen.TLS(l, hs.cert)
	}
	hs.guard = listen.NewGuard(l, f.limits(), log)
	hs.main = hs.guard
	if f.metricsListen != "" {
		ml, err := listen.Addr(ctx, f.metricsListen)
		if err != nil {
			hs.main.Close()
			return nil, fmt.Errorf("--metrics-listen: %w", err)
		}
		hs.metrics = listen.NewGuard(ml, f.limits(), log)
	}
	return hs, nil
}

// run serves h (and metrics on the metrics listener) until ctx ends, then
// lets requests finish for shutdownTimeout. Requests' contexts end only
// after that deadline, so in-flight transfers may finish first. SIGHUP
// reads the TLS certificate again.
func (hs *httpServer) run(ctx context.Context, log *slog.Logger, f *netFlags, h, metrics http.Handler, connContext func(context.Context, net.Conn) context.Context) error {
	reqCtx, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	var inflight sync.WaitGroup
	counted := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inflight.Add(1)
			defer inflight.Done()
			h.ServeHTTP(w, r)
		})
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	servers := []*http.Server{listen.HTTPServer(counted(h), errLog, connContext)}
	listeners := []net.Listener{hs.main}
	if hs.metrics != nil {
		servers = append(servers, listen.HTTPServer(metrics, errLog, nil))
		listeners = append(listeners, hs.metrics)
		log.Info("serving metrics", "url", listen.URL(hs.metrics)+"/metrics")
	}
	for _, s := range servers {
		s.BaseContext = func(net.Listener) context.Context { return reqCtx }
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	errc := make(chan error, len(servers))
	for i, s := range servers {
		go func() { errc <- s.Serve(listeners[i]) }()
	}
	for {
		select {
		case err := <-errc:
			for _, s := range servers {
				s.Close()
			}
			return fmt.Errorf("on %s: %w", hs.url, err)
		case <-hup:
			if hs.cert == nil {
				log.Info("SIGHUP: no TLS certificate to read again")
				continue
			}
			if err := hs.cert.Reload(); err != nil {
				log.Error("SIGHUP: the TLS certificate could not be read again; still serving the previous one", "err", err)
			} else {
				log.Info("SIGHUP: TLS certificate read again", "cert", f.tlsCert)
			}
			continue
		case <-ctx.Done():
		}
		break
	}
	log.Info("shutting down: letting in-flight requests finish", "timeout", f.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.shutdownTimeout)
	defer cancel()
	var shutdownErr error
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil && shutdownErr == nil {
			shutdownErr = err
		}
	}
	if errors.Is(shutdownErr, context.DeadlineExceeded) {
		log.Warn("shutdown deadline passed: cutting off the remaining requests (their uploads are discarded)")
		cancelRequests()
		for _, s := range servers {
			s.Close()
		}
	} else if shutdownErr != nil {
		return fmt.Errorf("shutting down: %w", shutdownErr)
	}
	inflight.Wait()
	return nil
}

// byteSize is a flag holding a byte count: 1024, 10M, 20G (powers of 1024).
type byteSize int64

// String prints the size in the largest unit that divides it: 32G, 1K, 1000.
func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

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
token create (they work while the server runs). Also serves /healthz, and
/metrics (Prometheus) to admin tokens, naming only their caches; or every
metric on an address of its own with --metrics-listen.

Data lives in --data-dir (default ./silo-data): silo.db (SQLite) and blobs/,
its owner's only (0700, files 0600; a wider mode is narrowed at start, with a
warning). One server per data directory. With --db postgres://... and --blobs
s3://BUCKET?endpoint=...&region=..., any number of servers (replicas) share one
database and bucket; the garbage collector runs on one of them at a time.
SIGTERM lets in-flight requests
finish for --shutdown-timeout; uploads cut off then are discarded, never
half-visible. SIGHUP reads --tls-cert-file and --tls-key-file again.

Hostile clients are bounded: connections overall (--max-connections) and per
client address (--max-connections-per-ip), answered 503 past them; every
request and response must keep up --min-transfer-rate after --idle-timeout
of grace; uploads are bounded in size (--max-nar-size, default 32 GiB, as
sent and uncompressed), expansion, objects and depth, and in how many run at
once per cache (--max-uploads-per-cache).`,
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
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	name := filepath.Join(dir, "serve.lock")
	lf, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("another silo serve is using %s (lock %s held); stop it or choose another --data-dir", dir, name)
	}
	return lf, nil
}

// privateDataDir makes the data directory and what silo keeps at its top
// its owner's only, whatever the umask it was made under: silo.db holds
// every cache's signing key, blobs/ private caches' NARs and logs. (With
// the directory 0700 nothing below it is reachable by others; the files
// are narrowed too, in case of other hard links or a later chmod.) It
// says what it changed, and fails, naming the fix, if it may not.
func privateDataDir(dir string, log *slog.Logger) error {
	db, blobs := dataPaths(dir)
	for _, p := range []struct {
		name string
		mode os.FileMode
	}{
		{dir, 0o700}, {blobs, 0o700},
		{db, 0o600}, {db + "-wal", 0o600}, {db + "-shm", 0o600},
		{filepath.Join(dir, "serve.lock"), 0o600},
	} {
		fi, err := os.Lstat(p.name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("check data directory: %w", err)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			continue // its target is checked where it is used
		}
		if fi.Mode().Perm()&0o077 == 0 {
			continue
		}
		if err := os.Chmod(p.name, fi.Mode().Perm()&p.mode); err != nil {
			return fmt.Errorf("%s has mode %04o, readable by others, and cannot be narrowed (%v): run silo serve as its owner, or chmod %04o %s", p.name, fi.Mode().Perm(), err, p.mode, p.name)
		}
		log.Warn("narrowed a data file's mode: it was readable by others", "path", p.name, "was", fmt.Sprintf("%04o", fi.Mode().Perm()), "now", fmt.Sprintf("%04o", fi.Mode().Perm()&p.mode))
	}
	return nil
}

func runServe(ctx context.Context, env *Env, f *serveFlags) error {
	log, err := newLogger(env, f.net.logLevel, f.net.logFormat)
	if err != nil {
		return err
	}
	if _, err := compress.ParseStored(f.compression); err != nil {
		return Usagef("serve: --compression: %v", err)
	}
	if err := f.net.check("serve"); err != nil {
		return err
	}
	if f.maxNARExpansion < 0 || f.maxLogs < 0 || f.maxNARObjects < 0 || f.maxNARDepth < 0 {
		return Usagef("serve: --max-nar-expansion, --max-nar-objects, --max-nar-depth and --max-logs-per-cache must not be negative")
	}
	st, err := openStorage(ctx, env, f, log)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer st.Close()
	m := st.meta
	orNone := func(n int64) int64 {
		if n == 0 {
			return -1
		}
		return n
	}
	minRate := int64(f.net.minRate)
	if minRate == 0 {
		minRate = -1
	}
	reg := prometheus.NewRegistry()
	srv, err := cache.New(cache.Options{
		Meta: m, Blobs: st.blobs, Registry: reg,
		Compression: f.compression, CompressionLevel: f.compressionLevel,
		MaxNARSize: orNone(int64(f.maxNARSize)), MaxNARExpansion: orNone(f.maxNARExpansion),
		NARLimits:  nar.Limits{MaxObjects: f.maxNARObjects, MaxDepth: f.maxNARDepth},
		MaxUploads: f.maxUploads, MaxUploadsPerCache: f.maxUploadsPerCache, UploadWait: f.uploadWait,
		UploadTTL: f.uploadTTL, UploadIdleTimeout: f.uploadIdle, MinUploadRate: minRate,
		MaxLogSize: int64(f.maxLogSize), LogLimits: meta.LogLimits{Count: orNone(f.maxLogs), Bytes: orNone(int64(f.maxLogBytes))},
		Logger: log, RequireClosure: f.requireClosure,
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	hs, err := f.net.open(ctx, log, f.listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "silo_connections_refused_total",
			Help: "Connections answered 503 and closed: past --max-connections or --max-connections-per-ip."},
			func() float64 { return float64(hs.guard.Rejected()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "silo_connections_open", Help: "Connections open on --listen."},
			func() float64 { return float64(hs.guard.Open()) }))
	lim := hs.guard.Limits()
	handler := withAdminAPI(srv, m, recordServerURL(log, f.dataDir, f.url, hs.main, hs.cert != nil), log)
	log.Info("silo serve listening", "url", hs.url, "db", describeDB(f), "blobs", st.where, "compression", f.compression,
		"max_connections", lim.MaxConns, "max_connections_per_ip", lim.MaxConnsPerAddr)
	if caches, err := m.Caches(ctx); err == nil && len(caches) == 0 {
		log.Info("no caches yet; create one (works while the server runs)",
			"command", fmt.Sprintf("silo cache create main --data-dir %s", f.dataDir))
	} else {
		for _, c := range caches {
			log.Info("serving cache", "cache", c.Name, "url", hs.url+"/"+c.Name, "public", c.Public)
		}
	}
	gcCtx, stopGC := context.WithCancel(ctx)
	defer stopGC()
	go st.maintain(gcCtx, srv, f, log)
	if err := hs.run(ctx, log, &f.net, handler, srv.MetricsHandler(), cache.ConnContext); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}
