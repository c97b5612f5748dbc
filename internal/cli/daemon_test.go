package cli

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixtest"
)

func runNixDaemon(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Argv0: "/some/bin/nix-daemon",
		Getenv: func(k string) string { return vars[k] }}
	code := Main(context.Background(), args, env)
	return code, out.String(), errb.String()
}

// TestNixDaemonCommandLine checks the nix-daemon personality's command
// line against what nix-daemon 2.8.0 prints.
func TestNixDaemonCommandLine(t *testing.T) {
	conf := t.TempDir()
	vars := map[string]string{"NIX_CONF_DIR": conf, "HOME": conf, "NIX_STORE_DIR": "/s", "NIX_STATE_DIR": "/st",
		"NIX_USER_CONF_FILES": conf + "/u.conf"}
	tests := []struct {
		args            []string
		code            int
		stdout, stderr  string
		stdoutHasPrefix bool
	}{
		{[]string{"--version"}, 0, "nix-daemon (Nix) 2.8.0\n", "", false},
		{[]string{"--daemon", "--keep-outputs", "--no-sandbox", "--option", "cores", "3", "--version"}, 0, "nix-daemon (Nix) 2.8.0\n", "", false},
		{[]string{"-v", "--version"}, 0, "nix-daemon (Nix) 2.8.0\nSystem type: ", "", true},
		{[]string{"--bogus"}, 1, "", "error: unrecognised flag '--bogus'\nTry 'nix-daemon --help' for more information.\n", false},
		{[]string{"foo"}, 1, "", "error: unexpected argument 'foo'\nTry 'nix-daemon --help' for more information.\n", false},
		{[]string{"--option"}, 1, "", "error: flag '--option' requires 2 argument(s)\nTry 'nix-daemon --help' for more information.\n", false},
		{[]string{"--option", "cores", "x", "--version"}, 0, "nix-daemon (Nix) 2.8.0\n", "warning: error: setting 'cores' has invalid value 'x'\n", false},
		{[]string{"--cores", "x"}, 1, "", "error: invalid unit specifier 'X'\nTry 'nix-daemon --help' for more information.\n", false},
		{[]string{"--keep-outputs", "maybe"}, 1, "", "error: unexpected argument 'maybe'\nTry 'nix-daemon --help' for more information.\n", false},
		{[]string{"--sandbox-paths"}, 1, "", "error: flag '--sandbox-paths' requires 1 argument(s)\nTry 'nix-daemon --help' for more information.\n", false},
		{[]string{"--help"}, 0, "Usage: nix-daemon", "", true},
	}
	for _, tt := range tests {
		code, stdout, stderr := runNixDaemon(t, vars, tt.args...)
		okOut := stdout == tt.stdout || (tt.stdoutHasPrefix && strings.HasPrefix(stdout, tt.stdout))
		if code != tt.code || !okOut || stderr != tt.stderr {
			t.Errorf("nix-daemon %s: code %d, stdout %q, stderr %q; want %d, %q, %q", strings.Join(tt.args, " "), code, stdout, stderr, tt.code, tt.stdout, tt.stderr)
		}
	}
	code, stdout, _ := runNixDaemon(t, vars, "-vv", "--version")
	if code != 0 || !strings.Contains(stdout, "Store directory: /s\nState directory: /st\n") {
		t.Errorf("-vv --version: %d %q", code, stdout)
	}
}

// daemonFixture is a private store for the silo binary.
type daemonFixture struct {
	n                              *nixtest.Nix
	root, store, state, conf, sock string
	bin                            string
}

func newDaemonFixture(t *testing.T, silo string) *daemonFixture {
	n := nixtest.Require(t)
	root := t.TempDir()
	f := &daemonFixture{n: n, root: root, store: root + "/store", state: root + "/state", conf: root + "/conf", sock: root + "/sock"}
	os.MkdirAll(f.conf, 0o755)
	os.WriteFile(f.conf+"/nix.conf", []byte("experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nfsync-metadata = false\n"), 0o644)
	f.bin = filepath.Join(filepath.Dir(silo), "nix-daemon")
	if _, err := os.Lstat(f.bin); err != nil {
		if err := os.Symlink(silo, f.bin); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *daemonFixture) env() []string {
	return append(f.n.Env(), "NIX_STORE_DIR="+f.store, "NIX_STATE_DIR="+f.state, "NIX_LOG_DIR="+f.root+"/log",
		"NIX_CONF_DIR="+f.conf, "NIX_DAEMON_SOCKET_PATH="+f.sock, "HOME="+f.root, "NIX_USER_CONF_FILES=", "NIX_CONFIG=")
}

func (f *daemonFixture) nix(t *testing.T, remote string, args ...string) string {
	t.Helper()
	cmd := f.n.Command(context.Background(), args[0], args[1:]...)
	cmd.Env = append(f.env(), "NIX_REMOTE="+remote)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out) + stderr.String())
}

func waitSocket(t *testing.T, sock string) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no daemon on %s", sock)
		}
	}
}

