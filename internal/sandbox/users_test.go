package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTwoBuildsTwoUsers(t *testing.T) {
	e := newEnv(t)
	p := newPool(t, e, 2)
	u1, u2 := acquire(t, p), acquire(t, p)
	if u1.UID == u2.UID {
		t.Fatalf("two acquisitions got the same user %d", u1.UID)
	}
	for _, u := range []*User{u1, u2} {
		lock := filepath.Join(p.StateDir, "userpool", strconv.Itoa(u.UID))
		if st, err := os.Stat(lock); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("lock file %s: %v %v", lock, st, err)
		}
	}
	// Both build at once, each as its own user, in the sandbox and out
	// (where the store is writable by the group, as Nix keeps it).
	os.Chown(e.store, 0, u1.GID)
	os.Chmod(e.store, 0o775|os.ModeSticky)
	var wg sync.WaitGroup
	uids := make([]string, 2)
	for i, u := range []*User{u1, u2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, out := e.spec(u, `sleep 0.3; mkdir $out; echo hi > $out/f`)
			if i == 1 {
				s.Sandboxed = false
				s.Env = append(s.Env, "out="+e.real(out))
			}
			e.mustRun(s)
			var st syscall.Stat_t
			if err := syscall.Stat(e.real(out)+"/f", &st); err != nil {
				t.Error(err)
				return
			}
			uids[i] = strconv.Itoa(int(st.Uid))
		}()
	}
	wg.Wait()
	if uids[0] != strconv.Itoa(u1.UID) || uids[1] != strconv.Itoa(u2.UID) {
		t.Errorf("outputs owned by %v, want %d and %d", uids, u1.UID, u2.UID)
	}
}

func TestPoolWaitsForAFreeUser(t *testing.T) {
	e := newEnv(t)
	p := newPool(t, e, 1)
	u := acquire(t, p)
	ctx := context.Background()
	if _, err := p.TryAcquire(ctx); !errors.Is(err, ErrNoFreeUser) {
		t.Fatalf("TryAcquire with all users busy: %v", err)
	}
	waited := make(chan struct{})
	got := make(chan *User)
	go func() {
		v, err := p.Acquire(ctx, func() { close(waited) })
		if err != nil {
			t.Error(err)
		}
		got <- v
	}()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("Acquire did not report waiting")
	}
	select {
	case v := <-got:
		t.Fatalf("Acquire returned %v while the only user was busy", v)
	case <-time.After(200 * time.Millisecond):
	}
	u.Release()
	select {
	case v := <-got:
		if v == nil || v.UID != u.UID {
			t.Fatalf("Acquire after release = %+v", v)
		}
		v.Release()
	case <-time.After(10 * time.Second):
		t.Fatal("Acquire did not return after the user was released")
	}
	// A lock held by another process (as nix-daemon holds it) also counts.
	lock := filepath.Join(p.StateDir, "userpool", strconv.Itoa(u.UID))
	cmd := exec.Command("flock", "-x", lock, "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		v, err := p.TryAcquire(ctx)
		if errors.Is(err, ErrNoFreeUser) {
			break
		}
		if v != nil {
			v.Release()
		}
		if time.Now().After(deadline) {
			t.Fatal("a user locked by another process was handed out")
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := p.Acquire(cctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire with a deadline: %v", err)
	}
}

func TestAcquireKillsLeftovers(t *testing.T) {
	e := newEnv(t)
	p := newPool(t, e, 1)
	u := acquire(t, p)
	u.Release()
	// A process left running as the build user (say by a crashed daemon).
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID)}, Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if len(processesOf(u.UID)) == 0 {
		t.Fatal("the leftover process is not visible, so the test proves nothing")
	}
	acquire(t, p)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("Acquire left a process of the build user running")
	}
	if err := KillUser(context.Background(), 0); err == nil {
		t.Error("KillUser(0) did not refuse")
	}
}

func TestPoolErrors(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	group := filepath.Join(dir, "group")
	passwd := filepath.Join(dir, "passwd")
	os.WriteFile(group, []byte("empty:x:500:\nbld:x:501:a,ghost\nroots:x:502:root\n# comment\nextra:x:503:a\n"), 0o644)
	os.WriteFile(passwd, []byte("root:x:0:0::/root:/bin/sh\na:x:600:65534::/:/bin/false\n"), 0o644)
	ctx := context.Background()
	for g, want := range map[string]string{
		"missing": "the group 'missing' specified in 'build-users-group' does not exist",
		"empty":   "the build users group 'empty' has no members",
		"roots":   "the Nix user should not be a member of 'roots'",
	} {
		p := &Pool{Group: g, StateDir: e.base, GroupFile: group, PasswdFile: passwd}
		if _, err := p.TryAcquire(ctx); err == nil || err.Error() != want {
			t.Errorf("group %s: %v, want %q", g, err, want)
		}
	}
	p := &Pool{Group: "bld", StateDir: e.base, GroupFile: group, PasswdFile: passwd}
	u, err := p.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.UID != 600 || u.GID != 501 || len(u.Groups) != 3 || u.Groups[0] != 65534 || u.Groups[1] != 501 || u.Groups[2] != 503 {
		t.Errorf("user = %+v", u)
	}
	if _, err := p.TryAcquire(ctx); err == nil || !strings.Contains(err.Error(), "the user 'ghost' in the group 'bld' does not exist") {
		t.Errorf("second user: %v", err)
	}
	u.Release()
}

func TestChrootCleanup(t *testing.T) {
	e := newEnv(t)
	u := acquire(t, newPool(t, e, 1))
	s, out := e.spec(u, `mkdir $out; echo x > /tmp/junk`)
	e.mustRun(s)
	if exists(filepath.Join(e.store, s.Name+".chroot")) {
		t.Error("chroot left behind")
	}
	if !exists(e.real(out)) {
		t.Error("output not moved to the store")
	}
	// A missing sandbox path is an error; an optional one is skipped.
	s, _ = e.spec(u, `true`)
	s.Paths = append(s.Paths, Path{Target: "/opt/x", Source: "/nonexistent", Optional: true})
	e.mustRun(s)
	s.Paths = append(s.Paths, Path{Target: "/opt/y", Source: "/nonexistent"})
	if _, err := Run(context.Background(), s); !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), "getting attributes of path '/nonexistent'") {
		t.Errorf("missing sandbox path: %v", err)
	}
	// A failing exec is a setup error, not a build result.
	s, _ = e.spec(u, `true`)
	s.Builder = "/nonexistent"
	if _, err := Run(context.Background(), s); !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), "executing '/nonexistent'") {
		t.Errorf("missing builder: %v", err)
	}
	// removeChroot refuses while something is mounted under the directory.
	dir := filepath.Join(e.base, "x.chroot")
	os.MkdirAll(dir+"/m", 0o755)
	if err := unix.Mount("none", dir+"/m", "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir+"/m", unix.MNT_DETACH)
	if err := removeChroot(dir); err == nil || !strings.Contains(err.Error(), "is still mounted") {
		t.Errorf("removeChroot with a mount: %v", err)
	}
}

func TestParsePaths(t *testing.T) {
	got := ParsePaths([]string{"/bin/sh=/nix/store/x-busybox/bin/busybox", "/usr?", "", "/etc/a=/b?"})
	want := []Path{{"/bin/sh", "/nix/store/x-busybox/bin/busybox", false}, {"/usr", "/usr", true}, {"/etc/a", "/b", true}}
	if len(got) != len(want) {
		t.Fatalf("ParsePaths = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ParsePaths[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}
