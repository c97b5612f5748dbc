package publish

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"

	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/sqlite"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// fixture is a small closure in the real /nix/store (top references dep)
// served by a Server over the real Nix database.
type fixture struct {
	n        *nixtest.Nix
	dep, top string
	key      signature.SecretKey
	url      string
	srv      *Server
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	n := nixtest.Require(t)
	f := &fixture{n: n}
	f.dep = n.Build("publish-dep", `echo building dep; echo dep > $out`)
	f.top = n.Build("publish-top", `export PATH=/usr/bin:/bin
echo building top
mkdir -p $out/bin $out/share
echo $dep0 > $out/share/dep
printf '#!/bin/sh\necho hi\n' > $out/bin/hi; chmod +x $out/bin/hi
ln -s ../share/dep $out/bin/link
head -c 300000 /dev/urandom > $out/share/blob`, f.dep)
	var err error
	if f.key, err = signature.GenerateKey("publish-test-1", rand.Reader); err != nil {
		t.Fatal(err)
	}
	if opts.Keys == nil {
		opts.Keys = []signature.SecretKey{f.key}
	}
	store, err := localstore.OpenDB(storepath.DefaultDir, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if f.srv, err = New(store, opts); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(f.srv)
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

func hashPart(p string) string { return filepath.Base(p)[:storepath.HashLen] }

// get fetches url with extra request headers ("Name: value").
func get(t *testing.T, method, url string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	// A transport of its own, so that Go does not add or undo encodings.
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, body
}

// dumpStore returns `nix-store --dump` of a path in the given (chroot) store.
func dump(t *testing.T, n *nixtest.Nix, path string) string {
	t.Helper()
	return n.Run("nix-store", "--dump", path)
}

// TestSubstitute has the real Nix substitute the closure into an empty
// store from the server, checking signatures.
func TestSubstitute(t *testing.T) {
	f := newFixture(t, Options{})
	// A signature the store already holds must be kept beside ours.
	other, err := signature.GenerateKey("already-in-db-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(t.TempDir(), "other.sec")
	os.WriteFile(otherFile, []byte(other.String()), 0o600)
	f.n.Run("nix", "store", "sign", "--key-file", otherFile, "--recursive", f.top)

	tests := []struct {
		name    string
		trusted string
		wantErr string
	}{
		{name: "our key", trusted: f.key.Public().String()},
		{name: "key already in the database", trusted: other.Public().String()},
		{name: "untrusted key", trusted: mustKey(t, "stranger-1").Public().String(), wantErr: "lacks a valid signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := t.TempDir()
			_, err := f.n.Try("nix", "copy", "--from", f.url, "--to", dst,
				"--option", "trusted-public-keys", tt.trusted, f.top)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("nix copy with an untrusted key: err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{f.dep, f.top} {
				got := dump(t, f.n, filepath.Join(dst, p))
				if want := dump(t, f.n, p); got != want {
					t.Errorf("%s restored from silo publish differs from the original", p)
				}
			}
		})
	}
}

func mustKey(t *testing.T, name string) signature.SecretKey {
	k, err := signature.GenerateKey(name, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestCompressedURLs has Nix substitute through zstd NAR URLs.
func TestCompressedURLs(t *testing.T) {
	f := newFixture(t, Options{Compression: "zstd"})
	resp, body := get(t, "GET", f.url+"/"+hashPart(f.top)+".narinfo")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "\nCompression: zstd\n") || !strings.Contains(string(body), ".nar.zst\n") {
		t.Fatalf("narinfo with --compression zstd:\n%s", body)
	}
	dst := t.TempDir()
	f.n.Run("nix", "copy", "--from", f.url, "--to", dst, "--option", "trusted-public-keys", f.key.Public().String(), f.top)
	if got, want := dump(t, f.n, filepath.Join(dst, f.top)), dump(t, f.n, f.top); got != want {
		t.Error("path restored through .nar.zst differs from the original")
	}
}

// TestDeleted checks that a path deleted while the server runs is a 404.
func TestDeleted(t *testing.T) {
	f := newFixture(t, Options{})
	p := f.n.Build("publish-doomed", `echo doomed > $out`)
	narinfo := f.url + "/" + hashPart(p) + ".narinfo"
	resp, body := get(t, "GET", narinfo)
	if resp.StatusCode != 200 {
		t.Fatalf("narinfo of a valid path: %s %s", resp.Status, body)
	}
	var narURL string
	for _, line := range strings.Split(string(body), "\n") {
		if u, ok := strings.CutPrefix(line, "URL: "); ok {
			narURL = f.url + "/" + u
		}
	}
	f.n.Run("nix-store", "--delete", p)
	for _, u := range []string{narinfo, narURL, f.url + "/" + hashPart(p) + ".ls"} {
		if resp, body := get(t, "GET", u); resp.StatusCode != 404 {
			t.Errorf("GET %s after nix-store --delete: %s %s, want 404", u, resp.Status, body)
		}
	}
}

// TestStoreLs runs `nix store ls` against the server and compares the .ls
// it serves with the one Nix writes itself.
func TestStoreLs(t *testing.T) {
	f := newFixture(t, Options{})
	got := f.n.Run("nix", "store", "ls", "--store", f.url, "-lR", f.top)
	want := f.n.Run("nix", "store", "ls", "-lR", f.top)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("nix store ls through silo publish (-local +silo):\n%s", diff)
	}
	cache := t.TempDir()
	f.n.Run("nix", "copy", "--to", "file://"+cache+"?write-nar-listing=true&compression=none", f.top)
	nixLs, err := os.ReadFile(filepath.Join(cache, hashPart(f.top)+".ls"))
	if err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, "GET", f.url+"/"+hashPart(f.top)+".ls")
	if resp.StatusCode != 200 {
		t.Fatalf("GET .ls: %s", resp.Status)
	}
	if diff := cmp.Diff(string(nixLs), string(body)); diff != "" {
		t.Errorf(".ls differs from Nix's (-nix +silo):\n%s", diff)
	}
}

// TestLog fetches a build log through the real Nix client.
func TestLog(t *testing.T) {
	f := newFixture(t, Options{})
	got := f.n.Run("nix", "log", "--store", f.url, f.top)
	if !strings.Contains(got, "building top") {
		t.Errorf("nix log through silo publish = %q, want the builder's output", got)
	}
	if resp, _ := get(t, "GET", f.url+"/log/"+strings.Repeat("0", 32)+"-nothing.drv"); resp.StatusCode != 404 {
		t.Errorf("log of an unknown derivation: %s, want 404", resp.Status)
	}
}

// TestNAR checks NAR responses byte for byte: whole, ranges, Content-Encoding.
func TestNAR(t *testing.T) {
	f := newFixture(t, Options{})
	nar := dump(t, f.n, f.top)
	size := len(nar)
	_, body := get(t, "GET", f.url+"/"+hashPart(f.top)+".narinfo")
	var u string
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "URL: "); ok {
			u = f.url + "/" + v
		}
	}
	etag := `"` + strings.TrimSuffix(u[strings.LastIndexByte(u, '-')+1:], ".nar") + `"`
	tests := []struct {
		name     string
		headers  []string
		status   int
		want     string // expected body after decoding
		encoding string
		rangeHdr string
	}{
		{name: "whole", status: 200, want: nar},
		{name: "first bytes", headers: []string{"Range: bytes=0-9"}, status: 206, want: nar[:10], rangeHdr: fmt.Sprintf("bytes 0-9/%d", size)},
		{name: "one byte", headers: []string{"Range: bytes=100-100"}, status: 206, want: nar[100:101], rangeHdr: fmt.Sprintf("bytes 100-100/%d", size)},
		{name: "open end", headers: []string{"Range: bytes=1000-"}, status: 206, want: nar[1000:], rangeHdr: fmt.Sprintf("bytes 1000-%d/%d", size-1, size)},
		{name: "suffix", headers: []string{"Range: bytes=-7"}, status: 206, want: nar[size-7:], rangeHdr: fmt.Sprintf("bytes %d-%d/%d", size-7, size-1, size)},
		{name: "end past size", headers: []string{"Range: bytes=5-999999999"}, status: 206, want: nar[5:], rangeHdr: fmt.Sprintf("bytes 5-%d/%d", size-1, size)},
		{name: "unsatisfiable", headers: []string{fmt.Sprintf("Range: bytes=%d-", size)}, status: 416, rangeHdr: fmt.Sprintf("bytes */%d", size)},
		{name: "several ranges ignored", headers: []string{"Range: bytes=0-1,5-6"}, status: 200, want: nar},
		{name: "if-range matches", headers: []string{"Range: bytes=0-9", "If-Range: " + etag}, status: 206, want: nar[:10], rangeHdr: fmt.Sprintf("bytes 0-9/%d", size)},
		{name: "if-range stale", headers: []string{"Range: bytes=0-9", `If-Range: "other"`}, status: 200, want: nar},
		{name: "zstd accepted", headers: []string{"Accept-Encoding: gzip, zstd"}, status: 200, want: nar, encoding: "zstd"},
		{name: "zstd refused", headers: []string{"Accept-Encoding: zstd;q=0"}, status: 200, want: nar},
		{name: "range never encoded", headers: []string{"Accept-Encoding: zstd", "Range: bytes=0-9"}, status: 206, want: nar[:10], rangeHdr: fmt.Sprintf("bytes 0-9/%d", size)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, "GET", u, tt.headers...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %s, want %d", resp.Status, tt.status)
			}
			if got := resp.Header.Get("Content-Range"); got != tt.rangeHdr {
				t.Errorf("Content-Range %q, want %q", got, tt.rangeHdr)
			}
			if got := resp.Header.Get("Content-Encoding"); got != tt.encoding {
				t.Errorf("Content-Encoding %q, want %q", got, tt.encoding)
			}
			if tt.status == 416 {
				return
			}
			if tt.encoding == "zstd" {
				dec, err := zstd.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				defer dec.Close()
				if body, err = io.ReadAll(dec); err != nil {
					t.Fatalf("decoding zstd body: %v", err)
				}
			} else if resp.ContentLength != int64(len(tt.want)) {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, len(tt.want))
			}
			if !bytes.Equal(body, []byte(tt.want)) {
				t.Errorf("body (%d bytes) differs from the expected %d bytes of nix-store --dump", len(body), len(tt.want))
			}
		})
	}
	t.Run("HEAD", func(t *testing.T) {
		resp, body := get(t, "HEAD", u)
		if resp.StatusCode != 200 || resp.ContentLength != int64(size) || len(body) != 0 {
			t.Errorf("HEAD: %s, Content-Length %d, %d body bytes; want 200, %d, 0", resp.Status, resp.ContentLength, len(body), size)
		}
	})
}

