package publish

// Attacks on silo publish with real HTTP requests, written by an
// independent security review: traversal out of the store and the log
// directory, symlinks pointing out of the store, hostile Range headers,
// and a private store probed without a token.

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/sqlite"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/storepath"
)

// hostileFixture serves the real store; link is a path holding symlinks
// out of the store (absolute and relative), rootLink a path that is itself
// a symlink to /etc.
type hostileFixture struct {
	n              *nixtest.Nix
	link, rootLink string
	logDir         string
	url            string
}

// secretMarker is in a file outside the store that the symlinks point at;
// no response may ever contain it.
const secretMarker = "SILO-HOSTILE-SECRET-CONTENTS"

func newHostileFixture(t *testing.T, opts Options) *hostileFixture {
	t.Helper()
	n := nixtest.Require(t)
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte(secretMarker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(outside), 0o755)
	f := &hostileFixture{n: n}
	f.link = n.Build("hostile-links", `export PATH=/usr/bin:/bin
mkdir -p $out/sub
ln -s `+outside+` $out/abs
ln -s ../../../../../../../..`+outside+` $out/sub/rel
ln -s /etc/passwd $out/passwd
ln -s $out/abs $out/loop`)
	f.rootLink = n.Build("hostile-rootlink", `export PATH=/usr/bin:/bin
ln -s `+outside+` $out`)
	// A log directory with a secret beside it, which no log URL may reach.
	f.logDir = filepath.Join(t.TempDir(), "log")
	os.MkdirAll(filepath.Join(f.logDir, "drvs"), 0o755)
	os.WriteFile(filepath.Join(filepath.Dir(f.logDir), "secret"), []byte(secretMarker), 0o644)
	opts.LogDir = f.logDir
	store, err := localstore.OpenDB(storepath.DefaultDir, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	srv, err := New(store, opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

// rawGet sends a request target exactly as written and returns the
// response with its body read.
func rawGet(t *testing.T, base, method, target string, headers ...string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", method, target)
	for _, h := range headers {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// narURL returns the NAR URL the narinfo of path names.
func hostileNARURL(t *testing.T, base, path string, headers ...string) string {
	t.Helper()
	resp, body := rawGet(t, base, "GET", "/"+hashPart(path)+".narinfo", headers...)
	if resp.StatusCode != 200 {
		t.Fatalf("narinfo of %s: %s %s", path, resp.Status, body)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "URL: "); ok {
			return "/" + v
		}
	}
	t.Fatalf("narinfo without URL:\n%s", body)
	return ""
}

// Symlinks out of the store are served as symlinks: the NAR and listing
// carry their targets, never what they point at, and equal what
// nix-store --dump writes.
func TestHostileSymlinksOutOfStore(t *testing.T) {
	f := newHostileFixture(t, Options{})
	for _, p := range []string{f.link, f.rootLink} {
		u := hostileNARURL(t, f.url, p)
		resp, nar := rawGet(t, f.url, "GET", u)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", u, resp.Status)
		}
		if strings.Contains(nar, secretMarker) || strings.Contains(nar, "root:x:0:0") {
			t.Errorf("NAR of %s carries the contents of a symlink's target", p)
		}
		if want := dump(t, f.n, p); nar != want {
			t.Errorf("NAR of %s differs from nix-store --dump (%d bytes, want %d)", p, len(nar), len(want))
		}
		resp, ls := rawGet(t, f.url, "GET", "/"+hashPart(p)+".ls")
		if resp.StatusCode != 200 || !strings.Contains(ls, `"type":"symlink"`) || strings.Contains(ls, secretMarker) {
			t.Errorf(".ls of %s: %s %s", p, resp.Status, ls)
		}
		// With zstd too.
		resp, z := rawGet(t, f.url, "GET", u+".zst")
		if resp.StatusCode != 200 || len(z) == 0 {
			t.Errorf("GET %s.zst: %s", u, resp.Status)
		}
	}
}

// No URL reaches a file outside the store or the log directory, whatever
// traversal or encoding it uses.
func TestHostileTraversal(t *testing.T) {
	f := newHostileFixture(t, Options{})
	hp := hashPart(f.link)
	base := filepath.Base(f.link)
	for _, target := range []string{
		"/../../../../etc/passwd",
		"/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
		"/..%2F..%2F..%2Fetc%2Fpasswd",
		"/nar/..%2F..%2F..%2Fetc%2Fpasswd",
		"/nar/" + hp + "-..%2F..%2Fetc%2Fpasswd.nar",
		"/nar/../../etc/passwd",
		"/log/..%2F..%2Fsecret",
		"/log/..%2Fsecret",
		"/log/../secret",
		"/log/" + base + "%2F..%2F..%2F..%2Fsecret",
		"/log/" + hp + "-..%2F..%2F..%2Fsecret.drv",
		"/log/" + hp + "-x%2F..%2F..%2F..%2F..%2Fsecret.drv",
		"/log/%2Fetc%2Fpasswd",
		"/log/" + strings.Repeat("..%2F", 20) + "etc%2Fpasswd",
		"/" + hp + "%2F..%2F..%2Fetc%2Fpasswd.narinfo",
		"/" + hp + ".ls%2F..%2F..%2Fsecret",
		"/" + base + "/abs",
		"/nix/store/" + base + "/abs",
		"/nar/" + base + "/passwd",
	} {
		for _, method := range []string{"GET", "HEAD"} {
			resp, body := rawGet(t, f.url, method, target)
			if resp.StatusCode < 300 || resp.StatusCode >= 500 {
				t.Errorf("%s %s = %s, want a redirect or 4xx", method, target, resp.Status)
			}
			if strings.Contains(body, secretMarker) || strings.Contains(body, "root:x:0:0") {
				t.Errorf("%s %s served a file outside the store: %q", method, target, body)
			}
		}
	}
	// Writes are refused whatever the target.
	for _, method := range []string{"PUT", "POST", "DELETE"} {
		resp, _ := rawGet(t, f.url, method, "/"+hp+".narinfo", "Content-Length: 0")
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s narinfo = %s, want 405", method, resp.Status)
		}
	}
}

// Hostile Range headers: overflowing numbers, empty and inverted ranges.
// Each answer is a well-formed 200 (range ignored), 206 with exactly the
// bytes named, or 416; never a 5xx, a short body or a wrong length.
func TestHostileRanges(t *testing.T) {
	f := newHostileFixture(t, Options{})
	u := hostileNARURL(t, f.url, f.link)
	nar := dump(t, f.n, f.link)
	size := uint64(len(nar))
	tests := []struct {
		rng      string
		status   int
		from, to uint64 // expected body nar[from:to] for 200 and 206
	}{
		{"bytes=0-18446744073709551615", 206, 0, size},
		{"bytes=0-18446744073709551616", 200, 0, size}, // overflows: ignored
		{"bytes=18446744073709551615-", 416, 0, 0},
		{"bytes=18446744073709551615-18446744073709551615", 416, 0, 0},
		{"bytes=18446744073709551616-", 200, 0, size},
		{"bytes=-18446744073709551615", 206, 0, size},
		{"bytes=-18446744073709551616", 200, 0, size},
		{"bytes=-0", 416, 0, 0},
		{"bytes=-1", 206, size - 1, size},
		{"bytes=0-0", 206, 0, 1},
		{fmt.Sprintf("bytes=%d-", size-1), 206, size - 1, size},
		{fmt.Sprintf("bytes=%d-%d", size-1, size-1), 206, size - 1, size},
		{fmt.Sprintf("bytes=%d-%d", size, size+10), 416, 0, 0},
		{"bytes=5-4", 200, 0, size},
		{"bytes=-", 200, 0, size},
		{"bytes=--1", 200, 0, size},
		{"bytes=-1-2", 200, 0, size},
		{"bytes= 1-2", 206, 1, 3},
		{"bytes=+1-2", 200, 0, size},
		{"bytes=0x10-", 200, 0, size},
		{"bytes=1-2,3-4", 200, 0, size},
		{"items=0-1", 200, 0, size},
		{"bytes=" + strings.Repeat("9", 4000) + "-", 200, 0, size},
	}
	for _, tt := range tests {
		t.Run(tt.rng, func(t *testing.T) {
			resp, body := rawGet(t, f.url, "GET", u, "Range: "+tt.rng)
			if resp.StatusCode != tt.status {
				t.Fatalf("Range %q: %s, want %d", tt.rng, resp.Status, tt.status)
			}
			if tt.status == 416 {
				if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes */%d", size); got != want {
					t.Errorf("416 Content-Range %q, want %q", got, want)
				}
				return
			}
			want := nar[tt.from:tt.to]
			if body != want || resp.ContentLength != int64(len(want)) {
				t.Errorf("Range %q: %d bytes (Content-Length %d), want bytes %d-%d", tt.rng, len(body), resp.ContentLength, tt.from, tt.to)
			}
			if tt.status == 206 {
				if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", tt.from, tt.to-1, size); got != want {
					t.Errorf("Content-Range %q, want %q", got, want)
				}
			}
		})
	}
}

