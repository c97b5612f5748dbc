package substitute

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/storepath"
)

// truncating answers NAR requests with only the first n bytes of the
// file (the connection is then cut), advertising ranges or not.
func truncating(n int, ranges bool, times *atomic.Int64) func(http.ResponseWriter, *http.Request, http.Handler) {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !strings.HasPrefix(r.URL.Path, "/nar/") || (times != nil && times.Add(-1) < 0) {
			next.ServeHTTP(w, r)
			return
		}
		rec := &capture{header: http.Header{}}
		next.ServeHTTP(rec, r)
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		if !ranges {
			w.Header().Del("Accept-Ranges")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(rec.body)))
		w.WriteHeader(rec.status)
		w.Write(rec.body[:min(n, len(rec.body))])
		w.(http.Flusher).Flush()
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
			}
		}
	}
}

// corrupting flips a byte in the middle of every NAR file it serves.
func corrupting(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if !strings.HasPrefix(r.URL.Path, "/nar/") {
		next.ServeHTTP(w, r)
		return
	}
	rec := &capture{header: http.Header{}}
	next.ServeHTTP(rec, r)
	rec.body[len(rec.body)/2] ^= 0x01
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.status)
	w.Write(rec.body)
}

type capture struct {
	header http.Header
	status int
	body   []byte
}

func (c *capture) Header() http.Header { return c.header }
func (c *capture) WriteHeader(s int)   { c.status = s }
func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = 200
	}
	c.body = append(c.body, b...)
	return len(b), nil
}

// A NAR cut off or corrupted mid-stream is refused: the path stays
// invalid and nothing is left in the store; compressed or not.
func TestBadNARRefused(t *testing.T) {
	for _, method := range []string{compress.None, compress.XZ, compress.Zstd} {
		for _, bad := range []string{"truncated", "corrupted"} {
			t.Run(method+"-"+bad, func(t *testing.T) {
				tc := newTestCache(t, storepath.DefaultDir, method, "")
				big := makeItem(t, tc.storeDir, "big", strings.Repeat("0123456789abcdef", 64<<10))
				tc.add(big, true)
				if bad == "truncated" {
					tc.wrap = truncating(int(big.ni.FileSize/2), false, nil)
				} else {
					tc.wrap = corrupting
				}
				e := newEnv(t, config(keysOf(tc), tc.url()))
				res := e.realise(wants(big)...)
				if res[0].Status != Failed || e.valid(big.info.Path) {
					t.Fatalf("Realise = %+v\n%s", res, e.log.text())
				}
				if left := e.storeLeftovers(); len(left) != 0 {
					t.Errorf("left in the store: %v", left)
				}
				log := e.log.text()
				if !strings.Contains(log, "error:") {
					t.Errorf("no error logged:\n%s", log)
				}
				if d, err := Decide(big.info.Path, res, false); d != Fail || err == nil {
					t.Errorf("Decide = %v, %v; want fail without --fallback", d, err)
				}
				if d, _ := Decide(big.info.Path, res, true); d != Build {
					t.Errorf("Decide with --fallback = %v; want build", d)
				}
			})
		}
	}
}

// A transfer cut off by the network is resumed at its offset when the
// server accepts ranges (Nix's "retrying from offset").
func TestTruncatedTransferResumed(t *testing.T) {
	tc := newTestCache(t, storepath.DefaultDir, compress.Zstd, "")
	big := makeItem(t, tc.storeDir, "big", strings.Repeat("resume me ", 200<<10))
	tc.add(big, true)
	var once atomic.Int64
	once.Store(1)
	tc.wrap = truncating(int(big.ni.FileSize/3), true, &once)
	e := newEnv(t, config(keysOf(tc), tc.url()))
	res := e.realise(wants(big)...)
	if res[0].Status != Substituted {
		t.Fatalf("Realise = %+v\n%s", res, e.log.text())
	}
	if !strings.Contains(e.log.text(), fmt.Sprintf("retrying from offset %d", big.ni.FileSize/3)) {
		t.Errorf("no retry message:\n%s", e.log.text())
	}
}

