package cache

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/meta"
)

func TestAccess(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("priv", false)
	e.cache("pub", true)
	admin := e.token("*", meta.PermAdmin, time.Time{})
	stored := newUpload(t, "stored", fileNAR("secret"), compress.Zstd)
	e.push("priv", admin, stored)
	e.push("pub", admin, stored)

	pull := e.token("priv", meta.PermPull, time.Time{})
	push := e.token("priv", meta.PermPush, time.Time{})
	other := e.token("pub", meta.PermPush, time.Time{})
	expired := e.token("*", meta.PermPush, time.Now().Add(-time.Second))
	revoked := e.token("*", meta.PermPush, time.Time{})
	id, _ := auth.ID(revoked)
	if err := e.meta.DeleteToken(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	absent := "/priv/00000000000000000000000000000000.narinfo"
	present := "/priv/" + stored.narinfoPath()
	fresh := newUpload(t, "fresh", fileNAR("fresh"), compress.Zstd)

	tests := []struct {
		name, method, path, token string
		body                      []byte
		want                      int
	}{
		{"private info, no token", "GET", "/priv/nix-cache-info", "", nil, 401},
		{"private existing path, no token", "GET", present, "", nil, 401},
		{"private missing path, no token", "GET", absent, "", nil, 401},
		{"private HEAD, no token", "HEAD", present, "", nil, 401},
		{"private, pull token", "GET", present, pull, nil, 200},
		{"private, push token reads", "GET", present, push, nil, 200},
		{"private, token for another cache", "GET", present, other, nil, 403},
		{"private, expired token", "GET", present, expired, nil, 401},
		{"private, revoked token", "GET", present, revoked, nil, 401},
		{"private, garbage credentials", "GET", present, "hunter2", nil, 401},
		{"pull token cannot push", "PUT", "/priv/" + fresh.url, pull, fresh.file, 403},
		{"push token pushes", "PUT", "/priv/" + fresh.url, push, fresh.file, 200},
		{"public, no token", "GET", "/pub/" + stored.narinfoPath(), "", nil, 200},
		{"public, token for another cache reads", "GET", "/pub/" + stored.narinfoPath(), pull, nil, 200},
		{"public push without token", "PUT", "/pub/" + fresh.url, "", fresh.file, 401},
		{"public push, token for another cache", "PUT", "/pub/" + fresh.url, pull, fresh.file, 403},
		{"public, revoked token reads anonymously", "GET", "/pub/nix-cache-info", revoked, nil, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, body := e.do(tt.method, tt.path, tt.token, tt.body)
			if st != tt.want {
				t.Errorf("%s %s = %d %q, want %d", tt.method, tt.path, st, body, tt.want)
			}
		})
	}
	// A private cache's refusal is the same whether the path exists or not.
	_, a := e.do("GET", present, "", nil)
	_, b := e.do("GET", absent, "", nil)
	if a != b {
		t.Errorf("private cache reveals existence: %q vs %q", a, b)
	}
	// 401s ask for credentials, as curl's netrc support needs.
	resp, err := http.Get(e.ts.URL + present)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("401 without WWW-Authenticate")
	}
	// Bearer works like Basic.
	req, _ := http.NewRequest("GET", e.ts.URL+present, nil)
	req.Header.Set("Authorization", "Bearer "+pull)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("Bearer token: %d, want 200", resp.StatusCode)
	}
}

// Revoking a token takes effect on the very next request.
func TestRevocationIsImmediate(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("priv", false)
	tok := e.token("priv", meta.PermPull, time.Time{})
	if st, _ := e.do("GET", "/priv/nix-cache-info", tok, nil); st != 200 {
		t.Fatalf("before revocation: %d", st)
	}
	id, _ := auth.ID(tok)
	if err := e.meta.DeleteToken(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.do("GET", "/priv/nix-cache-info", tok, nil); st != 401 {
		t.Errorf("right after revocation: %d, want 401", st)
	}
}

// Under concurrent load, no request that starts after a revocation has
// been committed is served with the revoked token.
func TestRevocationUnderLoad(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("priv", false)
	tok := e.token("priv", meta.PermPull, time.Time{})
	id, _ := auth.ID(tok)
	var revoked atomic.Bool
	var wg sync.WaitGroup
	var late atomic.Int64
	stop := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				after := revoked.Load()
				st, _ := e.do("GET", "/priv/nix-cache-info", tok, nil)
				if after && st == 200 {
					late.Add(1)
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := e.meta.DeleteToken(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	revoked.Store(true)
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := late.Load(); n > 0 {
		t.Errorf("%d requests that started after the revocation were served", n)
	}
}