// A private store answers 401 on every route and method without a valid
// token, the same for paths that exist and paths that do not; only
// /healthz and /metrics are open, and they name no path.
func TestHostilePrivateEveryRoute(t *testing.T) {
	ctx := context.Background()
	tokens, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "silo.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	mint := func(pattern string, expires time.Time) string {
		text, rec, err := auth.NewRandom(pattern, meta.PermPull, expires, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := tokens.CreateToken(ctx, rec); err != nil {
			t.Fatal(err)
		}
		return text
	}
	good := mint("store", time.Time{})
	other := mint("elsewhere", time.Time{})
	expired := mint("store", time.Now().Add(-time.Second))
	f := newHostileFixture(t, Options{Authorize: TokenAuthorizer(tokens, "store")})
	bearer := "Authorization: Bearer " + good
	hp := hashPart(f.link)
	u := hostileNARURL(t, f.url, f.link, bearer)
	absentHP := strings.Repeat("0", 32)
	absentNAR := "/nar/" + absentHP + u[len("/nar/")+32:]
	pairs := [][2]string{
		{"/nix-cache-info", "/nix-cache-info"},
		{"/" + hp + ".narinfo", "/" + absentHP + ".narinfo"},
		{"/" + hp + ".ls", "/" + absentHP + ".ls"},
		{u, absentNAR},
		{u + ".zst", absentNAR + ".zst"},
		{"/log/" + filepath.Base(f.link), "/log/" + absentHP + "-x.drv"},
		{"/log/" + hp + "-x.drv", "/log/" + absentHP + "-x.drv"},
		{"/" + hp, "/" + absentHP},
		{"/nar/garbage", "/nar/garbage2"},
	}
	creds := []struct{ name, header string }{
		{"no credentials", ""},
		{"basic, user but empty password", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("user:"))},
		{"basic, token as user name", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(good+":"))},
		{"basic, no colon", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(good))},
		{"empty bearer", "Authorization: Bearer "},
		{"wrong secret", "Authorization: Bearer " + good[:len(good)-3] + "aaa"},
		{"token for another cache", "Authorization: Bearer " + other},
		{"expired token", "Authorization: Bearer " + expired},
	}
	for _, c := range creds {
		var hdrs []string
		if c.header != "" {
			hdrs = append(hdrs, c.header)
		}
		for _, method := range []string{"GET", "HEAD"} {
			for _, p := range pairs {
				ra, ba := rawGet(t, f.url, method, p[0], hdrs...)
				rb, bb := rawGet(t, f.url, method, p[1], hdrs...)
				if ra.StatusCode != 401 || rb.StatusCode != 401 {
					t.Errorf("%s: %s %s = %s, absent twin %s; want 401", c.name, method, p[0], ra.Status, rb.Status)
				}
				if ba != bb {
					t.Errorf("%s: %s %s answers differently from its absent twin: %q vs %q", c.name, method, p[0], ba, bb)
				}
				if strings.Contains(ba, hp) || strings.Contains(ba, "hostile") {
					t.Errorf("%s: %s %s: refusal names the path: %q", c.name, method, p[0], ba)
				}
			}
		}
	}
	// /healthz is open, /metrics a token's; neither names a path.
	for _, p := range []struct {
		path    string
		headers []string
	}{{"/healthz", nil}, {"/metrics", []string{bearer}}} {
		resp, body := rawGet(t, f.url, "GET", p.path, p.headers...)
		if resp.StatusCode != 200 || strings.Contains(body, hp) || strings.Contains(body, "hostile") {
			t.Errorf("GET %s: %s, names a path: %v", p.path, resp.Status, strings.Contains(body, hp))
		}
	}
	if resp, _ := rawGet(t, f.url, "GET", "/metrics"); resp.StatusCode != 401 {
		t.Errorf("GET /metrics of a private store without a token: %s, want 401", resp.Status)
	}
	// And the good token still works on every route that exists; nothing
	// it gets may be kept by a shared cache in front.
	for _, p := range []string{"/nix-cache-info", "/" + hp + ".narinfo", "/" + hp + ".ls", u, u + ".zst"} {
		resp, _ := rawGet(t, f.url, "GET", p, bearer)
		if resp.StatusCode != 200 {
			t.Errorf("GET %s with a good token: %s", p, resp.Status)
		}
		if cc := resp.Header.Get("Cache-Control"); !strings.HasPrefix(cc, "private") {
			t.Errorf("GET %s of a private store: Cache-Control %q, want private", p, cc)
		}
	}
}

