package nixtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// machine is a fake machine-wide Nix configuration of the kind that used
// to leak into tests: a netrc entry for 127.0.0.1 (as silo cache info tells
// users to write) and a post-build-hook, in every place Nix looks: the
// system conf dir, the user's ~/.config/nix, XDG_CONFIG_DIRS, NIX_CONFIG,
// ~/.netrc and $NETRC. It is planted in directories the test owns and
// made "the machine's" through the test process's environment: the real
// /etc/nix is never touched.
type machine struct {
	dir, hookRan, secret string
}

func plantMachine(t *testing.T) *machine {
	t.Helper()
	m := &machine{dir: t.TempDir(), secret: "silo_machinesec_leaked"}
	m.hookRan = filepath.Join(m.dir, "hook-ran")
	hook := filepath.Join(m.dir, "hook")
	write := func(name, data string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(m.dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("hook", "#!/bin/sh\necho \"$OUT_PATHS\" >> "+m.hookRan+"\n", 0o755)
	netrc := write("etc-nix/netrc", "machine 127.0.0.1 password "+m.secret+"\n", 0o600)
	conf := "experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n" +
		"post-build-hook = " + hook + "\nnetrc-file = " + netrc + "\n"
	write("etc-nix/nix.conf", conf, 0o644)
	write("home/.config/nix/nix.conf", "post-build-hook = "+hook+"\nnetrc-file = "+netrc+"\n", 0o644)
	write("xdg/nix/nix.conf", "post-build-hook = "+hook+"\n", 0o644)
	write("home/.netrc", "machine 127.0.0.1 password "+m.secret+"\n", 0o600)

	t.Setenv("NIX_CONF_DIR", filepath.Join(m.dir, "etc-nix"))
	t.Setenv("HOME", filepath.Join(m.dir, "home"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(m.dir, "home", ".config"))
	t.Setenv("XDG_CONFIG_DIRS", filepath.Join(m.dir, "xdg"))
	t.Setenv("NIX_USER_CONF_FILES", filepath.Join(m.dir, "home", ".config", "nix", "nix.conf"))
	t.Setenv("NETRC", netrc)
	t.Setenv("NIX_CONFIG", "post-build-hook = "+hook+"\nnetrc-file = "+netrc)
	return m
}

// authRecorder is a binary cache that has nothing and records the
// credentials each request presents.
func authRecorder(t *testing.T) (url string, seen func() []string) {
	var mu sync.Mutex
	var auths []string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.URL.Path == "/nix-cache-info" {
			fmt.Fprint(w, "StoreDir: /nix/store\n")
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.URL, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), auths...)
	}
}

func leakedSecret(auths []string, secret string) bool {
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(":"+secret))
	for _, a := range auths {
		if a == want {
			return true
		}
	}
	return false
}

