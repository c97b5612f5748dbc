package cache

// Confidentiality against hostile clients and tenants (issue 8): metrics
// are an admin's, name only the caches they administer and cost no query
// per scrape; nothing of a private cache may be kept by a shared cache in
// front; dedup reveals nothing of other caches; cache names and token IDs
// cannot be probed.

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/storepath"
)

// countingMeta counts Usage calls.
type countingMeta struct {
	meta.Store
	usage atomic.Int64
}

func (c *countingMeta) Usage(ctx context.Context) ([]meta.Usage, error) {
	c.usage.Add(1)
	return c.Store.Usage(ctx)
}

// /metrics on the cache address answers only admin tokens and names only
// the caches they administer; the full metrics are for an address of
// their own (MetricsHandler). However often it is scraped, the per-cache
// sums are computed at most once per UsageInterval.
func TestHostileMetricsGuarded(t *testing.T) {
	e := newEnv(t, Options{})
	counting := &countingMeta{Store: e.meta}
	srv, err := New(Options{Meta: counting, Blobs: e.blobs, UsageInterval: time.Hour, Logger: e.srv.log})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	ts := httptest.NewServer(srv)
	defer ts.Close()
	e.ts = ts
	e.cache("team-a", false)
	e.cache("team-b", false)
	e.cache("secret-project", false)
	adminA := e.token("team-a", meta.PermAdmin, time.Time{})
	adminAll := e.token("*", meta.PermAdmin, time.Time{})
	pushA := e.token("team-a", meta.PermPush, time.Time{})
	for _, tt := range []struct {
		name, token string
		want        int
	}{
		{"anonymous", "", 401},
		{"a push token", pushA, 403},
		{"an unknown token", "silo_aaaaaaaaaa_" + strings.Repeat("b", 52), 401},
	} {
		st, body := e.do("GET", "/metrics", tt.token, nil)
		if st != tt.want {
			t.Errorf("/metrics, %s = %d, want %d", tt.name, st, tt.want)
		}
		if strings.Contains(body, "secret-project") || strings.Contains(body, "silo_") {
			t.Errorf("/metrics, %s: the refusal shows metrics: %q", tt.name, body)
		}
	}
	st, body := e.do("GET", "/metrics", adminA, nil)
	if st != 200 || !strings.Contains(body, `silo_cache_paths{cache="team-a"}`) {
		t.Fatalf("/metrics for team-a's admin = %d, without its cache:\n%s", st, body)
	}
	for _, other := range []string{"team-b", "secret-project"} {
		if strings.Contains(body, other) {
			t.Errorf("/metrics for team-a's admin names %s", other)
		}
	}
	_, body = e.do("GET", "/metrics", adminAll, nil)
	mustContain(t, "/metrics for an admin of every cache", body, `cache="team-b"`, `cache="secret-project"`)
	w := httptest.NewRecorder()
	srv.MetricsHandler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	mustContain(t, "MetricsHandler", w.Body.String(), `cache="secret-project"`, "silo_http_requests_total")
	for range 50 {
		e.do("GET", "/metrics", adminAll, nil)
	}
	if n := counting.usage.Load(); n > 1 {
		t.Errorf("52 scrapes made %d usage queries over the paths; want 1 per UsageInterval", n)
	}
}

