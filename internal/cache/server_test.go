package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

func TestPushAndServe(t *testing.T) {
	e := newEnv(t, Options{})
	c, key := e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})

	dep := newUpload(t, "dep", fileNAR("dep contents\n"), compress.XZ)
	e.push("main", tok, dep)
	top := newUpload(t, "top", dirNAR("a", "hello", "b", dep.path.String()), compress.Zstd, dep.path)
	// The client's own signature is kept.
	clientKey, _ := signature.GenerateKey("client-1", bytes.NewReader(make([]byte, 64)))
	top.info.Sign(clientKey)
	e.push("main", tok, top)

	st, info := e.do("GET", "/main/nix-cache-info", "", nil)
	if st != 200 || info != "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n" {
		t.Errorf("nix-cache-info = %d %q", st, info)
	}
	st, text := e.do("GET", "/main/"+top.narinfoPath(), "", nil)
	if st != 200 {
		t.Fatalf("GET narinfo: %d %s", st, text)
	}
	ni, err := narinfo.ParseString(storepath.DefaultDir, text)
	if err != nil {
		t.Fatal(err)
	}
	// It describes the stored file, and both signatures verify.
	if ni.Compression != "zstd" || !strings.HasPrefix(ni.URL, "nar/") || ni.NarHash != top.info.NarHash || ni.NarSize != top.info.NarSize {
		t.Errorf("served narinfo:\n%s", text)
	}
	for _, k := range []signature.SecretKey{key, clientKey} {
		if !ni.Verify(signature.NewKeySet(k.Public())) {
			t.Errorf("served narinfo lacks a valid signature by %s:\n%s", k.Name(), text)
		}
	}
	if len(ni.References) != 1 || ni.References[0] != dep.path {
		t.Errorf("references = %v, want [%s]", ni.References, dep.path)
	}
	// The NAR downloads as described.
	st, file := e.do("GET", "/main/"+ni.URL, "", nil)
	if st != 200 || uint64(len(file)) != ni.FileSize {
		t.Fatalf("GET %s: %d, %d bytes, want %d", ni.URL, st, len(file), ni.FileSize)
	}
	dec, _ := compress.NewReader(ni.Compression, strings.NewReader(file))
	got, _ := io.ReadAll(dec)
	if !bytes.Equal(got, top.nar) {
		t.Errorf("downloaded NAR differs from the uploaded one")
	}
	// Conditional and range requests work on NAR files.
	req, _ := http.NewRequest("GET", e.ts.URL+"/main/"+ni.URL, nil)
	req.Header.Set("If-None-Match", `"`+ni.URL+`"`)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with the NAR's ETag: %s, want 304", resp.Status)
	}
	req, _ = http.NewRequest("GET", e.ts.URL+"/main/"+ni.URL, nil)
	req.Header.Set("Range", "bytes=4-9")
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.StatusCode != http.StatusPartialContent {
		t.Errorf("Range request: %s, want 206", resp.Status)
		resp.Body.Close()
	} else {
		part, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(part) != file[4:10] {
			t.Errorf("Range 4-9 = %x, want %x", part, file[4:10])
		}
	}
	// The listing is the one nar.WriteListing makes.
	var want bytes.Buffer
	if err := nar.WriteListing(&want, bytes.NewReader(top.nar)); err != nil {
		t.Fatal(err)
	}
	if st, ls := e.do("GET", "/main/"+top.path.HashPart()+".ls", "", nil); st != 200 || ls != want.String() {
		t.Errorf(".ls = %d %s, want %s", st, ls, want.String())
	}
	// nix-serve's URL serves the plain NAR.
	if st, plain := e.do("GET", "/main/nar/"+top.path.HashPart()+"-"+top.info.NarHash.Nix32()+".nar", "", nil); st != 200 || plain != string(top.nar) {
		t.Errorf("nix-serve URL: %d, %d bytes", st, len(plain))
	}
	// The client's URL: HEAD says it is there (so Nix skips re-uploading).
	if st, _ := e.do("HEAD", "/main/"+top.url, "", nil); st != 200 {
		t.Errorf("HEAD of the client's NAR URL = %d, want 200", st)
	}
	if st, _ := e.do("HEAD", "/main/nar/0000000000000000000000000000000000000000000000000000.nar.xz", "", nil); st != 404 {
		t.Errorf("HEAD of an unknown NAR = %d, want 404", st)
	}
	if st, _ := e.do("GET", "/main/00000000000000000000000000000000.narinfo", "", nil); st != 404 {
		t.Errorf("GET of an unknown narinfo = %d, want 404", st)
	}
	// An unknown cache answers anonymous clients as a private one would;
	// a token whose pattern covers the name learns it is free.
	if st, _ := e.do("GET", "/nope/nix-cache-info", "", nil); st != 401 {
		t.Errorf("unknown cache, anonymous = %d, want 401", st)
	}
	if st, _ := e.do("GET", "/nope/nix-cache-info", e.token("*", meta.PermPull, time.Time{}), nil); st != 404 {
		t.Errorf("unknown cache, a token for every cache = %d, want 404", st)
	}
	_ = c
}

