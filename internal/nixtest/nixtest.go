// Package nixtest runs the real Nix (Debian's nix-bin, Nix 2.8) from tests.
// It also builds the silo binary for tests that run it as a real process.
//
// Require skips a test when Nix is missing on a developer machine, and fails
// it when CI is set: in CI the test command installs Nix, so a missing Nix
// there is a broken setup, not a reason to skip.
package nixtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Config is the nix.conf every test run uses: no sandbox, no build users,
// no substituters, and no narinfo caching so that recreated caches are not
// answered from stale entries. It is written to the test's own
// NIX_CONF_DIR, so it is the system configuration Nix sees.
const Config = "experimental-features = nix-command\n" +
	"sandbox = false\n" +
	"build-users-group =\n" +
	"substituters =\n" +
	"narinfo-cache-positive-ttl = 0\n" +
	"narinfo-cache-negative-ttl = 0\n"

// Nix runs the real Nix hermetically: with a configuration directory,
// netrc file, HOME and XDG directories of the test's own, and an
// environment built from nothing but PATH. Nothing of the machine's Nix
// configuration (/etc/nix, /etc/xdg/nix, ~/.config/nix, ~/.netrc,
// NIX_CONFIG, NIX_REMOTE, ...) reaches a command it runs, so a machine's
// netrc or post-build-hook never leaks into a test.
type Nix struct {
	t testing.TB
	// Home is the commands' HOME; XDG_CONFIG_HOME, XDG_CACHE_HOME,
	// XDG_STATE_HOME and XDG_DATA_HOME lie below it.
	Home string
	// ConfDir is NIX_CONF_DIR: its nix.conf holds Config. A test may add
	// lines to it (nix-daemon reads it at start).
	ConfDir string
	// Netrc is the netrc file Nix uses by default (ConfDir/netrc, empty).
	Netrc string
	// Extra is given to every command as NIX_CONFIG, after Config.
	Extra string
}

// Available reports whether the real Nix is installed.
func Available() bool {
	_, err := exec.LookPath("nix")
	return err == nil
}

// Require returns a Nix for t, skipping (or, under CI, failing) when the
// real Nix is not installed or the test is not running as root.
func Require(t testing.TB) *Nix {
	t.Helper()
	missing := ""
	if !Available() {
		missing = "the real Nix is not installed (apt-get install -y nix-bin, or run ./test.sh)"
	} else if os.Geteuid() != 0 {
		missing = "tests with the real Nix need root (Nix uses /nix/store directly)"
	}
	if missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %s", missing)
		}
		t.Skip(missing)
	}
	return newNix(t)
}

func newNix(t testing.TB) *Nix {
	t.Helper()
	home := t.TempDir()
	conf := filepath.Join(home, "etc-nix")
	n := &Nix{t: t, Home: home, ConfDir: conf, Netrc: filepath.Join(conf, "netrc")}
	for _, d := range []string{conf, filepath.Join(home, ".config", "nix"), filepath.Join(home, ".cache")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(conf, "nix.conf"): Config + "netrc-file = " + n.Netrc + "\n",
		n.Netrc:                         "",
	}
	for name, data := range files {
		if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// Env returns the environment for a Nix command (or a silo process that
// must see the same configuration): built from nothing, with only PATH
// taken from the test process.
func (n *Nix) Env() []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + n.Home,
		"NIX_CONF_DIR=" + n.ConfDir,
		// Nix reads these instead of ~/.config/nix/nix.conf and /etc/xdg/nix/nix.conf.
		"NIX_USER_CONF_FILES=" + filepath.Join(n.Home, ".config", "nix", "nix.conf"),
		"XDG_CONFIG_HOME=" + filepath.Join(n.Home, ".config"),
		"XDG_CONFIG_DIRS=" + filepath.Join(n.Home, ".config-dirs"),
		"XDG_CACHE_HOME=" + filepath.Join(n.Home, ".cache"),
		"XDG_STATE_HOME=" + filepath.Join(n.Home, ".local", "state"),
		"XDG_DATA_HOME=" + filepath.Join(n.Home, ".local", "share"),
		"NETRC=" + n.Netrc,
	}
	if n.Extra != "" {
		env = append(env, "NIX_CONFIG="+n.Extra)
	}
	return env
}

// Command returns an exec.Cmd running a Nix program in n's environment.
func (n *Nix) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = n.Env()
	return cmd
}

// Run runs a Nix program and returns its stdout; it fails the test,
// showing stderr, if the program fails.
func (n *Nix) Run(name string, args ...string) string {
	n.t.Helper()
	out, err := n.Try(name, args...)
	if err != nil {
		n.t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// Try runs a Nix program and returns its stdout, or an error that includes stderr.
func (n *Nix) Try(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := n.Command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\n%s", err, stderr.String())
	}
	return stdout.String(), nil
}

// Nonce returns a random string to make a derivation unique to one test run.
func Nonce() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Build builds a derivation into /nix/store whose builder is /bin/sh running
// script (with $out set), and returns the output path. The derivation gets a
// random nonce, so every call builds a fresh, input-addressed path. deps are
// store paths made available to the script as $dep0, $dep1, ... which makes
// them references if the script writes them into $out.
func (n *Nix) Build(name, script string, deps ...string) string {
	n.t.Helper()
	var env strings.Builder
	for i, d := range deps {
		fmt.Fprintf(&env, " dep%d = builtins.storePath %q;", i, d)
	}
	expr := fmt.Sprintf(`derivation { name = %q; system = builtins.currentSystem; builder = "/bin/sh"; nonce = %q;%s args = ["-c" %q]; }`,
		name, Nonce(), env.String(), script)
	out := n.Run("nix", "build", "--json", "--no-link", "--impure", "--expr", expr)
	var res []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 {
		n.t.Fatalf("nix build: unexpected output %q: %v", out, err)
	}
	return res[0].Outputs["out"]
}

// StartDaemon starts the real nix-daemon on a private socket and returns
// the socket path. The daemon is killed when the test ends.
func (n *Nix) StartDaemon() string {
	n.t.Helper()
	sock := filepath.Join(n.t.TempDir(), "daemon.sock")
	cmd := exec.Command("nix-daemon")
	cmd.Env = append(n.Env(), "NIX_DAEMON_SOCKET_PATH="+sock)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start nix-daemon: %v", err)
	}
	n.t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// The socket file appears at bind(), before listen(): wait until a
	// connection is accepted, not just for the file.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("nix-daemon did not create %s within 10s: %s", sock, stderr.String())
		}
	}
}

// SiloBinary builds cmd/silo into a temporary directory and returns its
// path, for tests that run silo as a real process beside the real Nix.
func SiloBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "silo")
	build := exec.Command("go", "build", "-o", bin, "github.com/silo-cache/silo/cmd/silo")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
