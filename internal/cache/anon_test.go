package cache

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/meta"
)

// TestRefusedTokenReadsPublicAnonymously: a token that is revoked,
// expired, unknown or not a token at all still reads a public cache, as an
// anonymous client would, with a warning header and one log line; it
// never writes, and never reads a private cache.
func TestRefusedTokenReadsPublicAnonymously(t *testing.T) {
	var logBuf syncBuffer
	e := newEnv(t, Options{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	e.cache("pub", true)
	e.cache("priv", false)
	admin := e.token("*", meta.PermAdmin, time.Time{})
	stored := newUpload(t, "anon", fileNAR("anon"), compress.Zstd)
	e.push("pub", admin, stored)
	e.push("priv", admin, stored)
	revoked := e.token("*", meta.PermPush, time.Time{})
	id, _ := auth.ID(revoked)
	if err := e.meta.DeleteToken(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	expired := e.token("*", meta.PermPush, time.Now().Add(-time.Second))
	unknown := "silo_aaaaaaaaaa_" + strings.Repeat("b", 52)
	fresh := newUpload(t, "fresh", fileNAR("fresh"), compress.Zstd)

	for _, tok := range []struct{ name, text string }{{"revoked", revoked}, {"expired", expired}, {"unknown", unknown}, {"garbage", "hunter2"}} {
		t.Run(tok.name, func(t *testing.T) {
			for _, p := range []string{"/pub/nix-cache-info", "/pub/" + stored.narinfoPath()} {
				req, _ := http.NewRequest("GET", e.ts.URL+p, nil)
				req.SetBasicAuth("", tok.text)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("GET %s = %d, want 200 (anonymous read of a public cache)", p, resp.StatusCode)
				}
				if h := resp.Header.Get(AnonymousHeader); !strings.Contains(h, "anonymous") {
					t.Errorf("GET %s: %s header = %q", p, AnonymousHeader, h)
				}
			}
			if st, body := e.do("PUT", "/pub/"+fresh.url, tok.text, fresh.file); st != 401 {
				t.Errorf("PUT with a %s token = %d %q, want 401", tok.name, st, body)
			}
			if st, _ := e.do("GET", "/priv/"+stored.narinfoPath(), tok.text, nil); st != 401 {
				t.Errorf("private cache with a %s token = %d, want 401", tok.name, st)
			}
		})
	}
	// A valid token gets no warning.
	req, _ := http.NewRequest("GET", e.ts.URL+"/pub/nix-cache-info", nil)
	req.SetBasicAuth("", admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if h := resp.Header.Get(AnonymousHeader); h != "" {
		t.Errorf("valid token got %s: %q", AnonymousHeader, h)
	}
	// One warning per token and reason, not one per request.
	logs := logBuf.String()
	if n := strings.Count(logs, "token "+id+" is unknown or revoked"); n == 0 || strings.Count(logs, "read a public cache anonymously") != 4 {
		t.Errorf("want one warning for each of the 4 refused tokens, got:\n%s", logs)
	}
}

// TestNixReadsPublicCacheWithRevokedToken: the real Nix, whose netrc still
// holds a revoked push token for the host, substitutes from the public
// cache instead of calling it "not a binary cache".
func TestNixReadsPublicCacheWithRevokedToken(t *testing.T) {
	e := newNixEnv(t)
	e.cache("pub", true)
	dep, top := buildClosure(e.n)
	e.n.Run("nix", "copy", "--to", e.url("pub")+"?compression=zstd", "--option", "netrc-file", e.netrc, top)
	revoked := e.token("pub", meta.PermPush, time.Time{})
	id, _ := auth.ID(revoked)
	if err := e.meta.DeleteToken(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	netrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(netrc, []byte("machine 127.0.0.1 password "+revoked+"\n"), 0o600)
	dst := t.TempDir()
	e.n.Run("nix", "copy", "--from", e.url("pub"), "--to", dst, "--option", "netrc-file", netrc,
		"--option", "trusted-public-keys", e.publicKey("pub"), top)
	for _, p := range []string{dep, top} {
		if _, err := os.Stat(filepath.Join(dst, p)); err != nil {
			t.Errorf("%s not substituted with a revoked token in netrc: %v", p, err)
		}
	}
	// Pushing with it is still refused.
	other := e.n.Build("anon-push", "echo push > $out")
	if _, err := e.n.Try("nix", "copy", "--to", e.url("pub")+"?compression=zstd", "--option", "netrc-file", netrc, other); err == nil {
		t.Errorf("nix copy --to with a revoked token succeeded")
	}
}
