package queue_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/listen"
	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/push"
	"github.com/silo-cache/silo/internal/queue"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

type fixture struct {
	n               *nixtest.Nix
	leaf, mid, top  string
	keyFile, pubKey string
	key             signature.SecretKey
}

func newFixture(t *testing.T) *fixture {
	n := nixtest.Require(t)
	f := &fixture{n: n}
	f.leaf = n.Build("leaf", "echo leaf > $out")
	f.mid = n.Build("mid", "echo $dep0 > $out", f.leaf)
	f.top = n.Build("top", "echo $dep0 > $out", f.mid)
	dir := t.TempDir()
	f.keyFile = filepath.Join(dir, "sec")
	n.Run("nix-store", "--generate-binary-cache-key", "queue-test-1", f.keyFile, filepath.Join(dir, "pub"))
	pub, _ := os.ReadFile(filepath.Join(dir, "pub"))
	f.pubKey = strings.TrimSpace(string(pub))
	var err error
	if f.key, err = signature.LoadSecretKeyFile(f.keyFile); err != nil {
		t.Fatal(err)
	}
	return f
}

// startQueue runs a queue on socket until the test ends (or stop is called).
func startQueue(t *testing.T, f *fixture, socket, stateDir, targetURL string) (q *queue.Queue, stop func()) {
	t.Helper()
	store, err := localstore.Open(context.Background(), storepath.DefaultDir)
	if err != nil {
		t.Fatal(err)
	}
	target, err := push.OpenTarget(targetURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	q, err = queue.Open(context.Background(), queue.Options{
		StateDir: stateDir, Socket: socket, Store: store,
		Uploader: &push.Uploader{Target: target, SigningKey: &f.key},
		Jobs:     4, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		SpoolInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l, err := listen.Addr(ctx, "unix:"+socket)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- q.Serve(ctx, l) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("queue: %v", err)
			}
			q.Close()
			store.Close()
		})
	}
	t.Cleanup(stop)
	return q, stop
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