// TestRoutes checks the small answers: cache info, misses, methods, health.
func TestRoutes(t *testing.T) {
	f := newFixture(t, Options{Priority: 41})
	missing := strings.Repeat("1", 32)
	top := hashPart(f.top)
	tests := []struct {
		method, path string
		status       int
		contains     string
	}{
		{"GET", "/nix-cache-info", 200, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 41\n"},
		{"HEAD", "/" + top + ".narinfo", 200, ""},
		{"GET", "/" + top + ".narinfo", 200, "Sig: publish-test-1:"},
		{"GET", "/" + missing + ".narinfo", 404, ""},
		{"GET", "/" + missing + ".ls", 404, ""},
		{"GET", "/nar/" + top + "-" + strings.Repeat("0", 52) + ".nar", 404, "rebuilt"},
		{"GET", "/nar/" + top + ".nar", 404, ""},
		{"GET", "/not-a-hash.narinfo", 404, ""},
		{"GET", "/a/b/c", 404, ""},
		{"PUT", "/" + top + ".narinfo", 405, "read-only"},
		{"GET", "/healthz", 200, "ok"},
		{"GET", "/metrics", 200, `silo_publish_requests_total{code="200",kind="narinfo"}`},
	}
	for _, tt := range tests {
		resp, body := get(t, tt.method, f.url+tt.path)
		if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.contains) {
			t.Errorf("%s %s: %s %q; want %d containing %q", tt.method, tt.path, resp.Status, body, tt.status, tt.contains)
		}
	}
}

