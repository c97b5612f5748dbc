package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixtest"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveInProcess runs silo serve in this process until the test ends and
// returns its URL (http://127.0.0.1:PORT) and log.
func serveInProcess(t *testing.T, dataDir string, extra ...string) (string, *lockedBuffer) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &lockedBuffer{}
	done := make(chan int, 1)
	env := &Env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: logs, Getenv: func(string) string { return "" }}
	go func() {
		done <- Main(ctx, append([]string{"serve", "--data-dir", dataDir, "--listen", addr}, extra...), env)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Errorf("silo serve did not stop")
		}
	})
	url := "http://" + addr
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			return url, logs
		}
		select {
		case code := <-done:
			t.Fatalf("silo serve exited with %d:\n%s", code, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("silo serve did not answer on %s:\n%s", url, logs.String())
		}
	}
}

var adminCommands = [][]string{
	{"cache", "create", "x"}, {"cache", "list"}, {"cache", "info", "x"}, {"cache", "delete", "x", "--yes"},
	{"token", "create", "--cache", "x", "--pull"}, {"token", "list"}, {"token", "revoke", "abc"},
}

// TestAdminHelpShowsOwnFlags: an admin command's --help lists its own
// flags, not every setting of silo serve.
func TestAdminHelpShowsOwnFlags(t *testing.T) {
	for _, args := range adminCommands {
		name := strings.Join(args[:2], " ")
		code, out, _ := runSilo(t, nil, "", args[0], args[1], "--help")
		if code != 0 {
			t.Errorf("%s --help: exit %d", name, code)
		}
		for _, want := range []string{"--data-dir", "--server", "--token-file"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s --help lacks %s:\n%s", name, want, out)
			}
		}
		for _, serveOnly := range []string{"--listen", "--compression", "--gc-interval", "--max-nar-size", "--log-format"} {
			if strings.Contains(out, serveOnly) {
				t.Errorf("%s --help lists silo serve's %s:\n%s", name, serveOnly, out)
			}
		}
	}
}

// TestDidYouMean: unknown commands, flags and config keys get a suggestion.
func TestDidYouMean(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "silo.toml")
	os.WriteFile(cfg, []byte("lisen = \"127.0.0.1:1\"\n"), 0o644)
	serveCfg := filepath.Join(t.TempDir(), "serve.toml")
	os.WriteFile(serveCfg, []byte("listen = \"127.0.0.1:1\"\ncompression = \"zstd\"\ndata-dri = \"x\"\n"), 0o644)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"cahce", "list"}, `did you mean "silo cache list"?`},
		{[]string{"cache", "lst"}, `did you mean "silo cache list"?`},
		{[]string{"tokn"}, `did you mean "silo token"?`},
		{[]string{"serv"}, `did you mean "silo serve"?`},
		{[]string{"watch-stor"}, `did you mean "silo watch-store"?`},
		{[]string{"serve", "--lisen", "x"}, "did you mean --listen?"},
		{[]string{"cache", "list", "--data-dri", "x"}, "did you mean --data-dir?"},
		{[]string{"serve", "--config", cfg}, `did you mean "listen"?`},
		{[]string{"cache", "list", "--config", serveCfg}, `did you mean "data-dir"?`},
	}
	for _, tt := range tests {
		code, _, stderr := runSilo(t, nil, "", tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("silo %s: exit %d, stderr:\n%s\nwant exit 2 and %q", strings.Join(tt.args, " "), code, stderr, tt.want)
		}
	}
	// An admin command reads serve's config file, ignoring serve's own keys.
	data := filepath.Join(t.TempDir(), "data")
	runSilo(t, nil, "", "init", "--data-dir", data)
	okCfg := filepath.Join(t.TempDir(), "ok.toml")
	os.WriteFile(okCfg, []byte("listen = \"127.0.0.1:1\"\ncompression = \"zstd\"\ndata-dir = \""+data+"\"\n"), 0o644)
	if code, _, stderr := runSilo(t, nil, "", "cache", "list", "--config", okCfg); code != 0 {
		t.Errorf("cache list with serve's config: exit %d: %s", code, stderr)
	}
}

