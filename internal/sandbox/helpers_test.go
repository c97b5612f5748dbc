package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/storepath"
)

// TestMain lets the test binary serve as the sandbox's init step and as a
// probe builder, as the silo binary does through cli.Main.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == InitCommand {
		Init(os.Args[2:])
	}
	if len(os.Args) > 1 && os.Args[0] == "probe" {
		os.Exit(probe(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// requireRoot skips (or under CI fails) tests that need root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but sandbox tests need root")
		}
		t.Skip("sandbox tests need root")
	}
}

// hostPaths make /bin/sh (and bash, coreutils) work in the sandbox, as
// gen.sh's sandbox-paths do for the real Nix.
var hostPaths = ParsePaths([]string{"/bin", "/lib", "/lib64?", "/usr"})

type testEnv struct {
	t     testing.TB
	base  string // world-traversable temporary directory
	store string // the real store directory; builders see it as /nix/store
	dir   storepath.Dir
	n     int
	mu    sync.Mutex
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	requireRoot(t)
	base, err := os.MkdirTemp("", "silo-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("chmod", "-R", "u+w", base).Run()
		os.RemoveAll(base)
	})
	os.Chmod(base, 0o755)
	store := filepath.Join(base, "store")
	if err := os.Mkdir(store, 0o755); err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, base: base, store: store, dir: storepath.DefaultDir}
}

// storePath returns a fresh store path name (not created).
func (e *testEnv) storePath(name string) string {
	e.mu.Lock()
	e.n++
	n := e.n
	e.mu.Unlock()
	h := hash.Sum(hash.SHA256, fmt.Appendf(nil, "%s %d %s", e.base, n, name))
	return "/nix/store/" + nix32.Encode(h.Bytes()[:20]) + "-" + name
}

// real returns where store path p is on the host.
func (e *testEnv) real(p string) string { return filepath.Join(e.store, filepath.Base(p)) }

// addDir creates a read-only input directory holding files.
func (e *testEnv) addDir(name string, files map[string]string) string {
	p := e.storePath(name)
	dir := e.real(p)
	if err := os.Mkdir(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o444); err != nil {
			e.t.Fatal(err)
		}
	}
	os.Chmod(dir, 0o555)
	return p
}

// addFile creates a read-only input file.
func (e *testEnv) addFile(name, content string) string {
	p := e.storePath(name)
	if err := os.WriteFile(e.real(p), []byte(content), 0o444); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// buildDir creates a build directory owned by u (or root).
func (e *testEnv) buildDir(u *User) string {
	d, err := os.MkdirTemp(e.base, "build-")
	if err != nil {
		e.t.Fatal(err)
	}
	if u != nil {
		os.Chown(d, u.UID, u.GID)
	}
	return d
}

// spec returns a sandboxed /bin/sh build of script with output $out.
func (e *testEnv) spec(u *User, script string) (Spec, string) {
	out := e.storePath("out")
	name := filepath.Base(e.storePath("probe.drv"))
	return Spec{
		Name: name, Builder: "/bin/sh", Args: []string{"-c", script},
		Env:      []string{"PATH=/bin:/usr/bin", "out=" + out, "HOME=/homeless-shelter", "NIX_BUILD_TOP=/build"},
		BuildDir: e.buildDir(u), Sandboxed: true, StoreDir: e.dir, RealStoreDir: e.store,
		Paths: hostPaths, Outputs: []string{out}, User: u,
	}, out
}

// run runs s and returns the result and the log.
func (e *testEnv) run(s Spec) (Result, string) {
	e.t.Helper()
	var log bytes.Buffer
	var mu sync.Mutex
	s.Log = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return log.Write(p) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, s)
	if err != nil {
		e.t.Fatalf("Run: %v\nlog: %s", err, log.String())
	}
	mu.Lock()
	defer mu.Unlock()
	return res, log.String()
}

// mustRun runs s and fails unless the builder succeeds.
func (e *testEnv) mustRun(s Spec) string {
	e.t.Helper()
	res, log := e.run(s)
	if !res.Success() {
		e.t.Fatalf("build failed: %+v\nlog: %s", res, log)
	}
	return log
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// newPool creates a build-users group with n members (removed when the
// test ends) and returns a Pool for it.
func newPool(t testing.TB, e *testEnv, n int) *Pool {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	group := "silot" + hex.EncodeToString(b)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("groupadd", "-r", group)
	var users []string
	t.Cleanup(func() {
		for _, u := range users {
			KillUser(context.Background(), lookupUID(u))
			exec.Command("userdel", u).Run()
		}
		exec.Command("groupdel", group).Run()
	})
	for i := range n {
		u := fmt.Sprintf("%s-%d", group, i)
		run("useradd", "-r", "-M", "-N", "-g", "nogroup", "-G", group, "-s", "/usr/sbin/nologin", "-d", "/var/empty", u)
		users = append(users, u)
	}
	state := filepath.Join(e.base, "state")
	os.MkdirAll(state, 0o755)
	return &Pool{Group: group, StateDir: state, Poll: 50 * time.Millisecond}
}

func lookupUID(name string) int {
	pw, err := lookupUser("/etc/passwd", name)
	if err != nil {
		return -1
	}
	return pw.uid
}

func acquire(t testing.TB, p *Pool) *User {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u, err := p.Acquire(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Release() })
	return u
}

// livingProcessesOf lists the processes of uid that are not zombies,
// giving the killed ones a moment to be reaped by their new parent.
func livingProcessesOf(uid int) []string {
	var ps []string
	for range 40 {
		if ps = processesOf(uid); len(ps) == 0 {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return ps
}

// processesOf lists the pids of non-zombie processes running as uid.
func processesOf(uid int) []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		if ent.Name()[0] < '0' || ent.Name()[0] > '9' {
			continue
		}
		st, err := os.ReadFile("/proc/" + ent.Name() + "/status")
		if err != nil {
			continue
		}
		zombie, mine := false, false
		for _, l := range strings.Split(string(st), "\n") {
			f := strings.Fields(l)
			if len(f) > 1 && f[0] == "Uid:" && f[1] == fmt.Sprint(uid) {
				mine = true
			}
			if len(f) > 1 && f[0] == "State:" && (f[1] == "Z" || f[1] == "X") {
				zombie = true
			}
		}
		if mine && !zombie {
			pids = append(pids, ent.Name()+" "+cmdline(ent.Name()))
		}
	}
	return pids
}

func cmdline(pid string) string {
	b, _ := os.ReadFile("/proc/" + pid + "/cmdline")
	return strings.ReplaceAll(string(b), "\x00", " ")
}
