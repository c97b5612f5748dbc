package adminapi

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/auth"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/sqlite"
)

type env struct {
	t    *testing.T
	svc  *Service
	meta *sqlite.Store
	url  string
	log  *bytes.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	m, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "silo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	svc := &Service{Meta: m, BaseURL: func() string { return "http://cache.example:8080" },
		Hostname: func() (string, error) { return "box.example", nil }}
	var logBuf bytes.Buffer
	ts := httptest.NewServer(Handler(svc, slog.New(slog.NewTextHandler(&logBuf, nil))))
	t.Cleanup(ts.Close)
	return &env{t: t, svc: svc, meta: m, url: ts.URL, log: &logBuf}
}

func (e *env) token(pattern string, perms ...string) string {
	e.t.Helper()
	nt, err := Local{e.svc}.CreateToken(context.Background(), TokenSpec{Cache: pattern, Perms: perms})
	if err != nil {
		e.t.Fatal(err)
	}
	return nt.Token
}

func (e *env) client(token string) *Client {
	c, err := NewClient(e.url, token)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func TestLocalCacheLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := Local{e.svc}
	ci, err := l.CreateCache(ctx, CacheSpec{Name: "main", Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if ci.URL != "http://cache.example:8080/main" || !strings.HasPrefix(ci.PublicKey, "box-main-1:") || ci.Priority != 40 || ci.StoreDir != "/nix/store" {
		t.Errorf("created %+v", ci)
	}
	if _, err := l.CreateCache(ctx, CacheSpec{Name: "main"}); !errors.Is(err, ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	if _, err := l.CreateCache(ctx, CacheSpec{Name: "_bad"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad name: %v, want ErrInvalid", err)
	}
	exact := e.token("main", "push")
	glob := e.token("ma*", "pull")
	other := e.token("other", "pull")
	res, err := l.DeleteCache(ctx, "main", true)
	if err != nil {
		t.Fatal(err)
	}
	ids := func(ts []TokenInfo) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.ID)
		}
		return out
	}
	id := func(text string) string { i, _ := auth.ID(text); return i }
	if !slices.Equal(ids(res.Revoked), []string{id(exact)}) || !slices.Equal(ids(res.Matching), []string{id(glob)}) || !res.DryRun {
		t.Errorf("dry run: revoked %v matching %v", ids(res.Revoked), ids(res.Matching))
	}
	if _, err := l.Cache(ctx, "main"); err != nil {
		t.Errorf("dry run deleted the cache: %v", err)
	}
	if _, err := l.DeleteCache(ctx, "main", false); err != nil {
		t.Fatal(err)
	}
	toks, _ := l.Tokens(ctx)
	if got := ids(toks); !slices.Equal(got, []string{id(glob), id(other)}) {
		t.Errorf("tokens after delete: %v, want the exact one revoked", got)
	}
	// A new cache of the same name is not reachable with the old token.
	if _, err := l.CreateCache(ctx, CacheSpec{Name: "main"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(ctx, exact); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("token bound to the deleted cache still authenticates: %v", err)
	}
}

func TestTokenWarnings(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := Local{e.svc}
	l.CreateCache(ctx, CacheSpec{Name: "main"})
	nt, err := l.CreateToken(ctx, TokenSpec{Cache: "mian", Perms: []string{"push"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(nt.Warnings) != 1 || !strings.Contains(nt.Warnings[0], `did you mean "main"`) {
		t.Errorf("warnings %q", nt.Warnings)
	}
	nt, _ = l.CreateToken(ctx, TokenSpec{Cache: "m*", Perms: []string{"push"}})
	if len(nt.Warnings) != 0 {
		t.Errorf("pattern matching a cache warned: %q", nt.Warnings)
	}
	if _, err := l.CreateToken(ctx, TokenSpec{Cache: "main", Perms: []string{"root"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown perm: %v", err)
	}
	if _, err := l.CreateToken(ctx, TokenSpec{Cache: "main", Perms: []string{"pull"}, Expires: time.Now().Add(-time.Hour)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("past expiry: %v", err)
	}
}

// TestHTTPAccess checks who may do what over HTTP.
func TestHTTPAccess(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := Local{e.svc}
	l.CreateCache(ctx, CacheSpec{Name: "pub", Public: true})
	l.CreateCache(ctx, CacheSpec{Name: "team-a"})
	l.CreateCache(ctx, CacheSpec{Name: "team-b"})
	root := e.token("*", "admin")
	teamAdmin := e.token("team-*", "admin")
	aAdmin := e.token("team-a", "admin")
	aPush := e.token("team-a", "push")
	revoked := e.token("*", "admin")
	l.RevokeToken(ctx, revoked)
	expired, _ := l.CreateToken(ctx, TokenSpec{Cache: "*", Perms: []string{"admin"}, Expires: time.Now().Add(time.Second)})

	type op func(c *Client) error
	createCache := func(name string) op {
		return func(c *Client) error { _, err := c.CreateCache(ctx, CacheSpec{Name: name}); return err }
	}
	getCache := func(name string) op {
		return func(c *Client) error { _, err := c.Cache(ctx, name); return err }
	}
	createToken := func(pattern string, perms ...string) op {
		return func(c *Client) error {
			_, err := c.CreateToken(ctx, TokenSpec{Cache: pattern, Perms: perms})
			return err
		}
	}
	listTokens := func(c *Client) error { _, err := c.Tokens(ctx); return err }
	whoami := func(c *Client) error { _, err := c.Whoami(ctx); return err }
	dryDelete := func(name string) op {
		return func(c *Client) error { _, err := c.DeleteCache(ctx, name, true); return err }
	}
	time.Sleep(1100 * time.Millisecond) // let "expired" expire
	tests := []struct {
		name  string
		token string
		op    op
		want  error // nil: success
	}{
		{"anonymous reads public cache info", "", getCache("pub"), nil},
		{"anonymous private cache info", "", getCache("team-a"), ErrUnauthorized},
		{"anonymous missing cache info", "", getCache("nope"), ErrUnauthorized},
		{"anonymous lists tokens", "", listTokens, ErrUnauthorized},
		{"anonymous whoami", "", whoami, ErrUnauthorized},
		{"garbage token", "hunter2", getCache("pub"), ErrUnauthorized},
		{"revoked token", revoked, listTokens, ErrUnauthorized},
		{"expired token", expired.Token, listTokens, ErrUnauthorized},
		{"push token reads its private cache", aPush, getCache("team-a"), nil},
		{"push token, other private cache", aPush, getCache("team-b"), ErrNotFound},
		{"push token creates cache", aPush, createCache("team-a2"), ErrForbidden},
		{"push token creates token", aPush, createToken("team-a", "pull"), ErrForbidden},
		{"push token whoami", aPush, whoami, nil},
		{"cache admin creates token for its cache", aAdmin, createToken("team-a", "push"), nil},
		{"cache admin creates token for all", aAdmin, createToken("*", "pull"), ErrForbidden},
		{"cache admin creates token for a pattern", aAdmin, createToken("team-a*", "pull"), ErrForbidden},
		{"pattern admin creates token for one matching cache", teamAdmin, createToken("team-b", "pull"), nil},
		{"pattern admin creates token for its pattern", teamAdmin, createToken("team-*", "pull"), nil},
		{"pattern admin creates token for other cache", teamAdmin, createToken("pub", "pull"), ErrForbidden},
		{"pattern admin creates matching cache", teamAdmin, createCache("team-c"), nil},
		{"pattern admin creates other cache", teamAdmin, createCache("prod"), ErrForbidden},
		{"cache admin deletes other cache", aAdmin, dryDelete("team-b"), ErrForbidden},
		{"cache admin deletes its cache (dry run)", aAdmin, dryDelete("team-a"), nil},
		{"root creates anything", root, createCache("prod"), nil},
		{"root deletes missing cache", root, dryDelete("nope"), ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op(e.client(tt.token))
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
	// Listings show only what the token manages.
	toks, err := e.client(aAdmin).Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range toks {
		if ti.Cache != "team-a" {
			t.Errorf("team-a admin sees token %s for %q", ti.ID, ti.Cache)
		}
	}
	caches, err := e.client(teamAdmin).Caches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range caches {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"team-a", "team-b", "team-c"}) {
		t.Errorf("team admin lists %v", names)
	}
	w, err := e.client(aPush).Whoami(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w.Token.Cache != "team-a" || !slices.Equal(w.Token.Perms, []string{"push"}) || len(w.Caches) != 1 || w.Caches[0].Name != "team-a" {
		t.Errorf("whoami %+v", w)
	}
	// Revoking a token over the API by its whole text sends only its ID.
	victim := e.token("team-a", "pull")
	if _, err := e.client(aAdmin).RevokeToken(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(e.log.String(), victim) {
		t.Errorf("the server log holds a token's secret:\n%s", e.log.String())
	}
	if !strings.Contains(e.log.String(), "admin request") {
		t.Errorf("no request log lines:\n%s", e.log.String())
	}
}

func TestHTTPBadRequests(t *testing.T) {
	e := newEnv(t)
	root := e.token("*", "admin")
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"unknown field", "POST", "caches", `{"name":"x","sekret":1}`, 400},
		{"not json", "POST", "caches", `name=x`, 400},
		{"two values", "POST", "caches", `{"name":"x"}{"name":"y"}`, 400},
		{"huge body", "POST", "caches", `{"name":"` + strings.Repeat("x", 2<<20) + `"}`, 400},
		{"unknown endpoint", "GET", "pins", "", 404},
		{"wrong method", "PUT", "caches", "{}", 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, e.url+Prefix+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer "+root)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
	if _, err := e.meta.Cache(context.Background(), "x"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("a bad request created a cache: %v", err)
	}
}