// Identical NARs are stored once, whichever cache and compression they came with.
func TestDedup(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("a", true)
	e.cache("b", true)
	tok := e.token("*", meta.PermPush, time.Time{})
	data := dirNAR("x", strings.Repeat("same ", 1000))
	e.push("a", tok, newUpload(t, "one", data, compress.XZ))
	e.push("b", tok, newUpload(t, "two", data, compress.Zstd))
	e.push("b", tok, newUpload(t, "three", data, compress.None))
	var nars []string
	for _, k := range e.blobKeys() {
		if strings.HasPrefix(k, "nar/") {
			nars = append(nars, k)
		}
	}
	if len(nars) != 1 {
		t.Errorf("one NAR pushed three times is stored as %v, want one file", nars)
	}
}

func TestBuildLogs(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", false)
	push := e.token("main", meta.PermPush, time.Time{})
	drv := "/main/log/00000000000000000000000000000000-x.drv"
	if st, body := e.do("PUT", drv, push, []byte("build output\n")); st != 204 {
		t.Fatalf("PUT log: %d %s", st, body)
	}
	if st, body := e.do("GET", drv, push, nil); st != 200 || body != "build output\n" {
		t.Errorf("GET log = %d %q", st, body)
	}
	if st, _ := e.do("GET", drv, "", nil); st != 401 {
		t.Errorf("GET log of a private cache without token = %d, want 401", st)
	}
	if st, _ := e.do("PUT", "/main/log/not-a-drv", push, []byte("x")); st != 400 {
		t.Errorf("PUT log for a non-derivation = %d, want 400", st)
	}
}

func TestMissingEndpoint(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", true)
	push := e.token("main", meta.PermPush, time.Time{})
	pull := e.token("main", meta.PermPull, time.Time{})
	have := newUpload(t, "have", fileNAR("x"), compress.Zstd)
	e.push("main", push, have)
	q := "11111111111111111111111111111111\n" + have.path.HashPart() + "\n00000000000000000000000000000000\n"
	st, body := e.do("POST", "/main/_silo/missing", push, []byte(q))
	if st != 200 || body != "11111111111111111111111111111111\n00000000000000000000000000000000\n" {
		t.Errorf("missing = %d %q", st, body)
	}
	if st, _ := e.do("POST", "/main/_silo/missing", pull, []byte(q)); st != 403 {
		t.Errorf("missing with a pull token = %d, want 403", st)
	}
	if st, _ := e.do("POST", "/main/_silo/missing", "", []byte(q)); st != 401 {
		t.Errorf("missing without a token = %d, want 401", st)
	}
	if st, body := e.do("POST", "/main/_silo/missing", push, []byte("not-a-hash\n")); st != 400 {
		t.Errorf("missing with garbage = %d %q, want 400", st, body)
	}
}