func status(t *testing.T, q *queue.Queue) queue.Status {
	s, err := q.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hookEnv(paths ...string) func(string) string {
	return func(k string) string {
		if k == "OUT_PATHS" {
			return strings.Join(paths, " ")
		}
		return ""
	}
}

func TestHookQueueUploadsClosure(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	socket := filepath.Join(dir, "queue.sock")
	cache := filepath.Join(dir, "cache")
	q, _ := startQueue(t, f, socket, filepath.Join(dir, "state"), "file://"+cache)

	if !queue.Hook(context.Background(), hookEnv(f.top), queue.HookOptions{Socket: socket, Timeout: time.Second}) {
		t.Fatal("hook did not queue")
	}
	// A duplicate and an overlapping closure cost nothing more.
	queue.Hook(context.Background(), hookEnv(f.top, f.mid), queue.HookOptions{Socket: socket, Timeout: time.Second})
	waitFor(t, "3 paths done", 20*time.Second, func() bool { s := status(t, q); return s.Done == 3 && s.Roots == 0 })
	if s := status(t, q); s.Uploaded != 3 || s.Pending != 0 || s.Failed != 0 {
		t.Errorf("status %+v, want 3 uploaded", s)
	}
	if _, err := f.n.Try("nix", "copy", "--from", "file://"+cache, "--to", t.TempDir(),
		"--option", "trusted-public-keys", f.pubKey, f.top); err != nil {
		t.Errorf("nix copy from the queue's cache: %v", err)
	}
	if s := status(t, q); s.Spooled != 0 {
		t.Errorf("%d spool files with the queue up", s.Spooled)
	}
}

func TestHookSpoolsWhenQueueDown(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	socket := filepath.Join(dir, "queue.sock")
	start := time.Now()
	var stderr strings.Builder
	if !queue.Hook(context.Background(), hookEnv(f.top), queue.HookOptions{Socket: socket, Stderr: &stderr}) {
		t.Fatalf("hook failed to spool: %s", stderr.String())
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("hook took %v with the queue down", d)
	}
	spooled, _ := filepath.Glob(filepath.Join(queue.SpoolDir(socket), "*.json"))
	if len(spooled) != 1 {
		t.Fatalf("spool holds %v, want one file", spooled)
	}
	cache := filepath.Join(dir, "cache")
	q, _ := startQueue(t, f, socket, filepath.Join(dir, "state"), "file://"+cache)
	waitFor(t, "spooled closure uploaded", 20*time.Second, func() bool { return status(t, q).Done == 3 })
	if left, _ := filepath.Glob(filepath.Join(queue.SpoolDir(socket), "*")); len(left) != 0 {
		t.Errorf("spool not emptied: %v", left)
	}
}

// flakyCache is a Nix HTTP cache accepting PUT that can be taken down.
type flakyCache struct {
	dir  string
	down atomic.Bool
	puts atomic.Int64
}

func (c *flakyCache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if c.down.Load() {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	}
	file := filepath.Join(c.dir, filepath.Clean("/"+r.URL.Path))
	switch r.Method {
	case http.MethodPut:
		os.MkdirAll(filepath.Dir(file), 0o755)
		data, _ := io.ReadAll(r.Body)
		os.WriteFile(file, data, 0o644)
		c.puts.Add(1)
	case http.MethodGet, http.MethodHead:
		http.ServeFile(w, r, file)
	default:
		http.NotFound(w, r)
	}
}

func TestCacheDownThenUp(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	c := &flakyCache{dir: filepath.Join(dir, "cache")}
	c.down.Store(true)
	hs := httptest.NewServer(c)
	defer hs.Close()
	socket := filepath.Join(dir, "queue.sock")
	q, _ := startQueue(t, f, socket, filepath.Join(dir, "state"), hs.URL)
	if err := q.Enqueue(context.Background(), []string{f.top}, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "failures recorded", 10*time.Second, func() bool {
		s := status(t, q)
		return s.Failing > 0 && len(s.Failures) > 0 && strings.Contains(s.Failures[0].Error, "503")
	})
	if s := status(t, q); s.Done != 0 {
		t.Fatalf("status %+v with the cache down", s)
	}
	c.down.Store(false)
	waitFor(t, "queue drained after the cache returned", 20*time.Second, func() bool { return status(t, q).Done == 3 })
	if s := status(t, q); s.Failing != 0 || len(s.Failures) != 0 {
		t.Errorf("failures left after draining: %+v", s)
	}
	if _, err := f.n.Try("nix", "copy", "--from", hs.URL, "--to", t.TempDir(),
		"--option", "trusted-public-keys", f.pubKey, f.top); err != nil {
		t.Errorf("nix copy from the cache: %v", err)
	}
}

func TestMissingPathFailsUntilRetry(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	q, _ := startQueue(t, f, filepath.Join(dir, "queue.sock"), filepath.Join(dir, "state"), "file://"+filepath.Join(dir, "cache"))
	gone := "/nix/store/00000000000000000000000000000000-gone"
	if err := q.Enqueue(context.Background(), []string{gone}, ""); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(context.Background(), []string{"/not/a/store/path"}, ""); err == nil {
		t.Errorf("Enqueue accepted a path outside the store")
	}
	waitFor(t, "the missing path to fail", 10*time.Second, func() bool { return status(t, q).Failed == 1 })
	s := status(t, q)
	if len(s.Failures) != 1 || s.Failures[0].Path != gone || !strings.Contains(s.Failures[0].Error, "not valid") || !s.Failures[0].NextAttempt.IsZero() {
		t.Errorf("failures %+v, want %s not valid, not retried", s.Failures, gone)
	}
	n, err := q.Retry(context.Background())
	if err != nil || n != 1 {
		t.Errorf("Retry = %d, %v; want 1", n, err)
	}
}