// Every answer about a private cache's contents says Cache-Control:
// private (a CDN or proxy in front must not keep it for others); refusals
// say no-store; a public cache's NARs stay publicly cacheable.
func TestHostileCacheControl(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("priv", false)
	e.cache("pub", true)
	tok := e.token("*", meta.PermPush, time.Time{})
	u := newUpload(t, "p", dirNAR("f", "private"), compress.Zstd)
	drv := "log/" + strings.Repeat("c", 32) + "-p.drv"
	for _, c := range []string{"priv", "pub"} {
		e.push(c, tok, u)
		e.do("PUT", "/"+c+"/"+drv, tok, []byte("log"))
	}
	served := e.servedURL("priv", tok, u)
	get := func(path, token string) http.Header {
		req, _ := http.NewRequest("GET", e.ts.URL+path, nil)
		if token != "" {
			req.SetBasicAuth("", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if token != "" && resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return resp.Header
	}
	for _, p := range []string{"nix-cache-info", u.narinfoPath(), u.path.HashPart() + ".ls", served,
		"nar/" + u.path.HashPart() + "-" + u.info.NarHash.Nix32() + ".nar", drv} {
		cc := get("/priv/"+p, tok).Get("Cache-Control")
		if !strings.Contains(cc, "private") || strings.Contains(cc, "public") {
			t.Errorf("GET /priv/%s: Cache-Control %q, want private", p, cc)
		}
		if cc := get("/priv/"+p, "").Get("Cache-Control"); cc != "no-store" {
			t.Errorf("refused GET /priv/%s: Cache-Control %q, want no-store", p, cc)
		}
	}
	if cc := get("/pub/"+e.servedURL("pub", tok, u), tok).Get("Cache-Control"); !strings.HasPrefix(cc, "public") {
		t.Errorf("a public cache's NAR: Cache-Control %q, want public", cc)
	}
}

// A tenant who pushes a NAR another (private) cache holds learns nothing
// of it: the answers and the stored form are those of a NAR nobody had.
func TestHostileDedupRevealsNothing(t *testing.T) {
	secretNAR := dirNAR("product", "the competitor's build")
	observe := func(preloaded bool) (putAnswer, url, fileHash string, fileSize uint64, file string) {
		e := newEnv(t, Options{})
		e.cache("victim", false)
		e.cache("attacker", false)
		if preloaded {
			v := newUpload(t, "product", secretNAR, compress.XZ)
			e.push("victim", e.token("victim", meta.PermPush, time.Time{}), v)
		}
		tok := e.token("attacker", meta.PermPush, time.Time{})
		u := newUpload(t, "product", secretNAR, compress.Zstd)
		// Compressed otherwise than the server would: a server keeping
		// the first upload's bytes would tell whose they are.
		u.file = compressedLevel(t, compress.Zstd, secretNAR, 19)
		u.info.FileHash, u.info.FileSize = hash.Sum(hash.SHA256, u.file), uint64(len(u.file))
		u.url = "nar/" + u.info.FileHash.Nix32() + ".nar.zst"
		u.info.URL = u.url
		_, putAnswer = e.do("PUT", "/attacker/"+u.url, tok, u.file)
		e.do("PUT", "/attacker/"+u.narinfoPath(), tok, []byte(u.info.String()))
		_, text := e.do("GET", "/attacker/"+u.narinfoPath(), tok, nil)
		ni, err := narinfo.ParseString(storepath.DefaultDir, text)
		if err != nil {
			t.Fatalf("narinfo: %v\n%s", err, text)
		}
		_, file = e.do("GET", "/attacker/"+ni.URL, tok, nil)
		return putAnswer, ni.URL, ni.FileHash.String(), ni.FileSize, file
	}
	a1, u1, h1, s1, f1 := observe(false)
	a2, u2, h2, s2, f2 := observe(true)
	if a1 != a2 || u1 != u2 || h1 != h2 || s1 != s2 || f1 != f2 {
		t.Errorf("pushing a NAR another cache holds answers differently:\nPUT %q vs %q\nURL %s vs %s\nFileHash %s vs %s\nFileSize %d vs %d\nfile equal: %v",
			a1, a2, u1, u2, h1, h2, s1, s2, f1 == f2)
	}
}

// Private cache names cannot be told from names no cache has, neither
// anonymously nor with another tenant's token; token IDs cannot be told
// from made-up ones. Only the names the request itself carries differ.
func TestHostileProbing(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("hidden", false)
	e.cache("mine", false)
	mine := e.token("mine", meta.PermPush, time.Time{})
	full := e.token("*", meta.PermPull, time.Time{})
	hp := strings.Repeat("0", 32)
	same := func(what string, a, b [2]string, names [2]string) {
		t.Helper()
		if a[0] != b[0] || a[1] != strings.ReplaceAll(b[1], names[1], names[0]) {
			t.Errorf("%s: %s answers %s %q, %s answers %s %q", what, names[0], a[0], a[1], names[1], b[0], b[1])
		}
	}
	ask := func(method, path, token string) [2]string {
		st, body := e.do(method, path, token, nil)
		return [2]string{http.StatusText(st), body}
	}
	for _, r := range []struct{ method, path string }{
		{"GET", "/%s/nix-cache-info"},
		{"GET", "/%s/" + hp + ".narinfo"},
		{"HEAD", "/%s/" + hp + ".narinfo"},
		{"PUT", "/%s/" + hp + ".narinfo"},
		{"POST", "/%s/_silo/missing"},
	} {
		p := func(name string) string { return strings.Replace(r.path, "%s", name, 1) }
		names := [2]string{"hidden", "nothere"}
		same(r.method+" "+r.path+" anonymously", ask(r.method, p("hidden"), ""), ask(r.method, p("nothere"), ""), names)
		same(r.method+" "+r.path+" with another tenant's token", ask(r.method, p("hidden"), mine), ask(r.method, p("nothere"), mine), names)
	}
	// A token whose pattern covers a name learns whether the cache exists.
	if st, _ := e.do("GET", "/nothere/nix-cache-info", full, nil); st != 404 {
		t.Errorf("a token for every cache, a name no cache has: %d, want 404", st)
	}
	// Token IDs: a real ID with a wrong secret and a made-up ID answer alike.
	secret := mine[len("silo_")+11:]
	id := mine[len("silo_") : len("silo_")+10]
	wrong := "silo_" + id + "_" + strings.Repeat("x", len(secret))
	made := "silo_" + "zzzzzzzzzz" + "_" + strings.Repeat("x", len(secret))
	same("a wrong secret vs a made-up ID", ask("GET", "/mine/nix-cache-info", wrong), ask("GET", "/mine/nix-cache-info", made), [2]string{id, "zzzzzzzzzz"})
}

// Request ids are random: 32 hex digits, never sharing a prefix that a
// counter would give away.
func TestHostileRequestIDsUnpredictable(t *testing.T) {
	e := newEnv(t, Options{})
	seen := map[string]bool{}
	for range 200 {
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, httptest.NewRequest("GET", "/healthz", nil))
		id := w.Header().Get("X-Request-Id")
		if b, err := hex.DecodeString(id); err != nil || len(b) != 16 {
			t.Fatalf("X-Request-Id %q: want 32 hex digits", id)
		}
		if seen[id[:12]] {
			t.Fatalf("X-Request-Id %q shares its first 12 digits with an earlier one", id)
		}
		seen[id[:12]] = true
	}
	// A client's own id is echoed only when short and plain.
	for id, kept := range map[string]bool{"abc-123:x.y_z": true, "has space": false, strings.Repeat("a", 65): false, "new\nline": false} {
		r := httptest.NewRequest("GET", "/healthz", nil)
		r.Header["X-Request-Id"] = []string{id}
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r)
		if got := w.Header().Get("X-Request-Id") == id; got != kept {
			t.Errorf("client id %q echoed = %v, want %v", id, got, kept)
		}
	}
}
