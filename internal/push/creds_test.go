package push

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestReloadCredentials: with Reload, a target picks up a token saved
// again by silo login and an edited netrc file on its next request, and
// ReloadCredentials reports each change once; without Reload it keeps the
// credentials it started with.
func TestReloadCredentials(t *testing.T) {
	var mu sync.Mutex
	var last string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		last = r.Header.Get("Authorization")
		mu.Unlock()
		http.NotFound(w, r)
	}))
	defer ts.Close()
	seen := func(tgt Target) string {
		t.Helper()
		if _, err := tgt.HasFile(context.Background(), "x.narinfo"); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return last
	}
	cfgHome := t.TempDir()
	getenv := func(k string) string {
		if k == "XDG_CONFIG_HOME" {
			return cfgHome
		}
		return ""
	}
	cfgPath, _ := ClientConfigPath(getenv)
	login := func(token string) {
		t.Helper()
		cfg := &ClientConfig{Caches: map[string]CacheEntry{"main": {URL: ts.URL + "/main", Token: token}}}
		if err := cfg.Save(cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	login("old")
	live, err := ResolveTarget("main", getenv, TargetOptions{Reload: true})
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := ResolveTarget("main", getenv, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := seen(live); got != "Bearer old" {
		t.Fatalf("first request: %q", got)
	}
	if changed, _ := live.(Reloader).ReloadCredentials(); changed {
		t.Errorf("ReloadCredentials reports a change before any")
	}
	login("new")
	if got := seen(live); got != "Bearer new" {
		t.Errorf("after silo login saved a new token: %q, want Bearer new", got)
	}
	if got := seen(fixed); got != "Bearer old" {
		t.Errorf("a target without Reload changed credentials: %q", got)
	}
	if changed, err := live.(Reloader).ReloadCredentials(); !changed || err != nil {
		t.Errorf("ReloadCredentials after a new login = %v, %v; want a change", changed, err)
	}
	if changed, _ := live.(Reloader).ReloadCredentials(); changed {
		t.Errorf("the same change reported twice")
	}

	// A broken client config keeps the last good token and says why.
	os.WriteFile(cfgPath, []byte("[cache.main\n"), 0o600)
	if _, err := live.(Reloader).ReloadCredentials(); err == nil {
		t.Errorf("a broken client config gave no error")
	}
	if _, err := live.HasFile(context.Background(), "x.narinfo"); err == nil {
		t.Errorf("a request with a broken client config did not report it")
	}

	// Netrc credentials (a URL target) reload the same way.
	netrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(netrc, []byte("machine 127.0.0.1 password one\n"), 0o600)
	byURL, err := ResolveTarget(ts.URL+"/other", func(string) string { return "" }, TargetOptions{NetrcFile: netrc, Reload: true})
	if err != nil {
		t.Fatal(err)
	}
	basic := func(p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(":"+p)) }
	if got := seen(byURL); got != basic("one") {
		t.Errorf("netrc: %q", got)
	}
	os.WriteFile(netrc+".new", []byte("machine 127.0.0.1 password two\n"), 0o600)
	os.Rename(netrc+".new", netrc)
	if got := seen(byURL); got != basic("two") {
		t.Errorf("after editing the netrc file: %q, want %q", got, basic("two"))
	}
}
