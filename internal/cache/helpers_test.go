package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/blob/disk"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/sqlite"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// testEnv is a server on real SQLite and disk stores in a temp directory.
type testEnv struct {
	t     testing.TB
	srv   *Server
	ts    *httptest.Server
	meta  *sqlite.Store
	blobs *disk.Store
}

func newEnv(t testing.TB, opts Options) *testEnv {
	t.Helper()
	dir := t.TempDir()
	m, err := sqlite.Open(context.Background(), filepath.Join(dir, "silo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	b, err := disk.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Meta, opts.Blobs = m, b
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testLogOut(), nil))
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.ConnContext = ConnContext
	ts.Start()
	t.Cleanup(ts.Close)
	return &testEnv{t: t, srv: srv, ts: ts, meta: m, blobs: b}
}

func (e *testEnv) cache(name string, public bool) (meta.Cache, signature.SecretKey) {
	e.t.Helper()
	k, err := signature.GenerateKey(name+"-1", rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := e.meta.CreateCache(context.Background(), meta.Cache{Name: name, Public: public, Priority: 41, SecretKey: k.String(), StoreDir: "/nix/store"})
	if err != nil {
		e.t.Fatal(err)
	}
	return c, k
}

func (e *testEnv) token(pattern string, perms meta.Perm, expires time.Time) string {
	e.t.Helper()
	text, rec, err := auth.NewRandom(pattern, perms, expires, "")
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.meta.CreateToken(context.Background(), rec); err != nil {
		e.t.Fatal(err)
	}
	return text
}

// do sends a request; token "" sends none. It returns status and body.
func (e *testEnv) do(method, path, token string, body []byte) (int, string) {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.SetBasicAuth("", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// blobKeys lists every stored blob.
func (e *testEnv) blobKeys() []string {
	e.t.Helper()
	var keys []string
	err := e.blobs.List(context.Background(), "", func(i blob.Info) error { keys = append(keys, i.Key); return nil })
	if err != nil {
		e.t.Fatal(err)
	}
	return keys
}

// narBuilder writes NAR tokens by hand, so tests can make invalid NARs.
type narBuilder struct{ bytes.Buffer }

func (b *narBuilder) str(ss ...string) *narBuilder {
	for _, s := range ss {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		b.Write(n[:])
		b.WriteString(s)
		b.Write(make([]byte, (8-len(s)%8)%8))
	}
	return b
}

// dirNAR is a NAR of a directory holding regular files (names in order).
func dirNAR(files ...string) []byte {
	var b narBuilder
	b.str("nix-archive-1", "(", "type", "directory")
	for i := 0; i+1 < len(files); i += 2 {
		b.str("entry", "(", "name", files[i], "node", "(", "type", "regular", "contents", files[i+1], ")", ")")
	}
	b.str(")")
	return b.Bytes()
}

// fileNAR is a NAR of one regular file.
func fileNAR(contents string) []byte {
	var b narBuilder
	b.str("nix-archive-1", "(", "type", "regular", "contents", contents, ")")
	return b.Bytes()
}

func compressed(t testing.TB, method string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := compress.NewWriter(method, &buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// storedForm is what the server stores for nar: its own compression.
func (e *testEnv) storedForm(nar []byte) []byte {
	e.t.Helper()
	var buf bytes.Buffer
	w, err := compress.NewWriter(e.srv.opts.Compression, &buf, e.srv.opts.CompressionLevel)
	if err != nil {
		e.t.Fatal(err)
	}
	w.Write(nar)
	if err := w.Close(); err != nil {
		e.t.Fatal(err)
	}
	return buf.Bytes()
}

// upload is one store path as Nix would push it.
type upload struct {
	path    storepath.Path
	nar     []byte // uncompressed
	file    []byte // as sent
	url     string
	info    *narinfo.NarInfo
	refs    []storepath.Path
	sigKeys []signature.SecretKey
}

// newPath makes a random store path name and the upload of nar under it,
// compressed with method.
func newUpload(t testing.TB, name string, nar []byte, method string, refs ...storepath.Path) *upload {
	t.Helper()
	var rnd [20]byte
	rand.Read(rnd[:])
	p, err := storepath.DefaultDir.ParseBase(nix32.Encode(rnd[:]) + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	file := compressed(t, method, nar)
	fh := hash.Sum(hash.SHA256, file)
	u := &upload{path: p, nar: nar, file: file, refs: refs,
		url: "nar/" + fh.Nix32() + ".nar" + compress.Ext(method)}
	u.info = &narinfo.NarInfo{
		StorePath: p, URL: u.url, Compression: method, FileHash: fh, FileSize: uint64(len(file)),
		NarHash: hash.Sum(hash.SHA256, nar), NarSize: uint64(len(nar)), References: refs,
	}
	return u
}

func (u *upload) narinfoPath() string { return u.path.HashPart() + ".narinfo" }

// push uploads u to cache as Nix does and fails the test unless both succeed.
func (e *testEnv) push(cache, token string, u *upload) {
	e.t.Helper()
	if st, body := e.do("PUT", "/"+cache+"/"+u.url, token, u.file); st != 200 {
		e.t.Fatalf("PUT %s: %d %s", u.url, st, body)
	}
	if st, body := e.do("PUT", "/"+cache+"/"+u.narinfoPath(), token, []byte(u.info.String())); st != 200 {
		e.t.Fatalf("PUT %s: %d %s", u.narinfoPath(), st, body)
	}
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s = %q, want it to mention %q", what, got, w)
		}
	}
}

func parseKey(c meta.Cache) (signature.SecretKey, error) {
	return signature.ParseSecretKey(c.SecretKey)
}

// testLogOut is where test servers log: stderr with SILO_TEST_LOG=1.
func testLogOut() io.Writer {
	if os.Getenv("SILO_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}