// chrootStore adds a directory to a fresh chroot store (a store whose files
// lie under root but are named /nix/store/...) and returns a server over it
// and the added path. Tests may then tamper with the files on disk.
func chrootStore(t testing.TB, n *nixtest.Nix, files int, size int) (*Server, string, string) {
	t.Helper()
	root := t.TempDir()
	src := filepath.Join(t.TempDir(), "tree")
	os.Mkdir(src, 0o755)
	buf := make([]byte, size)
	for i := range files {
		rand.Read(buf)
		os.WriteFile(filepath.Join(src, fmt.Sprintf("f%03d", i)), buf, 0o644)
	}
	p := strings.TrimSpace(n.Run("nix-store", "--store", root, "--add", src))
	store, err := localstore.OpenDB(storepath.DefaultDir, filepath.Join(root, "nix/var/nix/db/db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	srv, err := New(store, Options{RealDir: filepath.Join(root, "nix/store")})
	if err != nil {
		t.Fatal(err)
	}
	return srv, p, filepath.Join(root, p)
}

// TestChangedPath checks that a NAR whose files no longer match the
// database (same size, other bytes) is never completed.
func TestChangedPath(t *testing.T) {
	n := nixtest.Require(t)
	srv, p, real := chrootStore(t, n, 4, 4096)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	_, body := get(t, "GET", hs.URL+"/"+hashPart(p)+".narinfo")
	var u string
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "URL: "); ok {
			u = hs.URL + "/" + v
		}
	}
	if resp, _ := get(t, "GET", u); resp.StatusCode != 200 {
		t.Fatalf("NAR before tampering: %s", resp.Status)
	}
	victim := filepath.Join(real, "f002")
	os.Chmod(victim, 0o644)
	data, _ := os.ReadFile(victim)
	data[100] ^= 1
	if err := os.WriteFile(victim, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, hdr := range [][]string{nil, {"Range: bytes=0-99"}, {"Accept-Encoding: zstd"}} {
		if completes(t, u, hdr...) {
			t.Errorf("GET %v of a NAR whose file changed: body completed, want the connection aborted", hdr)
		}
	}
	// A listing walks no contents, but notices a missing file.
	os.Remove(victim)
	if completes(t, hs.URL+"/"+hashPart(p)+".ls") {
		t.Errorf("listing of a path missing a file: body completed, want the connection aborted")
	}
}

// TestPathChangesMidStream changes a path's files while its NAR is being
// sent, after a first complete download has verified it (so the second
// stream neither hashes nor reads more than it sends): the response must
// end without completing.
func TestPathChangesMidStream(t *testing.T) {
	n := nixtest.Require(t)
	tests := []struct {
		name    string
		change  func(real string) error
		aborted int // then a later download is a 404, or aborted again
	}{
		{"removed", os.RemoveAll, 1},
		{"last file rewritten, same size", func(real string) error {
			victim := filepath.Join(real, "f047")
			data, err := os.ReadFile(victim)
			if err != nil {
				return err
			}
			data[0] ^= 1
			os.Chmod(victim, 0o644)
			return os.WriteFile(victim, data, 0o644)
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, p, real := chrootStore(t, n, 48, 1<<20)
			hs := httptest.NewServer(srv)
			defer hs.Close()
			_, body := get(t, "GET", hs.URL+"/"+hashPart(p)+".narinfo")
			var u string
			for _, line := range strings.Split(string(body), "\n") {
				if v, ok := strings.CutPrefix(line, "URL: "); ok {
					u = hs.URL + "/" + v
				}
			}
			if !completes(t, u) {
				t.Fatal("first download did not complete")
			}
			resp, err := http.DefaultTransport.RoundTrip(newRequest(t, u))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %s", resp.Status)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
				t.Fatal(err)
			}
			// The server is now blocked on a full socket, well before the end.
			if err := tt.change(real); err != nil {
				t.Fatal(err)
			}
			got, err := io.Copy(io.Discard, resp.Body)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("reading the NAR: %d more bytes, err %v; want an unexpected EOF", got, err)
			}
			if completes(t, u) {
				t.Errorf("a later download of the changed path completed")
			}
			want := fmt.Sprintf(`silo_publish_nar_aborted_total{reason="store"} %d`, tt.aborted)
			if _, m := get(t, "GET", hs.URL+"/metrics"); !strings.Contains(string(m), want) {
				t.Errorf("metrics lack %s:\n%s", want, m)
			}
		})
	}
}

