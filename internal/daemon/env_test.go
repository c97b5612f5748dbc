package daemon

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/nixconf"
	"github.com/silo-cache/silo/internal/nixtest"
)

// testStore is a private Nix store (its own store, state, log and conf
// directories) served by silo's daemon in-process, with the real Nix as
// client. Its directories are world-readable so that an unprivileged
// client can use it.
type testStore struct {
	t                                   testing.TB
	n                                   *nixtest.Nix
	root, store, state, log, conf, sock string
	home                                string
	stderr                              *syncBuffer
	stop                                func()
	nonce                               string // makes build's derivations unique; fixed by compareWithNix
	silo                                bool   // served by silo (not the real nix-daemon)
}

// newTestStore makes the directories and nix.conf (the functional tests'
// settings plus extra).
func newTestStore(t testing.TB, extra string) *testStore {
	t.Helper()
	return newTestStoreAt(t, t.TempDir(), extra)
}

func newTestStoreAt(t testing.TB, root, extra string) *testStore {
	t.Helper()
	n := nixtest.Require(t)
	s := &testStore{t: t, n: n, root: root, nonce: nixtest.Nonce(), store: root + "/store", state: root + "/state", log: root + "/log",
		conf: root + "/conf", sock: root + "/sock/socket", home: root + "/home"}
	for _, d := range []string{s.conf, s.home, filepath.Dir(s.sock)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// t.TempDir's parents are 0700; let unprivileged clients through.
	for d := root; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	conf := "experimental-features = nix-command flakes\nsandbox = false\nbuild-users-group =\nsubstituters =\n" +
		"keep-derivations = false\nfsync-metadata = false\ngc-reserved-space = 0\ntrusted-users = root\n" + extra
	if err := os.WriteFile(s.conf+"/nix.conf", []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// env is the environment of a Nix command using this store: through the
// daemon if remote, else directly (local mode).
func (s *testStore) env(remote bool) []string {
	env := append(s.n.Env(), "NIX_STORE_DIR="+s.store, "NIX_STATE_DIR="+s.state, "NIX_LOG_DIR="+s.log,
		"NIX_CONF_DIR="+s.conf, "NIX_DAEMON_SOCKET_PATH="+s.sock, "HOME="+s.home,
		"NIX_USER_CONF_FILES="+s.home+"/nix.conf", "XDG_CACHE_HOME="+s.home+"/.cache", "NIX_CONFIG=")
	if remote {
		return append(env, "NIX_REMOTE=unix://"+s.sock)
	}
	return append(env, "NIX_REMOTE=local")
}

func (s *testStore) lookupEnv() nixconf.LookupEnv {
	m := map[string]string{}
	for _, kv := range s.env(false) {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	delete(m, "NIX_CONFIG")
	delete(m, "NIX_REMOTE")
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// startSilo serves the store with silo's daemon until the test ends.
func (s *testStore) startSilo() {
	s.t.Helper()
	cfg, err := nixconf.Load(s.lookupEnv())
	if err != nil {
		s.t.Fatal(err)
	}
	s.stderr = &syncBuffer{}
	s.silo = true
	srv := New(Options{Config: cfg, Verbosity: worker0Info, Stderr: s.stderr})
	l, err := Listen(s.sock, func(string) string { return "" })
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, l); err != nil {
			s.t.Errorf("Serve: %v", err)
		}
	}()
	s.stop = func() { cancel(); <-done }
	s.t.Cleanup(s.stop)
}

// startNix serves the store with the real nix-daemon (the oracle).
func (s *testStore) startNix() {
	s.t.Helper()
	cmd := exec.Command("nix-daemon") // nixtest:allow: the daemon must see this store's own environment
	cmd.Env = s.env(false)
	s.stderr = &syncBuffer{}
	cmd.Stderr = s.stderr
	// nix-daemon's per-connection children outlive it (setsid) and keep
	// stderr open until their client goes: do not wait for them.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.stop = func() { cmd.Process.Kill(); cmd.Wait() }
	s.t.Cleanup(s.stop)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", s.sock); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("nix-daemon did not start: %s", s.stderr)
		}
	}
}

// command returns a Nix command on this store (through the daemon if remote).
func (s *testStore) command(remote bool, name string, args ...string) *exec.Cmd {
	cmd := s.n.Command(context.Background(), name, args...)
	cmd.Env = s.env(remote)
	return cmd
}

// try runs a Nix command through the daemon, returning stdout and stderr.
func (s *testStore) try(name string, args ...string) (string, string, error) {
	return s.tryCmd(s.command(true, name, args...))
}

func (s *testStore) tryCmd(cmd *exec.Cmd) (string, string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cmd.Stdin == nil {
		cmd.Stdin = strings.NewReader("")
	}
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// run runs a Nix command through the daemon and returns its stdout.
func (s *testStore) run(name string, args ...string) string {
	s.t.Helper()
	return s.runCmd(s.command(true, name, args...))
}

// local runs a Nix command on the store directly (the real Nix in local mode).
func (s *testStore) local(name string, args ...string) string {
	s.t.Helper()
	return s.runCmd(s.command(false, name, args...))
}

func (s *testStore) runCmd(cmd *exec.Cmd) string {
	s.t.Helper()
	out, errOut, err := s.tryCmd(cmd)
	if err != nil {
		s.t.Fatalf("%s: %v\n%s\ndaemon: %s", strings.Join(cmd.Args, " "), err, errOut, s.stderr)
	}
	return out
}

// asNobody makes cmd run as the unprivileged user nobody.
func asNobody(t testing.TB, cmd *exec.Cmd, home string) *exec.Cmd {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("setpriv is missing (util-linux)")
		}
		t.Skip("setpriv is missing")
	}
	args := append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", cmd.Path}, cmd.Args[1:]...)
	c := exec.Command("setpriv", args...)
	c.Env = append(cmd.Env, "HOME="+home, "XDG_CACHE_HOME="+home+"/.cache")
	return c
}

// build builds a derivation in the store with the real Nix in local mode
// (silo does not build yet) and returns its output.
func (s *testStore) build(name, script string, deps ...string) string {
	s.t.Helper()
	var env strings.Builder
	for i, d := range deps {
		fmt.Fprintf(&env, " dep%d = builtins.storePath %q;", i, d)
	}
	expr := fmt.Sprintf(`derivation { name = %q; system = builtins.currentSystem; builder = "/bin/sh"; nonce = %q;%s args = ["-c" %q]; PATH = "/usr/bin:/bin"; }`,
		name, s.nonce, env.String(), script)
	return strings.TrimSpace(s.local("nix-build", "--no-out-link", "-E", expr))
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

const worker0Info = 3

// compareWithNix runs script against silo's daemon, then against the real
// nix-daemon on a fresh store at the same place (so the same paths), and
// reports where their outputs differ.
func compareWithNix(t *testing.T, extra string, script func(s *testStore) []string) (silo, nix []string) {
	t.Helper()
	root := t.TempDir()
	nonce := nixtest.Nonce()
	s := newTestStoreAt(t, root, extra)
	s.nonce = nonce
	s.startSilo()
	silo = script(s)
	s.stop()
	os.RemoveAll(root)
	os.MkdirAll(root, 0o755)
	n := newTestStoreAt(t, root, extra)
	n.nonce = nonce
	n.startNix()
	nix = script(n)
	n.stop()
	if diff := cmp.Diff(nix, silo); diff != "" {
		t.Errorf("silo daemon and nix-daemon answer differently (-nix +silo):\n%s", diff)
	}
	return silo, nix
}