// TestAdminNeedsDataDir: admin commands refuse a missing data directory
// and never create one; silo init does.
func TestAdminNeedsDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nowhere")
	for _, args := range adminCommands {
		for _, how := range []string{"flag", "env"} {
			var vars map[string]string
			a := args
			if how == "flag" {
				a = append(append([]string{}, args...), "--data-dir", dir)
			} else {
				vars = map[string]string{"SILO_DATA_DIR": dir}
			}
			code, _, stderr := runSilo(t, vars, "", a...)
			if code != 1 || !strings.Contains(stderr, "no silo data in "+dir+" (wrong directory? use --data-dir") {
				t.Errorf("silo %s (%s): exit %d, stderr %q", strings.Join(a, " "), how, code, stderr)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Fatalf("silo %s created %s", strings.Join(a, " "), dir)
			}
		}
	}
	code, out, stderr := runSilo(t, nil, "", "init", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "Created silo data directory") {
		t.Fatalf("init: exit %d: %s%s", code, out, stderr)
	}
	if code, _, stderr := runSilo(t, nil, "", "init", "--data-dir", dir); code != 0 || !strings.Contains(stderr, "nothing to do") {
		t.Errorf("second init: exit %d: %s", code, stderr)
	}
	code, out, stderr = runSilo(t, nil, "", "cache", "create", "main", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "has not run with") {
		t.Errorf("cache create after init: exit %d, stdout %q, stderr %q (want the URL marked as a guess)", code, out, stderr)
	}
}

// TestCacheInfoUsesServerURL: admin commands print the URL silo serve
// recorded: its --url, or the address it listens on.
func TestCacheInfoUsesServerURL(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	runSilo(t, nil, "", "init", "--data-dir", data)
	runSilo(t, nil, "", "cache", "create", "main", "--data-dir", data)
	url, _ := serveInProcess(t, data)
	_, out, _ := runSilo(t, nil, "", "cache", "info", "main", "--data-dir", data)
	if !strings.Contains(out, "extra-substituters = "+url+"/main\n") || strings.Contains(out, "guess") {
		t.Errorf("cache info with silo serve on %s:\n%s", url, out)
	}
	_, out, _ = runSilo(t, nil, "", "cache", "info", "main", "--data-dir", data, "--url", "https://override.example")
	if !strings.Contains(out, "extra-substituters = https://override.example/main\n") {
		t.Errorf("cache info --url:\n%s", out)
	}
	data2 := filepath.Join(t.TempDir(), "data2")
	runSilo(t, nil, "", "init", "--data-dir", data2)
	runSilo(t, nil, "", "cache", "create", "main", "--data-dir", data2)
	serveInProcess(t, data2, "--url", "https://cache.example.org/")
	_, out, _ = runSilo(t, nil, "", "cache", "info", "main", "--data-dir", data2)
	if !strings.Contains(out, "Substituter: https://cache.example.org/main\n") || !strings.Contains(out, "machine cache.example.org password") {
		t.Errorf("cache info with silo serve --url:\n%s", out)
	}
}