// A made-up token ID and a real ID with a wrong secret get the same
// answer, but for the ID the request itself carries.
func TestHostileTokenIDsNotConfirmed(t *testing.T) {
	ctx := context.Background()
	tokens, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "silo.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	text, rec, err := auth.NewRandom("store", meta.PermPull, time.Time{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := tokens.CreateToken(ctx, rec); err != nil {
		t.Fatal(err)
	}
	authorize := TokenAuthorizer(tokens, "store")
	answer := func(token string) string {
		r, _ := http.NewRequest("GET", "http://x/nix-cache-info", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		if err := authorize(r); err != nil {
			return err.Error()
		}
		return "admitted"
	}
	secret := text[len("silo_")+11:]
	wrong := answer("silo_" + rec.ID + "_" + strings.Repeat("x", len(secret)))
	madeUp := answer("silo_zzzzzzzzzz_" + strings.Repeat("x", len(secret)))
	if wrong != strings.ReplaceAll(madeUp, "zzzzzzzzzz", rec.ID) {
		t.Errorf("a wrong secret answers %q, a made-up ID %q", wrong, madeUp)
	}
	if got := answer(text); got != "admitted" {
		t.Errorf("the real token: %q", got)
	}
}

// A client that requests NARs and never reads them holds no stream slot
// for longer than Options.StallTimeout: with every slot taken by stalled
// clients, a real client is still served once the timeout passes.
func TestHostileStalledReadersFreeStreams(t *testing.T) {
	n := nixtest.Require(t)
	big := n.Build("hostile-big", `export PATH=/usr/bin:/bin
head -c 24000000 /dev/urandom > $out`)
	small := n.Build("hostile-small", `echo small > $out`)
	store, err := localstore.OpenDB(storepath.DefaultDir, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	const slots = 2
	srv, err := New(store, Options{MaxStreams: slots, StallTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	bigURL := hostileNARURL(t, hs.URL, big)
	// Stalled clients: they send the request and read nothing, for the
	// plain and the zstd form.
	for i := range slots {
		conn, err := net.Dial("tcp", hs.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		u := bigURL
		if i%2 == 1 {
			u += ".zst"
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", u)
	}
	time.Sleep(200 * time.Millisecond) // they hold every slot now
	start := time.Now()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(hs.URL + hostileNARURL(t, hs.URL, small))
	if err != nil {
		t.Fatalf("a real client behind %d stalled ones: %v", slots, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != dump(t, n, small) {
		t.Errorf("a real client behind stalled ones: %s, %d bytes", resp.Status, len(body))
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("a real client waited %v behind stalled ones", d)
	}
	// A slow but steady reader is not cut off: it reads the whole NAR,
	// pausing less than the timeout between reads.
	resp, err = http.Get(hs.URL + bigURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := 0
	buf := make([]byte, 4<<20)
	for i := 0; ; i++ {
		k, err := resp.Body.Read(buf)
		got += k
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("a slow reader was cut off after %d bytes: %v", got, err)
		}
		if i < 3 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if int64(got) != resp.ContentLength {
		t.Errorf("slow reader got %d bytes, want %d", got, resp.ContentLength)
	}
}

// Requests are logged one line each in silo serve's format (package
// httplog), with random ids; narinfo lookups at debug.
func TestRequestLog(t *testing.T) {
	nixtest.Require(t)
	store, err := localstore.OpenDB(storepath.DefaultDir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var buf syncBuffer
	srv, err := New(store, Options{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	rawGet(t, hs.URL, "GET", "/nix-cache-info")
	rawGet(t, hs.URL, "GET", "/"+strings.Repeat("0", 32)+".narinfo")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log lines: %q", lines)
	}
	want := []string{`level=INFO msg=request id=`, ` method=GET path=/nix-cache-info status=200 bytes=`, ` duration=`, ` remote=127.0.0.1:`}
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("log line %q lacks %q", lines[0], w)
		}
	}
	if !strings.Contains(lines[1], "level=DEBUG msg=request") || !strings.Contains(lines[1], "status=404") {
		t.Errorf("a narinfo miss is logged as %q, want at debug", lines[1])
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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