// completes reports whether GET url gets a complete successful response.
// An aborted one either never starts (nothing was flushed yet) or ends
// early.
func completes(t *testing.T, url string, headers ...string) bool {
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(newRequest(t, url, headers...))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err == nil && resp.StatusCode/100 == 2
}

func newRequest(t *testing.T, url string, headers ...string) *http.Request {
	req, err := http.NewRequestWithContext(context.Background(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	return req
}

// TestRebuilt deletes a path and builds it again with other contents (same
// derivation, random output): the server must answer with the new record,
// never a cached one, and refuse the old NAR URL.
func TestRebuilt(t *testing.T) {
	f := newFixture(t, Options{})
	expr := fmt.Sprintf(`derivation { name = "publish-rebuilt"; system = builtins.currentSystem; builder = "/bin/sh"; nonce = %q; args = ["-c" "echo $$ > $out"]; }`, nixtest.Nonce())
	build := func() string {
		return strings.TrimSpace(f.n.Run("nix", "build", "--no-link", "--json", "--impure", "--expr", expr))
	}
	narURL := func(p string) (string, string) {
		resp, body := get(t, "GET", f.url+"/"+hashPart(p)+".narinfo")
		if resp.StatusCode != 200 {
			t.Fatalf("narinfo: %s", resp.Status)
		}
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "URL: "); ok {
				return f.url + "/" + v, string(body)
			}
		}
		t.Fatal("narinfo without URL")
		return "", ""
	}
	out1 := build()
	p := out1[strings.Index(out1, `"out":"`)+7:]
	p = p[:strings.IndexByte(p, '"')]
	old, oldInfo := narURL(p)
	if resp, _ := get(t, "GET", old); resp.StatusCode != 200 {
		t.Fatalf("first NAR: %s", resp.Status)
	}
	narHash := func() string {
		return f.n.Run("nix", "path-info", "--json", p)
	}
	oldHash := narHash()
	for {
		f.n.Run("nix-store", "--delete", p)
		build()
		if narHash() != oldHash {
			break
		}
		// The builder wrote the same bytes again (unlikely): retry.
	}
	if _, newInfo := narURL(p); newInfo == oldInfo {
		t.Fatalf("narinfo after the path was rebuilt with other contents is the old one:\n%s", newInfo)
	}
	cur, _ := narURL(p)
	if cur == old {
		t.Fatalf("rebuilt path with other contents has the same NAR URL %s", cur)
	}
	if resp, _ := get(t, "GET", old); resp.StatusCode != 404 {
		t.Errorf("old NAR URL after rebuild: %s, want 404", resp.Status)
	}
	if resp, body := get(t, "GET", cur); resp.StatusCode != 200 || dump(t, f.n, p) != string(body) {
		t.Errorf("new NAR URL after rebuild: %s, or body differs from nix-store --dump", resp.Status)
	}
}

