package push

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNetrc(t *testing.T) {
	const file = `machine other.example login u1 password p1
default login dl password dp
machine cache.example.org
  login me
  password tok3n
macdef init
machine cache.example.org password fromMacro

machine cache.example.org password second
`
	tests := []struct {
		host, login, password string
		ok                    bool
	}{
		{"cache.example.org", "me", "tok3n", true},
		{"other.example", "u1", "p1", true},
		{"unknown", "dl", "dp", true},
	}
	for _, tt := range tests {
		l, p, ok := parseNetrc(file, tt.host)
		if l != tt.login || p != tt.password || ok != tt.ok {
			t.Errorf("parseNetrc(%s) = %q, %q, %v; want %q, %q, %v", tt.host, l, p, ok, tt.login, tt.password, tt.ok)
		}
	}
	if _, _, ok := parseNetrc("machine a password b", "c"); ok {
		t.Errorf("parseNetrc found an entry for an unknown host without default")
	}
}

func FuzzParseNetrc(f *testing.F) {
	f.Add("machine h login l password p\ndefault password d", "h")
	f.Add("macdef x\nmachine h\n\nmachine", "h")
	f.Fuzz(func(t *testing.T, data, host string) { parseNetrc(data, host) })
}

func TestClientConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "silo", "client.toml")
	cfg, err := LoadClientConfig(path)
	if err != nil || len(cfg.Caches) != 0 {
		t.Fatalf("missing config: %v, %v; want empty", cfg, err)
	}
	cfg.Caches["prod"] = CacheEntry{URL: "https://cache.example.org/main", Token: "t1"}
	cfg.Caches["odd name"] = CacheEntry{URL: "file:///srv/c"}
	if err := cfg.Save(path); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600", st.Mode().Perm())
	}
	again, err := LoadClientConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cfg, again); diff != "" {
		t.Errorf("round trip (-saved +loaded):\n%s", diff)
	}
	tests := []struct {
		in, url, token, err string
	}{
		{"prod", "https://cache.example.org/main", "t1", ""},
		{"https://cache.example.org/main/", "https://cache.example.org/main/", "t1", ""},
		{"http://elsewhere", "http://elsewhere", "", ""},
		{"nope", "", "", "silo login nope"},
	}
	for _, tt := range tests {
		u, tok, err := again.Resolve(tt.in)
		if u != tt.url || tok != tt.token || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("Resolve(%q) = %q, %q, %v; want %q, %q, error containing %q", tt.in, u, tok, err, tt.url, tt.token, tt.err)
		}
	}
	os.Chmod(path, 0o644)
	if _, err := LoadClientConfig(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable config: %v, want a refusal naming chmod 600", err)
	}
}

func TestOpenTargetRejects(t *testing.T) {
	for _, u := range []string{"ftp://x", "file://host/dir", "file:relative", "http://", "http://h/c?compression=xz", "name with space"} {
		if _, err := OpenTarget(u, nil); err == nil {
			t.Errorf("OpenTarget(%q) succeeded", u)
		}
	}
}
