package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/nixtest"
)

// nixVars is n's environment as a map, for runSilo.
func nixVars(n *nixtest.Nix) map[string]string {
	m := map[string]string{}
	for _, kv := range n.Env() {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// TestUse: silo use writes the substituter, key and netrc lines into a
// scratch system and user Nix configuration; the real Nix, configured by
// nothing else, then substitutes from a private and a public silo cache
// (verifying the signatures with the key written). A second run changes
// nothing.
func TestUse(t *testing.T) {
	n := nixtest.Require(t)
	data := filepath.Join(t.TempDir(), "data")
	runSilo(t, nil, "", "init", "--data-dir", data)
	runSilo(t, nil, "", "cache", "create", "priv", "--data-dir", data)
	runSilo(t, nil, "", "cache", "create", "pub", "--public", "--data-dir", data)
	url, _ := serveInProcess(t, data)
	token := func(args ...string) string {
		_, out, _ := runSilo(t, nil, "", append([]string{"token", "create", "--data-dir", data}, args...)...)
		return strings.TrimSpace(out)
	}
	pusher := token("--cache", "*", "--push")
	pushNetrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(pushNetrc, []byte("machine 127.0.0.1 password "+pusher+"\n"), 0o600)
	privPath := n.Build("use-priv", "echo private > $out")
	pubPath := n.Build("use-pub", "echo public > $out")
	n.Run("nix", "copy", "--to", url+"/priv?compression=zstd", "--option", "netrc-file", pushNetrc, privPath)
	n.Run("nix", "copy", "--to", url+"/pub?compression=zstd", "--option", "netrc-file", pushNetrc, pubPath)

	vars := nixVars(n)
	// The private cache by the name silo login saved, into the system config.
	if code, _, stderr := runSilo(t, vars, token("--cache", "priv", "--pull"), "login", "priv", url+"/priv"); code != 0 {
		t.Fatalf("login: %s", stderr)
	}
	sysConf := filepath.Join(n.ConfDir, "nix.conf")
	code, out, stderr := runSilo(t, vars, "", "use", "priv", "--system")
	if code != 0 {
		t.Fatalf("use priv --system: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"added extra-substituters = " + url + "/priv to " + sysConf, "extra-trusted-public-keys", "added the token for 127.0.0.1 to " + n.Netrc, "systemctl restart nix-daemon"} {
		if !strings.Contains(out, want) {
			t.Errorf("use priv --system output lacks %q:\n%s", want, out)
		}
	}
	realise := func(p string) {
		t.Helper()
		store := t.TempDir()
		if _, err := n.Try("nix-store", "--store", store, "--realise", p); err != nil {
			t.Fatalf("the real Nix configured by silo use cannot substitute %s: %v", p, err)
		}
		if _, err := os.Stat(filepath.Join(store, p)); err != nil {
			t.Fatalf("%s not substituted: %v", p, err)
		}
	}
	realise(privPath)

	before, _ := os.ReadFile(sysConf)
	beforeNetrc, _ := os.ReadFile(n.Netrc)
	code, out, _ = runSilo(t, vars, "", "use", "priv", "--system")
	after, _ := os.ReadFile(sysConf)
	afterNetrc, _ := os.ReadFile(n.Netrc)
	if code != 0 || !strings.Contains(out, "Nothing changed") || string(before) != string(after) || string(beforeNetrc) != string(afterNetrc) {
		t.Errorf("second use changed something (exit %d):\n%s", code, out)
	}

	// The public cache by URL, into the user config: no token needed.
	userConf := filepath.Join(n.Home, ".config", "nix", "nix.conf")
	code, out, stderr = runSilo(t, vars, "", "use", url+"/pub")
	if code != 0 || !strings.Contains(out, "added extra-substituters = "+url+"/pub to "+userConf) || strings.Contains(out, "netrc") || strings.Contains(out, "Nothing changed") {
		t.Fatalf("use URL: exit %d:\n%s%s", code, out, stderr)
	}
	realise(pubPath)

	// A token for the host replacing another is said so.
	other := token("--cache", "priv", "--pull")
	tf := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tf, []byte(other+"\n"), 0o600)
	_, out, _ = runSilo(t, vars, "", "use", url+"/priv", "--system", "--token-file", tf)
	if !strings.Contains(out, "replaced the password for 127.0.0.1") || !strings.Contains(out, "one password per host") {
		t.Errorf("replacing a netrc token:\n%s", out)
	}
	realise(privPath)

	tests := []struct {
		args []string
		want string
	}{
		{[]string{"use", url + "/priv"}, "is private"},
		{[]string{"use", "nope"}, "silo login nope"},
		{[]string{"use", "http://127.0.0.1:1/x"}, "reach silo server"},
		{[]string{"use", url + "/pub", "--public-key", "garbage"}, "--public-key"},
	}
	noLogin := nixVars(n)
	noLogin["XDG_CONFIG_HOME"] = t.TempDir()
	for _, tt := range tests {
		if code, _, stderr := runSilo(t, noLogin, "", tt.args...); code == 0 || !strings.Contains(stderr, tt.want) {
			t.Errorf("silo %s: exit %d, stderr %q, want %q", strings.Join(tt.args, " "), code, stderr, tt.want)
		}
	}
}
