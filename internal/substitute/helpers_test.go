package substitute

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

// testCache is a binary cache in a directory, as Nix writes one, served
// over HTTP on 127.0.0.1 or read as file://.
type testCache struct {
	t           testing.TB
	dir         string
	storeDir    storepath.Dir
	key         signature.SecretKey
	compression string
	srv         *httptest.Server
	// wrap, if set, sees every request before the file server.
	wrap func(w http.ResponseWriter, r *http.Request, next http.Handler)
	hits sync.Map // URL path -> *atomic.Int64
}

var cacheNames atomic.Int64

func newTestCache(t testing.TB, storeDir storepath.Dir, compression, cacheInfo string) *testCache {
	t.Helper()
	key, err := signature.GenerateKey(fmt.Sprintf("cache%d-1", cacheNames.Add(1)), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCache{t: t, dir: t.TempDir(), storeDir: storeDir, key: key, compression: compression}
	os.MkdirAll(filepath.Join(c.dir, "nar"), 0o755)
	if cacheInfo == "" {
		cacheInfo = fmt.Sprintf("StoreDir: %s\nWantMassQuery: 1\nPriority: 30\n", storeDir)
	}
	c.write("nix-cache-info", []byte(cacheInfo))
	return c
}

func (c *testCache) write(name string, data []byte) {
	c.t.Helper()
	if err := os.WriteFile(filepath.Join(c.dir, name), data, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// url starts the HTTP server (once) and returns its URL.
func (c *testCache) url() string {
	if c.srv == nil {
		files := http.FileServer(http.Dir(c.dir))
		c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := c.hits.LoadOrStore(r.URL.Path, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			if c.wrap != nil {
				c.wrap(w, r, files)
				return
			}
			files.ServeHTTP(w, r)
		}))
		c.t.Cleanup(c.srv.Close)
	}
	return c.srv.URL
}

func (c *testCache) fileURL() string { return "file://" + c.dir }

func (c *testCache) hitCount(path string) int64 {
	if n, ok := c.hits.Load(path); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// item is a store path to put in a cache: its NAR and metadata.
type item struct {
	info *nixstore.PathInfo
	nar  []byte
	ni   *narinfo.NarInfo
}

// makeItem makes a path named name in dir holding a small tree with
// contents, referencing refs.
func makeItem(t testing.TB, dir storepath.Dir, name, contents string, refs ...storepath.Path) *item {
	t.Helper()
	src := filepath.Join(t.TempDir(), name)
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "file"), []byte(contents), 0o644)
	os.WriteFile(filepath.Join(src, "sub", "exe"), []byte("#!/bin/sh\n"+contents), 0o755)
	os.Symlink("file", filepath.Join(src, "link"))
	data, h := storetest.NarOf(t, src)
	p := storetest.RandomPath(t, dir, name)
	return &item{info: &nixstore.PathInfo{Path: p, NarHash: h, NarSize: uint64(len(data)), References: refs}, nar: data}
}