// TestDaemonBinary runs the silo binary as a daemon process.
func TestDaemonBinary(t *testing.T) {
	nixtest.Require(t)
	silo := nixtest.SiloBinary(t)
	t.Run("nix-daemon", func(t *testing.T) { testNixDaemonProcess(t, silo) })
	t.Run("socket activation", func(t *testing.T) { testSocketActivation(t, silo) })
	t.Run("stdio", func(t *testing.T) { testStdio(t, silo) })
}

// testNixDaemonProcess runs the binary as nix-daemon: it serves the real
// client, re-creates a store deleted under it, and exits on SIGINT.
func testNixDaemonProcess(t *testing.T, silo string) {
	f := newDaemonFixture(t, silo)
	cmd := exec.Command(f.bin, "--daemon")
	cmd.Env = f.env()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitSocket(t, f.sock)
	if fi, err := os.Stat(f.sock); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
	file := filepath.Join(f.root, "hello")
	os.WriteFile(file, []byte("hello\n"), 0o644)
	p := f.nix(t, "daemon", "nix-store", "--add", file)
	if ping := f.nix(t, "daemon", "nix", "store", "ping"); !strings.Contains(ping, "Version: 2.8.0") {
		t.Errorf("nix store ping: %q", ping)
	}
	// The tests of Nix delete the store and state under a running daemon.
	exec.Command("chmod", "-R", "u+w", f.store).Run()
	os.RemoveAll(f.store)
	os.RemoveAll(f.state)
	if p2 := f.nix(t, "daemon", "nix-store", "--add", file); p2 != p {
		t.Errorf("after rm -rf: added %s, want %s", p2, p)
	}
	if _, err := os.Stat(f.state + "/db/db.sqlite"); err != nil {
		t.Errorf("database not re-created: %v", err)
	}
	cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("nix-daemon did not exit on SIGINT: %s", stderr.String())
	}
}

// testSocketActivation passes the daemon its socket as systemd does.
func testSocketActivation(t *testing.T, silo string) {
	f := newDaemonFixture(t, silo)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: f.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	// LISTEN_PID must be the daemon's own pid: sh sets it, then execs.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" daemon`, filepath.Join(filepath.Dir(f.bin), "silo"))
	cmd.Env = f.env()
	cmd.ExtraFiles = []*os.File{lf}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	file := filepath.Join(f.root, "activated")
	os.WriteFile(file, []byte("activated\n"), 0o644)
	if p := f.nix(t, "unix://"+f.sock, "nix-store", "--add", file); !strings.HasPrefix(p, f.store+"/") {
		t.Errorf("added %q: %s", p, stderr.String())
	}
	if testing.Verbose() {
		t.Log(stderr.String())
	}
	// A wrong LISTEN_PID is refused, as Nix.
	bad := exec.Command(filepath.Join(filepath.Dir(f.bin), "silo"), "daemon")
	bad.Env = append(f.env(), "LISTEN_FDS=1", "LISTEN_PID=1")
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "unexpected systemd environment variables") {
		t.Errorf("wrong LISTEN_PID: %v %s", err, out)
	}
}

// testStdio serves the real client over ssh-ng:// (Nix runs "localhost"
// without ssh) with nix-daemon --stdio as the remote program.
func testStdio(t *testing.T, silo string) {
	f := newDaemonFixture(t, silo)
	file := filepath.Join(f.root, "over-stdio")
	os.WriteFile(file, []byte("over stdio\n"), 0o644)
	remote := "ssh-ng://localhost?remote-program=" + f.bin
	p := f.nix(t, "local", "nix", "store", "add-file", "--store", remote, file)
	if !strings.HasPrefix(p, f.store+"/") {
		t.Fatalf("added %q", p)
	}
	if info := f.nix(t, "local", "nix", "path-info", "--json", "--store", remote, p); !strings.Contains(info, `"ca":"fixed:sha256:`) {
		t.Errorf("path-info over ssh-ng: %s", info)
	}
	// The NAR comes back over the protocol (NarFromPath).
	if got := f.nix(t, "local", "nix", "store", "cat", "--store", remote, p); got != "over stdio" {
		t.Errorf("nix store cat over ssh-ng: %q", got)
	}

	// With --store naming a daemon, --stdio relays to it.
	d := exec.Command(f.bin)
	d.Env = f.env()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { d.Process.Kill(); d.Wait() }()
	waitSocket(t, f.sock)
	relayed := remote + "&remote-store=unix://" + f.sock
	if info := f.nix(t, "local", "nix", "path-info", "--store", relayed, p); info != p {
		t.Errorf("path-info relayed to the daemon: %q", info)
	}
	file2 := filepath.Join(f.root, "relayed")
	os.WriteFile(file2, []byte("relayed\n"), 0o644)
	if p2 := f.nix(t, "local", "nix", "store", "add-file", "--store", relayed, file2); !strings.HasPrefix(p2, f.store+"/") {
		t.Errorf("add-file relayed: %q", p2)
	}
}
