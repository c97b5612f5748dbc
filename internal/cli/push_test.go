package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/nixtest"
)

func runSilo(t *testing.T, env map[string]string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	code := Main(context.Background(), args, e)
	return code, out.String(), errb.String()
}

func TestLoginThenPushResolvesName(t *testing.T) {
	cfgHome := t.TempDir()
	env := map[string]string{"XDG_CONFIG_HOME": cfgHome}
	if code, _, stderr := runSilo(t, env, "tok-from-stdin\n", "login", "mine", "file:///nonexistent/cache"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, stderr)
	}
	data, err := os.ReadFile(filepath.Join(cfgHome, "silo", "client.toml"))
	if err != nil || !strings.Contains(string(data), "tok-from-stdin") {
		t.Fatalf("client config after login: %q, %v", data, err)
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"login", "bad name", "http://x", "t"}, 2, "cache name"},
		{[]string{"login", "x", "gopher://x", "t"}, 2, "unsupported scheme"},
		{[]string{"push", "/nix/store/00000000000000000000000000000000-x"}, 2, "--to"},
		{[]string{"push", "--to", "unknown", "/nix/store/00000000000000000000000000000000-x"}, 1, "silo login unknown"},
		{[]string{"push", "--to", "mine", "--jobs", "0", "/nix/store/00000000000000000000000000000000-x"}, 2, "--jobs"},
		{[]string{"push", "--to", "mine", "--skip-signed-by", "garbage", "/nix/store/00000000000000000000000000000000-x"}, 2, "--skip-signed-by"},
		{[]string{"push", "--to", "mine", "/tmp/not-a-store-path-" + t.Name()}, 1, "not a store path"},
	}
	for _, tt := range tests {
		code, _, stderr := runSilo(t, env, "", tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.want) {
			t.Errorf("silo %s: exit %d, stderr %q; want exit %d mentioning %q", strings.Join(tt.args, " "), code, stderr, tt.code, tt.want)
		}
	}
}

// TestPushNoSummaryOnPreflightError: a push that fails before it starts
// (here: the cache is unreachable) reports the error, not a summary of
// zero uploads.
func TestPushNoSummaryOnPreflightError(t *testing.T) {
	n := nixtest.Require(t)
	p := n.Build("push-preflight", "echo x > $out")
	code, _, stderr := runSilo(t, nixVars(n), "", "push", "--to", "http://127.0.0.1:1/main", p)
	if code != 1 || !strings.Contains(stderr, "127.0.0.1:1") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	if strings.Contains(stderr, "uploaded 0 paths") {
		t.Errorf("a summary before the pre-flight error:\n%s", stderr)
	}
}