// TestCacheDelete: delete asks first (or --yes), revokes the tokens bound
// to exactly the cache's name and lists pattern tokens that match it.
func TestCacheDelete(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	runSilo(t, nil, "", "init", "--data-dir", data)
	runSilo(t, nil, "", "cache", "create", "main", "--data-dir", data)
	tokenID := func(args ...string) string {
		t.Helper()
		code, out, stderr := runSilo(t, nil, "", append([]string{"token", "create", "--data-dir", data}, args...)...)
		if code != 0 {
			t.Fatalf("token create: %s", stderr)
		}
		return strings.Split(strings.TrimSpace(out), "_")[1]
	}
	exact := tokenID("--cache", "main", "--push", "--note", "ci")
	glob := tokenID("--cache", "ma*", "--pull")
	all := tokenID("--cache", "*", "--admin")
	other := tokenID("--cache", "other", "--pull")

	for _, answer := range []string{"", "n\n", "no\n", "maybe\n"} {
		code, _, stderr := runSilo(t, nil, answer, "cache", "delete", "main", "--data-dir", data)
		if code != 1 || !strings.Contains(stderr, "not deleted") || !strings.Contains(stderr, "[y/N]") {
			t.Errorf("answer %q: exit %d, stderr %q", answer, code, stderr)
		}
		if code, _, _ := runSilo(t, nil, "", "cache", "info", "main", "--data-dir", data); code != 0 {
			t.Fatalf("answer %q deleted the cache", answer)
		}
	}
	code, out, stderr := runSilo(t, nil, "y\n", "cache", "delete", "main", "--data-dir", data)
	if code != 0 {
		t.Fatalf("delete with y: exit %d: %s", code, stderr)
	}
	for _, want := range []string{exact + "  push", "will be revoked"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("confirmation lacks %q:\n%s", want, stderr)
		}
	}
	for _, want := range []string{"Deleted cache main", exact, "would grant access to a new cache named main", glob, all} {
		if !strings.Contains(out, want) {
			t.Errorf("delete output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, other) {
		t.Errorf("delete output lists the unrelated token %s:\n%s", other, out)
	}
	_, list, _ := runSilo(t, nil, "", "token", "list", "--data-dir", data)
	if strings.Contains(list, exact) || !strings.Contains(list, glob) || !strings.Contains(list, other) {
		t.Errorf("tokens after delete:\n%s", list)
	}
	runSilo(t, nil, "", "cache", "create", "again", "--data-dir", data)
	if code, _, _ := runSilo(t, nil, "", "cache", "delete", "again", "--yes", "--data-dir", data); code != 0 {
		t.Errorf("delete --yes failed")
	}
	if code, _, stderr := runSilo(t, nil, "", "cache", "delete", "nope", "--yes", "--data-dir", data); code != 1 || !strings.Contains(stderr, "no cache named nope") {
		t.Errorf("delete of a missing cache: %d %s", code, stderr)
	}
}

// TestTokenPatternWarning: a --cache pattern matching no cache warns.
func TestTokenPatternWarning(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	runSilo(t, nil, "", "init", "--data-dir", data)
	runSilo(t, nil, "", "cache", "create", "main", "--data-dir", data)
	_, _, stderr := runSilo(t, nil, "", "token", "create", "--cache", "mian", "--push", "--data-dir", data)
	if !strings.Contains(stderr, `warning: no cache matches "mian" yet`) || !strings.Contains(stderr, `did you mean "main"?`) {
		t.Errorf("typo'd pattern:\n%s", stderr)
	}
	_, _, stderr = runSilo(t, nil, "", "token", "create", "--cache", "m*", "--push", "--data-dir", data)
	if strings.Contains(stderr, "warning") {
		t.Errorf("matching pattern warned:\n%s", stderr)
	}
}

// TestLoginVerifies: silo login checks the token with the server, says
// what it grants, and saves nothing the server refuses.
func TestLoginVerifies(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	runSilo(t, nil, "", "init", "--data-dir", data)
	runSilo(t, nil, "", "cache", "create", "main", "--public", "--data-dir", data)
	url, _ := serveInProcess(t, data)
	token := func(args ...string) string {
		_, out, _ := runSilo(t, nil, "", append([]string{"token", "create", "--data-dir", data}, args...)...)
		return strings.TrimSpace(out)
	}
	push, pull, other := token("--cache", "main", "--push"), token("--cache", "main", "--pull"), token("--cache", "other", "--push")
	revoked := token("--cache", "main", "--push")
	runSilo(t, nil, "", "token", "revoke", revoked, "--data-dir", data)
	cfgHome := t.TempDir()
	vars := map[string]string{"XDG_CONFIG_HOME": cfgHome}
	cfgFile := filepath.Join(cfgHome, "silo", "client.toml")

	tests := []struct {
		name, token string
		args        []string
		code        int
		want        string
	}{
		{"revoked", revoked, nil, 1, "refused the token"},
		{"garbage", "hunter2", nil, 1, "not a silo token"},
		{"other cache", other, nil, 1, `caches matching "other", not main`},
		{"unreachable", push, []string{"http://127.0.0.1:1/main"}, 1, "--no-verify"},
		{"push", push, nil, 0, `grants push on caches matching "main", never expires`},
		{"pull", pull, nil, 0, "it only reads"},
		{"unchecked", "hunter2", []string{"--no-verify"}, 0, "saved cache"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(cfgFile)
			args := []string{"login", "main", url + "/main"}
			if len(tt.args) > 0 && strings.HasPrefix(tt.args[0], "http") {
				args[2] = tt.args[0]
			} else {
				args = append(args, tt.args...)
			}
			code, _, stderr := runSilo(t, vars, tt.token+"\n", args...)
			if code != tt.code || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr, tt.code, tt.want)
			}
			data, err := os.ReadFile(cfgFile)
			if saved := err == nil && strings.Contains(string(data), tt.token); saved != (tt.code == 0) {
				t.Errorf("token saved = %v, want %v", saved, tt.code == 0)
			}
		})
	}
}