// A server that stops sending is abandoned after stalled-download-timeout.
func TestStalledTransfer(t *testing.T) {
	tc := newTestCache(t, storepath.DefaultDir, compress.None, "")
	it := makeItem(t, tc.storeDir, "p", "stall")
	tc.add(it, true)
	stop := make(chan struct{})
	defer close(stop)
	tc.wrap = func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if strings.HasPrefix(r.URL.Path, "/nar/") {
			w.Header().Set("Content-Length", "100000")
			w.WriteHeader(200)
			w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			select {
			case <-stop:
			case <-r.Context().Done():
			}
			return
		}
		next.ServeHTTP(w, r)
	}
	cfg := config(keysOf(tc), tc.url())
	cfg.StalledTimeout, cfg.DownloadAttempts = time.Second, 1
	e := newEnv(t, cfg)
	start := time.Now()
	res := e.realise(wants(it)...)
	if res[0].Status != Failed || time.Since(start) > 20*time.Second {
		t.Fatalf("Realise = %+v after %v\n%s", res, time.Since(start), e.log.text())
	}
	if !strings.Contains(e.log.text(), "Timeout was reached") {
		t.Errorf("log:\n%s", e.log.text())
	}
}

// A cache that fails (HTTP 500) fails the operation, unless --fallback:
// then it is reported, skipped and the next cache serves the path.
func TestFallback(t *testing.T) {
	broken := newTestCache(t, storepath.DefaultDir, compress.Zstd, "StoreDir: /nix/store\nPriority: 1\n")
	good := newTestCache(t, storepath.DefaultDir, compress.Zstd, "")
	it := makeItem(t, good.storeDir, "p", "fallback")
	good.add(it, true)
	broken.wrap = func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if strings.HasSuffix(r.URL.Path, ".narinfo") {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		next.ServeHTTP(w, r)
	}
	cfg := config(keysOf(good), broken.url(), good.url())
	cfg.DownloadAttempts = 2
	e := newEnv(t, cfg)
	_, err := e.s.Realise(context.Background(), wants(it), RealiseOptions{})
	if err == nil || !strings.Contains(err.Error(), "HTTP error 500") {
		t.Fatalf("without --fallback: %v", err)
	}
	if !strings.Contains(e.log.text(), "retrying in") {
		t.Errorf("a 500 was not retried:\n%s", e.log.text())
	}
	cfg.TryFallback = true
	e.s.Configure(cfg)
	res := e.realise(wants(it)...)
	if res[0].Status != Substituted {
		t.Fatalf("with --fallback: %+v\n%s", res, e.log.text())
	}
	if !strings.Contains(e.log.text(), "disabling binary cache '"+broken.url()+"' for 60 seconds") {
		t.Errorf("log:\n%s", e.log.text())
	}
}

// Credentials come from netrc-file, sent up front; without them a private
// cache is not a binary cache.
func TestNetrc(t *testing.T) {
	tc := newTestCache(t, storepath.DefaultDir, compress.Zstd, "")
	it := makeItem(t, tc.storeDir, "p", "private")
	tc.add(it, true)
	tc.wrap = func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if _, pass, ok := r.BasicAuth(); !ok || pass != "s3cret" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	}
	netrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(netrc, []byte("machine 127.0.0.1 password s3cret\n"), 0o600)
	cfg := config(keysOf(tc), tc.url())
	e := newEnv(t, cfg)
	if cs := e.s.Caches(context.Background()); len(cs) != 0 || !strings.Contains(e.log.text(), "does not appear to be a binary cache") {
		t.Errorf("without credentials: %v\n%s", cs, e.log.text())
	}
	cfg.NetrcFile = netrc
	e = newEnv(t, cfg)
	if res := e.realise(wants(it)...); res[0].Status != Substituted {
		t.Fatalf("with netrc: %+v\n%s", res, e.log.text())
	}
}