// TestTokens makes the store private with silo serve's token model and has
// the real Nix substitute with a token in its netrc file.
func TestTokens(t *testing.T) {
	ctx := context.Background()
	tokens, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "silo.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	mint := func(pattern string, perms meta.Perm, expires time.Time) string {
		text, rec, err := auth.NewRandom(pattern, perms, expires, "test")
		if err != nil {
			t.Fatal(err)
		}
		if err := tokens.CreateToken(ctx, rec); err != nil {
			t.Fatal(err)
		}
		return text
	}
	good := mint("publish", meta.PermPull, time.Time{})
	glob := mint("pub*", meta.PermPush, time.Time{})
	other := mint("elsewhere", meta.PermPull, time.Time{})
	expired := mint("publish", meta.PermPull, time.Now().Add(-time.Minute))
	f := newFixture(t, Options{Authorize: TokenAuthorizer(tokens, "publish")})
	narinfo := f.url + "/" + hashPart(f.top) + ".narinfo"

	tests := []struct {
		name   string
		header string
		status int
	}{
		{"no token", "", 401},
		{"pull token as netrc password", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(":"+good)), 200},
		{"bearer", "Authorization: Bearer " + good, 200},
		{"push on a matching pattern", "Authorization: Bearer " + glob, 200},
		{"token for another cache", "Authorization: Bearer " + other, 401},
		{"expired", "Authorization: Bearer " + expired, 401},
		{"tampered", "Authorization: Bearer " + good[:len(good)-1] + "x", 401},
		{"not a token", "Authorization: Bearer hunter2", 401},
	}
	for _, tt := range tests {
		var hdrs []string
		if tt.header != "" {
			hdrs = append(hdrs, tt.header)
		}
		if resp, body := get(t, "GET", narinfo, hdrs...); resp.StatusCode != tt.status {
			t.Errorf("%s: %s %s, want %d", tt.name, resp.Status, body, tt.status)
		}
	}
	if resp, _ := get(t, "GET", f.url+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz needs no token, got %s", resp.Status)
	}

	host := strings.TrimPrefix(f.url, "http://")
	host = host[:strings.IndexByte(host, ':')]
	for _, tt := range []struct {
		name, token, wantErr string
	}{
		{"right token", good, ""},
		{"wrong token", other, "there is no substituter that can build it"},
	} {
		t.Run("nix copy with "+tt.name, func(t *testing.T) {
			netrc := filepath.Join(t.TempDir(), "netrc")
			os.WriteFile(netrc, []byte("machine "+host+" password "+tt.token+"\n"), 0o600)
			_, err := f.n.Try("nix", "copy", "--from", f.url, "--to", t.TempDir(), "--option", "netrc-file", netrc,
				"--option", "trusted-public-keys", f.key.Public().String(), f.top)
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("nix copy with a token for another cache: err %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// cutWriter passes on the first n bytes of a response, then aborts it.
type cutWriter struct {
	http.ResponseWriter
	n int
}

func (w *cutWriter) Write(p []byte) (int, error) {
	if len(p) >= w.n {
		w.ResponseWriter.Write(p[:w.n])
		w.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	w.n -= len(p)
	return w.ResponseWriter.Write(p)
}

// TestNixResumes cuts the first NAR download short: the real Nix retries
// from where it stopped with a Range request, and the restored path is
// intact.
func TestNixResumes(t *testing.T) {
	f := newFixture(t, Options{})
	var mu sync.Mutex
	var ranges []string
	cut := false
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/nar/") || !strings.Contains(r.URL.Path, hashPart(f.top)) {
			f.srv.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		first := !cut
		cut = true
		mu.Unlock()
		if first {
			w = &cutWriter{ResponseWriter: w, n: 100000}
		}
		f.srv.ServeHTTP(w, r)
	}))
	defer hs.Close()
	dst := t.TempDir()
	f.n.Run("nix", "copy", "--from", hs.URL, "--to", dst, "--option", "trusted-public-keys", f.key.Public().String(), f.top)
	if got, want := dump(t, f.n, filepath.Join(dst, f.top)), dump(t, f.n, f.top); got != want {
		t.Error("path restored after a resumed download differs from the original")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != "bytes=100000-" {
		t.Errorf("NAR requests had Range headers %q, want a whole request then bytes=100000-", ranges)
	}
}

// TestHealthStoreDown checks that /healthz reports a store that no longer
// answers.
func TestHealthStoreDown(t *testing.T) {
	nixtest.Require(t)
	store, err := localstore.OpenDB(storepath.DefaultDir, "")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	if resp, body := get(t, "GET", hs.URL+"/healthz"); resp.StatusCode != 200 {
		t.Fatalf("/healthz with a working store: %s %s", resp.Status, body)
	}
	store.Close()
	if resp, body := get(t, "GET", hs.URL+"/healthz"); resp.StatusCode != 503 {
		t.Errorf("/healthz with a closed store: %s %s, want 503", resp.Status, body)
	}
}
