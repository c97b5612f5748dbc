package push_test

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/blob/disk"
	"github.com/silo-cache/silo/internal/cache"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/sqlite"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/push"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// siloServer runs the real silo server on temporary stores with a public
// cache "main"; it returns the cache URL, a push token and the cache's
// public key.
func siloServer(t *testing.T) (url, token, pubKey string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	m, err := sqlite.Open(ctx, filepath.Join(dir, "silo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	b, err := disk.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := cache.New(cache.Options{Meta: m, Blobs: b, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	k, err := signature.GenerateKey("main-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateCache(ctx, meta.Cache{Name: "main", Public: true, SecretKey: k.String(), StoreDir: "/nix/store"}); err != nil {
		t.Fatal(err)
	}
	text, rec, err := auth.NewRandom("main", meta.PermPush|meta.PermPull, time.Time{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CreateToken(ctx, rec); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.Config.ConnContext = cache.ConnContext
	hs.Start()
	t.Cleanup(hs.Close)
	return hs.URL + "/main", text, k.Public().String()
}

// To a silo server NARs stream chunked under their NarHash; the server
// verifies them, fills in FileHash, and Nix substitutes the closure.
func TestPushSiloServerStreams(t *testing.T) {
	c := newClosure(t)
	url, token, pub := siloServer(t)
	target, err := push.OpenTarget(url, &push.TargetOptions{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	res, err := doPush(t, target, &c.key, nil, c.top)
	if err != nil || res.Uploaded != 4 {
		t.Fatalf("push: %+v, %v", res, err)
	}
	if err := c.nixCopyFrom(t, url, pub, c.top); err != nil {
		t.Errorf("nix copy --from %s: %v", url, err)
	}
	resp, err := http.Get(url + "/" + c.big.HashPart() + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ni, err := narinfo.ParseString(storepath.DefaultDir, string(body))
	if err != nil {
		t.Fatalf("narinfo of big: %v\n%s", err, body)
	}
	if ni.FileHash.IsZero() || ni.FileSize == 0 || ni.Compression != "zstd" {
		t.Errorf("served narinfo of big lacks FileHash/FileSize or zstd:\n%s", body)
	}

	// A path whose NAR no longer matches the database's NarHash (same
	// size, so only the server can tell) never gets a narinfo.
	info, err := openStore(t).QueryPathInfo(context.Background(), c.leaf)
	if err != nil {
		t.Fatal(err)
	}
	bad := *info
	bad.NarHash, _ = hash.Parse("sha256:" + strings.Repeat("0", 52))
	_, err = (&push.Uploader{Target: target}).Upload(context.Background(), &bad, nil)
	if err == nil || !strings.Contains(err.Error(), "NarHash") {
		t.Errorf("upload with a NarHash the NAR does not have: %v, want the server's NarHash refusal", err)
	}
}