// TestRemoteAdmin administers a running server only through its admin
// API (--server, with a silo login entry or --token-file), and the real
// Nix pushes to and substitutes from what it set up.
func TestRemoteAdmin(t *testing.T) {
	n := nixtest.Require(t)
	data := filepath.Join(t.TempDir(), "data")
	runSilo(t, nil, "", "init", "--data-dir", data)
	_, rootTok, _ := runSilo(t, nil, "", "token", "create", "--cache", "*", "--admin", "--data-dir", data)
	rootTok = strings.TrimSpace(rootTok)
	url, logs := serveInProcess(t, data)

	vars := map[string]string{"XDG_CONFIG_HOME": t.TempDir()}
	remote := func(args ...string) (string, string) {
		t.Helper()
		code, out, stderr := runSilo(t, vars, "", append(args, "--server", "prod")...)
		if code != 0 {
			t.Fatalf("silo %s --server prod: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		return out, stderr
	}
	if code, _, stderr := runSilo(t, vars, rootTok, "login", "prod", url); code != 0 {
		t.Fatalf("login to the server root: %s", stderr)
	}
	out, _ := remote("cache", "create", "team")
	if !strings.Contains(out, "Substituter: "+url+"/team") {
		t.Errorf("remote cache create:\n%s", out)
	}
	pushTok, _ := remote("token", "create", "--cache", "team", "--push")
	pushTok = strings.TrimSpace(pushTok)
	info, _ := remote("cache", "info", "team")
	_, key, _ := strings.Cut(info, "Public key:  ")
	key, _, _ = strings.Cut(key, "\n")

	p := n.Build("remote-admin", "echo remote > $out")
	netrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(netrc, []byte("machine 127.0.0.1 password "+pushTok+"\n"), 0o600)
	n.Run("nix", "copy", "--to", url+"/team?compression=zstd", "--option", "netrc-file", netrc, p)
	dst := t.TempDir()
	n.Run("nix", "copy", "--from", url+"/team", "--to", dst, "--option", "netrc-file", netrc, "--option", "trusted-public-keys", key, p)
	if _, err := os.Stat(filepath.Join(dst, p)); err != nil {
		t.Errorf("substitution from a remotely created cache: %v", err)
	}
	if out, _ := remote("cache", "list"); !strings.Contains(out, "team") || !strings.Contains(out, key) {
		t.Errorf("remote cache list:\n%s", out)
	}
	pushID := strings.Split(pushTok, "_")[1]
	if out, _ := remote("token", "list"); !strings.Contains(out, pushID) || strings.Contains(out, pushTok) {
		t.Errorf("remote token list:\n%s", out)
	}

	// A token file instead of the login entry; a cache admin is confined.
	_, teamAdmin, _ := runSilo(t, nil, "", "token", "create", "--cache", "team", "--admin", "--data-dir", data)
	tf := filepath.Join(t.TempDir(), "admin.token")
	os.WriteFile(tf, []byte(teamAdmin), 0o600)
	code, _, stderr := runSilo(t, vars, "", "cache", "create", "prod", "--server", url, "--token-file", tf)
	if code != 1 || !strings.Contains(stderr, "may not create cache prod") {
		t.Errorf("team admin creating another cache: exit %d: %s", code, stderr)
	}
	if code, out, stderr := runSilo(t, vars, "", "cache", "info", "team", "--server", url, "--token-file", tf); code != 0 || !strings.Contains(out, key) {
		t.Errorf("team admin reading its cache: exit %d: %s%s", code, out, stderr)
	}

	out, _ = remote("cache", "delete", "team", "--yes")
	if !strings.Contains(out, pushID) {
		t.Errorf("remote delete does not list the revoked push token:\n%s", out)
	}
	if _, err := n.Try("nix", "copy", "--to", url+"/team?compression=zstd", "--option", "netrc-file", netrc, p); err == nil {
		t.Errorf("nix copy to the deleted cache succeeded")
	}
	if !strings.Contains(logs.String(), "admin request") {
		t.Errorf("the server logged no admin requests:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), pushTok) || strings.Contains(logs.String(), rootTok) {
		t.Errorf("the server log holds a token")
	}
}