// compressWith compresses data as Nix's caches do.
func compressWith(t testing.TB, method string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch method {
	case compress.Bzip2:
		cmd := exec.Command("bzip2", "-c")
		cmd.Stdin, cmd.Stdout = bytes.NewReader(data), &b
		if err := cmd.Run(); err != nil {
			t.Fatalf("bzip2: %v", err)
		}
		return b.Bytes()
	case compress.Brotli:
		w := brotli.NewWriterLevel(&b, 5)
		w.Write(data)
		w.Close()
		return b.Bytes()
	case compress.Gzip:
		cmd := exec.Command("gzip", "-c")
		cmd.Stdin, cmd.Stdout = bytes.NewReader(data), &b
		if err := cmd.Run(); err != nil {
			t.Fatalf("gzip: %v", err)
		}
		return b.Bytes()
	}
	w, err := compress.NewWriter(method, &b, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// add puts it into the cache, signed with the cache's key (unless sign
// is false); mutate may change the narinfo before it is written.
func (c *testCache) add(it *item, sign bool, mutate ...func(*narinfo.NarInfo)) {
	c.t.Helper()
	file := compressWith(c.t, c.compression, it.nar)
	fh := hash.Sum(hash.SHA256, file)
	url := "nar/" + fh.Nix32() + ".nar" + compress.Ext(c.compression)
	c.write(url, file)
	p, err := c.storeDir.ParseBase(it.info.Path.Base())
	if err != nil {
		c.t.Fatal(err)
	}
	ni := &narinfo.NarInfo{StorePath: p, URL: url, Compression: c.compression, FileHash: fh, FileSize: uint64(len(file)),
		NarHash: it.info.NarHash, NarSize: it.info.NarSize, CA: it.info.CA}
	for _, r := range it.info.References {
		rp, _ := c.storeDir.ParseBase(r.Base())
		ni.References = append(ni.References, rp)
	}
	if sign {
		ni.Sigs = []signature.Signature{c.key.Sign(narinfo.Fingerprint(p, ni.NarHash, ni.NarSize, ni.References))}
	}
	for _, m := range mutate {
		m(ni)
	}
	it.ni = ni
	c.write(p.HashPart()+".narinfo", []byte(ni.String()))
}

// recLogger records what a session shows the client.
type recLogger struct {
	mu    sync.Mutex
	lines []string
	acts  []string
	next  atomic.Uint64
}

func (l *recLogger) Log(level uint64, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, msg)
}

func (l *recLogger) Warn(msg string) { l.Log(worker.LvlWarn, "warning: "+msg) }

func (l *recLogger) StartActivity(level, typ uint64, text string, fields []worker.Field, parent uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acts = append(l.acts, fmt.Sprintf("%d %s", typ, text))
	return l.next.Add(1)
}

func (l *recLogger) StopActivity(id uint64)                       {}
func (l *recLogger) Result(id, typ uint64, fields []worker.Field) {}

func (l *recLogger) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *recLogger) activities() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.acts, "\n")
}

// env is a local store and a session on it.
type env struct {
	t     testing.TB
	ts    *storetest.Store
	store *nixstore.Store
	pool  *Pool
	log   *recLogger
	s     *Session
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	ts := storetest.New(t, false)
	e := &env{t: t, ts: ts, store: ts.Store, pool: NewPool(PoolOptions{}), log: &recLogger{}}
	t.Cleanup(e.pool.Close)
	e.s = e.pool.NewSession(e.store, e.log)
	e.s.Configure(cfg)
	return e
}

// config is a Config trusting keys, with no narinfo caching and fast
// retries.
func config(keys *signature.KeySet, subs ...string) Config {
	return Config{UseSubstitutes: true, Substituters: subs, TrustedKeys: keys, RequireSigs: true,
		DownloadAttempts: 3, StalledTimeout: 10 * time.Second}
}

func keysOf(cs ...*testCache) *signature.KeySet {
	var ks []signature.PublicKey
	for _, c := range cs {
		ks = append(ks, c.key.Public())
	}
	return signature.NewKeySet(ks...)
}

func (e *env) realise(wants ...Want) []Result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := e.s.Realise(ctx, wants, RealiseOptions{Progress: true})
	if err != nil {
		e.t.Fatalf("Realise: %v\nlog:\n%s", err, e.log.text())
	}
	return res
}

func (e *env) valid(p storepath.Path) bool {
	ok, err := e.store.IsValid(context.Background(), p)
	if err != nil {
		e.t.Fatal(err)
	}
	return ok
}

// storeLeftovers lists what is in the real store directory besides the
// valid paths named.
func (e *env) storeLeftovers(valid ...storepath.Path) []string {
	e.t.Helper()
	entries, err := os.ReadDir(e.store.RealStoreDir())
	if err != nil {
		e.t.Fatal(err)
	}
	keep := map[string]bool{".links": true}
	for _, p := range valid {
		keep[p.Base()] = true
	}
	var extra []string
	for _, de := range entries {
		if !keep[de.Name()] {
			extra = append(extra, de.Name())
		}
	}
	return extra
}

func wants(items ...*item) []Want {
	var w []Want
	for _, it := range items {
		w = append(w, Want{Path: it.info.Path})
	}
	return w
}

var _ io.Reader = (*progressReader)(nil)

// narOfFile returns the NAR of a file and its SHA-256.
func narOfFile(t testing.TB, path string) ([]byte, hash.Hash) { return storetest.NarOf(t, path) }

func hashOf(s string) hash.Hash { return hash.Sum(hash.SHA256, []byte(s)) }

func infoOf(p storepath.Path, narHash hash.Hash, nar []byte, ca string) *nixstore.PathInfo {
	return &nixstore.PathInfo{Path: p, NarHash: narHash, NarSize: uint64(len(nar)), CA: ca}
}