func TestGarbageCollection(t *testing.T) {
	e := newEnv(t, Options{UploadTTL: time.Millisecond})
	e.cache("main", true)
	e.cache("gone", true)
	tok := e.token("*", meta.PermPush, time.Time{})
	kept := newUpload(t, "kept", fileNAR("kept"), compress.Zstd)
	e.push("main", tok, kept)
	staged := newUpload(t, "staged", fileNAR("never committed"), compress.Zstd)
	if st, body := e.do("PUT", "/main/"+staged.url, tok, staged.file); st != 200 {
		t.Fatalf("PUT: %d %s", st, body)
	}
	e.push("gone", tok, newUpload(t, "deleted", fileNAR("in a deleted cache"), compress.Zstd))
	if err := e.meta.DeleteCache(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	before := len(e.blobKeys())
	time.Sleep(5 * time.Millisecond)
	n, err := e.srv.CollectGarbage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Two NARs (staged, deleted cache's), each with its listing.
	if n != 4 || len(e.blobKeys()) != before-4 {
		t.Errorf("CollectGarbage deleted %d blobs, %d of %d left; want 4 deleted", n, len(e.blobKeys()), before)
	}
	if st, _ := e.do("GET", "/main/"+kept.narinfoPath(), "", nil); st != 200 {
		t.Errorf("kept path is gone after GC: %d", st)
	}
	// An orphan blob (as a crash between storing and recording leaves) is swept.
	w, _ := e.blobs.Create(context.Background())
	w.Write([]byte("orphan"))
	w.Commit(context.Background(), "nar/orphan.nar.zst")
	if n, err := e.srv.SweepOrphans(context.Background(), 0); err != nil || n != 1 {
		t.Errorf("SweepOrphans = %d, %v; want 1", n, err)
	}
	if st, _ := e.do("GET", "/main/"+kept.narinfoPath(), "", nil); st != 200 {
		t.Errorf("kept path is gone after the sweep: %d", st)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	e.push("main", tok, newUpload(t, "m", fileNAR("metrics"), compress.Zstd))
	bad := newUpload(t, "bad", fileNAR("bad"), compress.Zstd)
	bad.info.NarSize++
	e.do("PUT", "/main/"+bad.url, tok, bad.file)
	e.do("PUT", "/main/"+bad.narinfoPath(), tok, []byte(bad.info.String()))
	if st, body := e.do("GET", "/healthz", "", nil); st != 200 || body != "ok\n" {
		t.Errorf("healthz = %d %q", st, body)
	}
	for range 2 {
		e.do("GET", "/main/"+bad.narinfoPath(), "", nil)
		e.do("BREW", "/main/"+bad.narinfoPath(), "", nil) // a method label clients cannot choose
	}
	st, body := e.do("GET", "/metrics", e.token("*", meta.PermAdmin, time.Time{}), nil)
	if st != 200 {
		t.Fatalf("metrics: %d", st)
	}
	mustContain(t, "metrics", body,
		`silo_http_requests_total{code="200",kind="narinfo",method="PUT"} 1`,
		`silo_http_requests_total{code="404",kind="narinfo",method="GET"} 2`,
		`silo_http_requests_total{code="404",kind="other",method="other"} 2`,
		`silo_cache_paths{cache="main"} 1`,
		`silo_upload_rejected_total{reason="mismatch"} 1`,
		`silo_http_response_bytes_total{kind="narinfo"}`,
		`silo_cache_stored_bytes{cache="main"}`)
}

func TestRequestID(t *testing.T) {
	e := newEnv(t, Options{})
	req, _ := http.NewRequest("GET", e.ts.URL+"/healthz", nil)
	req.Header.Set("X-Request-Id", "abc123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-Id"); got != "abc123" {
		t.Errorf("X-Request-Id = %q, want the client's", got)
	}
}

// Without the client's id, every request gets a fresh one.
func TestRequestIDsDiffer(t *testing.T) {
	e := newEnv(t, Options{})
	other := newEnv(t, Options{})
	seen := map[string]bool{}
	for _, base := range []string{e.ts.URL, e.ts.URL, e.ts.URL, other.ts.URL} {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		id := resp.Header.Get("X-Request-Id")
		if id == "" || seen[id] {
			t.Errorf("X-Request-Id %q: empty or given twice (earlier: %v)", id, seen)
		}
		seen[id] = true
	}
}

// The stored form is configurable; narinfos describe it. Every upload is
// stored as the server's own compression of exactly the NAR, whatever the
// client sent: the stored file depends on the NAR alone.
func TestStoredCompression(t *testing.T) {
	for _, stored := range []string{compress.Zstd, compress.XZ, compress.None} {
		for _, sent := range []string{compress.Zstd, compress.XZ, compress.None} {
			t.Run(sent+" stored as "+stored, func(t *testing.T) {
				e := newEnv(t, Options{Compression: stored})
				e.cache("main", true)
				tok := e.token("main", meta.PermPush, time.Time{})
				u := newUpload(t, "s", dirNAR("f", strings.Repeat("compressible ", 500)), sent)
				// Compress at a level the server would not choose, so a
				// recompressed file cannot equal the upload by chance.
				var buf bytes.Buffer
				w, _ := compress.NewWriter(sent, &buf, 19)
				w.Write(u.nar)
				w.Close()
				u.file = buf.Bytes()
				u.info.FileHash, u.info.FileSize = hash.Sum(hash.SHA256, u.file), uint64(len(u.file))
				u.url = "nar/" + u.info.FileHash.Nix32() + ".nar" + compress.Ext(sent)
				u.info.URL = u.url
				e.push("main", tok, u)
				_, text := e.do("GET", "/main/"+u.narinfoPath(), "", nil)
				ni, err := narinfo.ParseString(storepath.DefaultDir, text)
				if err != nil {
					t.Fatal(err)
				}
				if ni.Compression != stored || !strings.HasSuffix(ni.URL, ".nar"+compress.Ext(stored)) {
					t.Errorf("narinfo says Compression %q URL %q, want %s", ni.Compression, ni.URL, stored)
				}
				_, file := e.do("GET", "/main/"+ni.URL, "", nil)
				dec, err := compress.NewReader(stored, strings.NewReader(file))
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(dec)
				if !bytes.Equal(got, u.nar) || uint64(len(file)) != ni.FileSize {
					t.Errorf("stored %s file: %d bytes (narinfo says %d), decompresses to the NAR: %v", stored, len(file), ni.FileSize, bytes.Equal(got, u.nar))
				}
				want := e.storedForm(u.nar)
				if file != string(want) {
					t.Errorf("sent %s, stored %s: the served file is not the server's own compression of the NAR (%d bytes, want %d)", sent, stored, len(file), len(want))
				}
			})
		}
	}
}

// Narinfo lookups (found or not) are logged at debug, everything else at
// info or above.
func TestRequestLogLevels(t *testing.T) {
	var logs syncBuffer
	e := newEnv(t, Options{Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	u := newUpload(t, "logged", fileNAR("logged"), compress.Zstd)
	e.push("main", tok, u)
	missing := strings.Repeat("0", 32) + ".narinfo"
	e.do("GET", "/main/"+u.narinfoPath(), "", nil)
	e.do("HEAD", "/main/"+missing, "", nil)
	e.do("GET", "/main/nix-cache-info", "", nil)
	levels := map[string]string{}
	dec := json.NewDecoder(strings.NewReader(logs.String()))
	for dec.More() {
		var l struct{ Level, Method, Path string }
		if err := dec.Decode(&l); err != nil {
			t.Fatal(err)
		}
		levels[l.Method+" "+l.Path] = l.Level
	}
	want := map[string]string{
		"PUT /main/" + u.narinfoPath(): "INFO",
		"GET /main/" + u.narinfoPath(): "DEBUG",
		"HEAD /main/" + missing:        "DEBUG",
		"GET /main/nix-cache-info":     "INFO",
	}
	for k, w := range want {
		if levels[k] != w {
			t.Errorf("%s logged at %q, want %s; log:\n%s", k, levels[k], w, logs.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the server's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