// Names in a file:// cache's narinfo cannot leave the cache directory or
// open something that is not a regular file; an http cache cannot point
// at local files.
func TestHostileNARURLs(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret.nar")
	os.WriteFile(outside, []byte("not yours"), 0o644)
	for _, tt := range []struct{ name, url string }{
		{"dotdot", "../../../../../../.." + outside},
		{"absolute", outside},
		{"file-url", "file://" + outside},
		{"fifo", "nar/fifo"},
		{"directory", "nar"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCache(t, storepath.DefaultDir, compress.None, "")
			syscall.Mkfifo(filepath.Join(tc.dir, "nar", "fifo"), 0o644)
			it := makeItem(t, tc.storeDir, "p", "x")
			tc.add(it, true, func(ni *narinfo.NarInfo) { ni.URL = tt.url })
			uris := []string{tc.fileURL(), tc.url()}
			if tt.name == "fifo" || tt.name == "directory" {
				uris = uris[:1] // the test's own file server would block on them
			}
			for _, uri := range uris {
				e := newEnv(t, config(keysOf(tc), uri))
				done := make(chan []Result, 1)
				go func() { done <- e.realise(wants(it)...) }()
				select {
				case res := <-done:
					if res[0].Status.OK() || e.valid(it.info.Path) {
						t.Errorf("%s: URL %q: %+v", uri, tt.url, res)
					}
				case <-time.After(20 * time.Second):
					t.Fatalf("%s: URL %q: hangs", uri, tt.url)
				}
			}
		})
	}
}

// A narinfo for another path under the hash asked for, or one that does
// not parse, gives nothing.
func TestHostileNarinfos(t *testing.T) {
	tc := newTestCache(t, storepath.DefaultDir, compress.None, "")
	it := makeItem(t, tc.storeDir, "p", "x")
	tc.add(it, true, func(ni *narinfo.NarInfo) {
		ni.StorePath, _ = tc.storeDir.ParseBase(it.info.Path.HashPart() + "-other-name")
	})
	e := newEnv(t, config(keysOf(tc), tc.url()))
	if res := e.realise(wants(it)...); res[0].Status != NoSubstituters {
		t.Errorf("narinfo of another name: %+v", res)
	}
	tc.write(it.info.Path.HashPart()+".narinfo", []byte("StorePath: garbage\n"))
	cfg := config(keysOf(tc), tc.url())
	e = newEnv(t, cfg)
	if _, err := e.s.Realise(context.Background(), wants(it), RealiseOptions{}); err == nil || !strings.Contains(err.Error(), "is corrupt") {
		t.Errorf("corrupt narinfo: %v", err)
	}
}

// The narinfo cache answers within the TTLs of the asking connection:
// with 0 it asks again, with a long negative TTL a miss is remembered.
func TestNarinfoTTL(t *testing.T) {
	tc := newTestCache(t, storepath.DefaultDir, compress.None, "")
	it := makeItem(t, tc.storeDir, "p", "x")
	cfg := config(keysOf(tc), tc.url())
	cfg.NegativeTTL = time.Hour
	e := newEnv(t, cfg)
	ctx := context.Background()
	if got, _ := e.s.QuerySubstitutablePaths(ctx, []storepath.Path{it.info.Path}); len(got) != 0 {
		t.Fatal("found before it was added")
	}
	tc.add(it, true)
	if got, _ := e.s.QuerySubstitutablePaths(ctx, []storepath.Path{it.info.Path}); len(got) != 0 {
		t.Error("the negative answer was not remembered")
	}
	cfg.NegativeTTL = 0
	e.s.Configure(cfg)
	if got, _ := e.s.QuerySubstitutablePaths(ctx, []storepath.Path{it.info.Path}); len(got) != 1 {
		t.Error("with negative TTL 0 the cache was not asked again")
	}
	narinfo := "/" + it.info.Path.HashPart() + ".narinfo"
	for _, tt := range []struct {
		ttl  time.Duration
		want int64
	}{{0, 2}, {time.Hour, 0}} {
		before := tc.hitCount(narinfo)
		cfg.PositiveTTL = tt.ttl
		e.s.Configure(cfg)
		e.s.QuerySubstitutablePaths(ctx, []storepath.Path{it.info.Path})
		e.s.QuerySubstitutablePaths(ctx, []storepath.Path{it.info.Path})
		if n := tc.hitCount(narinfo) - before; n != tt.want {
			t.Errorf("with positive TTL %v the narinfo was fetched %d times, want %d", tt.ttl, n, tt.want)
		}
	}
}