// TestMachineConfigIgnored plants a machine-wide netrc and post-build-hook
// and shows that they work for a Nix run in the test process's own
// environment (the control: the planted config is real), and that a Nix
// run through this package sees none of them: no hook runs after its
// builds, no credentials go to 127.0.0.1, and its configuration comes from
// its own NIX_CONF_DIR, not the machine's (nor /etc/nix).
func TestMachineConfigIgnored(t *testing.T) {
	Require(t)
	m := plantMachine(t)
	url, seen := authRecorder(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Control: Nix with the "machine's" environment runs the hook and
	// sends the netrc password.
	expr := fmt.Sprintf(`derivation { name = "leak-control"; system = builtins.currentSystem; builder = "/bin/sh"; nonce = %q; args = ["-c" "echo x > $out"]; }`, Nonce())
	ambient := exec.CommandContext(ctx, "nix", "build", "--no-link", "--impure", "--expr", expr)
	ambient.Env = append(os.Environ(), "XDG_CACHE_HOME="+t.TempDir())
	if out, err := ambient.CombinedOutput(); err != nil {
		t.Fatalf("control build with the planted machine config: %v\n%s", err, out)
	}
	if _, err := os.Stat(m.hookRan); err != nil {
		t.Fatalf("control: the planted post-build-hook did not run (%v), so this test proves nothing", err)
	}
	ping := exec.CommandContext(ctx, "nix", "store", "ping", "--store", url)
	ping.Env = append(os.Environ(), "XDG_CACHE_HOME="+t.TempDir())
	if out, err := ping.CombinedOutput(); err != nil {
		t.Fatalf("control: nix store ping: %v\n%s", err, out)
	}
	if !leakedSecret(seen(), m.secret) {
		t.Fatalf("control: Nix did not send the planted netrc password (saw %q), so this test proves nothing", seen())
	}
	os.Remove(m.hookRan)

	// The same with this package's environment: nothing leaks.
	n := Require(t)
	before := len(seen())
	out := n.Build("leak-probe", "echo y > $out")
	if data, err := os.ReadFile(m.hookRan); err == nil {
		t.Errorf("the machine's post-build-hook ran for a test build (%s): %s", out, data)
	}
	n.Run("nix", "store", "ping", "--store", url)
	if got := seen()[before:]; leakedSecret(got, m.secret) || len(got) == 0 {
		t.Errorf("credentials sent by a test's Nix: %q (want requests without the machine's password)", got)
	}
	cfg := n.Run("nix", "show-config")
	for _, line := range strings.Split(cfg, "\n") {
		k, v, _ := strings.Cut(line, " = ")
		switch k {
		case "post-build-hook":
			if v != "" {
				t.Errorf("show-config: post-build-hook = %q, want empty", v)
			}
		case "netrc-file":
			if v != n.Netrc {
				t.Errorf("show-config: netrc-file = %q, want the test's own %q", v, n.Netrc)
			}
		}
	}
	if strings.Contains(cfg, m.dir) {
		t.Errorf("show-config mentions the machine's config directory %s:\n%s", m.dir, cfg)
	}
	for _, kv := range n.Env() {
		if strings.Contains(kv, m.dir) {
			t.Errorf("Env() carries %s from the test process", kv)
		}
	}
}

// withEtcNix returns cmd run in a private mount namespace in which
// etcNix is bind-mounted over /etc/nix: the machine's /etc/nix as Nix
// sees it, for this command only. The real /etc/nix is never changed.
func withEtcNix(t *testing.T, cmd *exec.Cmd, etcNix string) *exec.Cmd {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare (util-linux) is needed to plant an /etc/nix: %v", err)
	}
	args := append([]string{unshare, "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$0" /etc/nix && exec "$@"`, etcNix}, cmd.Args...)
	if p, err := exec.LookPath(cmd.Args[0]); err == nil {
		args[len(args)-len(cmd.Args)] = p
	}
	cmd.Path, cmd.Args = unshare, args
	return cmd
}

// TestEtcNixIgnored plants the netrc and post-build-hook in /etc/nix
// itself, bind-mounted in a private mount namespace for the commands of
// this test only, and shows that the machine's Nix uses them while a Nix
// run through this package does not.
func TestEtcNixIgnored(t *testing.T) {
	n := Require(t)
	m := plantMachine(t)
	etcNix := filepath.Join(m.dir, "etc-nix")
	for _, k := range []string{"NIX_CONF_DIR", "HOME", "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "NIX_USER_CONF_FILES", "NETRC", "NIX_CONFIG"} {
		os.Unsetenv(k) // only /etc/nix carries the machine's config here (t.Setenv restores them)
	}
	url, seen := authRecorder(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	expr := func(name string) string {
		return fmt.Sprintf(`derivation { name = %q; system = builtins.currentSystem; builder = "/bin/sh"; nonce = %q; args = ["-c" "echo x > $out"]; }`, name, Nonce())
	}
	run := func(cmd *exec.Cmd) {
		t.Helper()
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := withEtcNix(t, cmd, etcNix).Run(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out.String())
		}
	}

	// Control: the machine's Nix (no NIX_CONF_DIR) reads the planted /etc/nix.
	home := t.TempDir()
	machineEnv := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "XDG_CACHE_HOME=" + filepath.Join(home, ".cache")}
	build := exec.CommandContext(ctx, "nix", "build", "--no-link", "--impure", "--expr", expr("etc-control"))
	build.Env = machineEnv
	run(build)
	if _, err := os.Stat(m.hookRan); err != nil {
		t.Fatalf("control: the post-build-hook planted in /etc/nix did not run (%v), so this test proves nothing", err)
	}
	ping := exec.CommandContext(ctx, "nix", "store", "ping", "--store", url)
	ping.Env = machineEnv
	run(ping)
	if !leakedSecret(seen(), m.secret) {
		t.Fatalf("control: Nix did not send the netrc password planted in /etc/nix (saw %q)", seen())
	}
	os.Remove(m.hookRan)

	// This package's Nix, under the same /etc/nix.
	before := len(seen())
	run(n.Command(ctx, "nix", "build", "--no-link", "--impure", "--expr", expr("etc-probe")))
	if data, err := os.ReadFile(m.hookRan); err == nil {
		t.Errorf("the post-build-hook in /etc/nix ran for a test build: %s", data)
	}
	run(n.Command(ctx, "nix", "store", "ping", "--store", url))
	if got := seen()[before:]; leakedSecret(got, m.secret) || len(got) == 0 {
		t.Errorf("credentials sent by a test's Nix under the planted /etc/nix: %q", got)
	}
}

// TestDaemonIgnoresMachineConfig: a nix-daemon started by StartDaemon
// reads the test's conf dir too, so builds through it run no machine hook.
func TestDaemonIgnoresMachineConfig(t *testing.T) {
	Require(t)
	m := plantMachine(t)
	n := Require(t)
	sock := n.StartDaemon()
	expr := fmt.Sprintf(`derivation { name = "leak-daemon"; system = builtins.currentSystem; builder = "/bin/sh"; nonce = %q; args = ["-c" "echo z > $out"]; }`, Nonce())
	n.Run("nix", "build", "--no-link", "--impure", "--store", "unix://"+sock, "--expr", expr)
	if data, err := os.ReadFile(m.hookRan); err == nil {
		t.Errorf("the machine's post-build-hook ran in a test's nix-daemon: %s", data)
	}
}

// nixProgram matches a test starting a Nix program itself, which would
// give it the machine's environment instead of Env's.
var nixProgram = regexp.MustCompile(`exec\.Command(Context)?\((ctx, |context\.[A-Za-z]+\(\), )?"(/usr/bin/)?nix(-[a-z-]+)?"`)

// TestNoTestRunsNixDirectly keeps every test on this package's
// environment: a test file elsewhere that execs a Nix program directly
// fails here (mark a deliberate exception with "nixtest:allow" on the line).
func TestNoTestRunsNixDirectly(t *testing.T) {
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") || filepath.Base(filepath.Dir(path)) == "nixtest" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range bytes.Split(data, []byte("\n")) {
			if nixProgram.Match(line) && !bytes.Contains(line, []byte("nixtest:allow")) {
				t.Errorf("%s:%d runs a Nix program directly; use nixtest.Nix (Command, Run, Try) so it gets the test's own configuration", path, i+1)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The pattern itself must catch what it is for.
	for _, bad := range []string{`exec.Command("nix", "copy")`, `exec.CommandContext(ctx, "nix-store", "--dump")`, `exec.Command("/usr/bin/nix-daemon")`} {
		if !nixProgram.MatchString(bad) {
			t.Errorf("pattern misses %s", bad)
		}
	}
}
