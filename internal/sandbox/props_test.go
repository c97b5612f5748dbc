package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Each property test runs the same probe with the protection in place and
// with it off (unsandboxed, or the feature disabled), so a probe that
// could not detect the leak fails the test.

func probeSpec(t *testing.T, e *testEnv, u *User, checks ...string) Spec {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := e.spec(u, "")
	s.Builder, s.Args = "/probe", checks
	s.Paths = append(append([]Path{}, hostPaths...), Path{Target: "/probe", Source: self})
	return s
}

func TestHostFilesHidden(t *testing.T) {
	e := newEnv(t)
	u := acquire(t, newPool(t, e, 1))
	input := e.addDir("input", map[string]string{"f": "input content"})
	inputFile := e.addFile("input-file", "file content")
	other := e.addDir("other", map[string]string{"secret": "not an input"})
	// The host must have what we look for, or the test proves nothing.
	for _, p := range []string{"/etc/shadow", "/root", e.real(other) + "/secret"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("host lacks %s: %v", p, err)
		}
	}
	script := fmt.Sprintf(`for p in /etc/shadow /root /home %[1]s %[1]s/secret %[2]s/f %[3]s; do
  if [ -e "$p" ]; then echo "visible $p"; else echo "hidden $p"; fi
done
cat %[2]s/f; echo; cat %[3]s; echo`, other, input, inputFile)
	check := func(sandboxed bool) string {
		s, _ := e.spec(u, script)
		s.Sandboxed = sandboxed
		s.Inputs = []string{input, inputFile}
		if !sandboxed {
			s.Env = append(s.Env, "PATH=/bin:/usr/bin")
		}
		return e.mustRun(s)
	}
	log := check(true)
	for _, want := range []string{"hidden /etc/shadow", "hidden /root", "hidden /home", "hidden " + other,
		"visible " + input + "/f", "visible " + inputFile, "input content", "file content"} {
		if !strings.Contains(log, want) {
			t.Errorf("sandboxed: log lacks %q:\n%s", want, log)
		}
	}
	// Unsandboxed the builder sees the host (and the store path under
	// its real name only, so check the host's own files).
	log = check(false)
	for _, want := range []string{"visible /etc/shadow", "visible /root"} {
		if !strings.Contains(log, want) {
			t.Errorf("unsandboxed control: log lacks %q:\n%s", want, log)
		}
	}
}

func TestNetworkIsolation(t *testing.T) {
	e := newEnv(t)
	u := acquire(t, newPool(t, e, 1))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted sync.WaitGroup
	accepted.Add(1)
	got := 0
	go func() {
		defer accepted.Done()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(time.Minute))
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			got++
			c.Close()
		}
	}()
	for _, network := range []bool{false, true} {
		s := probeSpec(t, e, u, "connect="+ln.Addr().String(), "loopback")
		s.Network = network
		log := e.mustRun(s)
		if !strings.Contains(log, "loopback: ok") {
			t.Errorf("Network=%v: the build's own loopback does not work: %s", network, log)
		}
		ok := strings.Contains(log, "connect: ok")
		if ok != network {
			t.Errorf("Network=%v: the build could connect to the host: %v (%s)", network, ok, strings.TrimSpace(log))
		}
	}
	ln.Close()
	accepted.Wait()
	if got != 1 {
		t.Errorf("the test server saw %d connections, want 1 (from the build with network)", got)
	}
}

func TestNoOtherProcesses(t *testing.T) {
	e := newEnv(t)
	u := acquire(t, newPool(t, e, 1))
	script := `n=0; for d in /proc/[0-9]*; do n=$((n+1)); echo "pid ${d#/proc/}"; done; echo "count $n"; echo "self $$"`
	s, _ := e.spec(u, script)
	log := e.mustRun(s)
	if !strings.Contains(log, "count 1\n") || !strings.Contains(log, "pid 1\n") || !strings.Contains(log, "self 1\n") {
		t.Errorf("sandboxed build sees other processes:\n%s", log)
	}
	s, _ = e.spec(u, script)
	s.Sandboxed = false
	log = e.mustRun(s)
	if strings.Contains(log, "count 1\n") || strings.Contains(log, "self 1\n") {
		t.Errorf("unsandboxed control sees only itself, so the probe proves nothing:\n%s", log)
	}
}

func TestInputsReadOnly(t *testing.T) {
	e := newEnv(t)
	u := acquire(t, newPool(t, e, 1))
	script := `for d in $IN; do
  echo x > $d/f && echo "CHANGED: wrote $d/f"
  echo x > $d/new && echo "CHANGED: created $d/new"
  chmod u+w $d && echo "CHANGED: chmod $d"
  rm -f $d/f && echo "CHANGED: removed $d/f"
done
echo x >> $INFILE && echo "CHANGED: wrote $INFILE"
rm -f $INFILE && echo "CHANGED: removed $INFILE"
mv $INFILE /tmp/x && echo "CHANGED: moved $INFILE"
true`
	check := func(sandboxed bool, user *User) (string, string, string) {
		dir := e.addDir("input", map[string]string{"f": "original"})
		file := e.addFile("input-file", "original")
		s, _ := e.spec(user, script)
		s.Sandboxed = sandboxed
		s.Inputs = []string{dir, file}
		s.Env = append(s.Env, "IN="+dir, "INFILE="+file)
		if !sandboxed {
			s.Env = append(s.Env, "IN="+e.real(dir), "INFILE="+e.real(file))
		}
		log := e.mustRun(s)
		b1, _ := os.ReadFile(e.real(dir) + "/f")
		b2, _ := os.ReadFile(e.real(file))
		return log, string(b1), string(b2)
	}
	log, f1, f2 := check(true, u)
	if strings.Contains(log, "CHANGED") {
		t.Errorf("sandboxed build could change an input:\n%s", log)
	}
	if f1 != "original" || f2 != "original" {
		t.Errorf("inputs changed: %q %q", f1, f2)
	}
	// Control: the same script as root outside the sandbox changes them.
	e2 := newEnv(t)
	e = e2
	log, f1, _ = check(false, nil)
	if !strings.Contains(log, "CHANGED: wrote") || f1 == "original" {
		t.Errorf("control as root could not write the input, so the probe proves nothing:\n%s", log)
	}
}

func TestSeccompAndNoNewPrivs(t *testing.T) {
	e := newEnv(t)
	u := acquire(t, newPool(t, e, 1))
	checks := []string{"chmod-setuid=/build/f", "fchmodat-setgid=/build/f", "chmod-plain=/build/f", "setxattr=/build/f", "status=NoNewPrivs", "status=Seccomp"}
	run := func(noFilter, allowNNP bool) string {
		s := probeSpec(t, e, u, checks...)
		os.WriteFile(filepath.Join(s.BuildDir, "f"), nil, 0o644)
		os.Chown(filepath.Join(s.BuildDir, "f"), u.UID, u.GID)
		s.NoSyscallFilter, s.AllowNewPrivileges = noFilter, allowNNP
		return e.mustRun(s)
	}
	log := run(false, false)
	for _, want := range []string{"chmod-setuid: operation not permitted", "fchmodat-setgid: operation not permitted",
		"chmod-plain: ok", "setxattr: operation not supported", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(log, want) {
			t.Errorf("filtered build: log lacks %q:\n%s", want, log)
		}
	}
	log = run(true, true)
	for _, want := range []string{"chmod-setuid: ok", "fchmodat-setgid: ok", "NoNewPrivs:\t0", "Seccomp:\t0"} {
		if !strings.Contains(log, want) {
			t.Errorf("control without filter: log lacks %q:\n%s", want, log)
		}
	}
	// The filter applies without a sandbox too, as in Nix.
	s := probeSpec(t, e, u, "chmod-setuid="+filepath.Join(e.base, "f2"))
	os.WriteFile(filepath.Join(e.base, "f2"), nil, 0o644)
	os.Chown(filepath.Join(e.base, "f2"), u.UID, u.GID)
	s.Sandboxed = false
	s.Builder = probeLink(t, e)
	if log := e.mustRun(s); !strings.Contains(log, "chmod-setuid: operation not permitted") {
		t.Errorf("unsandboxed build could make a setuid file:\n%s", log)
	}
}

// probeLink links the test binary as e.base/probe (argv[0] must be "probe").
func probeLink(t *testing.T, e *testEnv) string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(e.base, "probe")
	// A copy: the build user cannot reach the test binary's own directory.
	if err := linkOrCopy(self, p); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o755)
	return p
}

func TestCapabilitiesDropped(t *testing.T) {
	e := newEnv(t)
	u := acquire(t, newPool(t, e, 1))
	for _, userNS := range []bool{true, false} {
		s := probeSpec(t, e, u, "status=CapEff", "status=CapPrm", "status=CapAmb", "status=Uid", "status=Groups")
		s.NoUserNamespace = !userNS
		res, log := e.run(s)
		if !res.Success() || res.UserNamespace != userNS {
			t.Fatalf("userNS=%v: %+v: %s", userNS, res, log)
		}
		for _, want := range []string{"CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "CapAmb:\t0000000000000000"} {
			if !strings.Contains(log, want) {
				t.Errorf("userNS=%v: builder kept capabilities (want %q):\n%s", userNS, want, log)
			}
		}
		wantUID := "Uid:\t1000\t1000\t1000\t1000"
		if !userNS {
			wantUID = fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", u.UID, u.UID, u.UID, u.UID)
		}
		if !strings.Contains(log, wantUID) || !regexp.MustCompile(`(?m)^Groups:\s*$`).MatchString(log) {
			t.Errorf("userNS=%v: want %q and no supplementary groups:\n%s", userNS, wantUID, log)
		}
	}
}

func TestTimeoutsKillTheTree(t *testing.T) {
	e := newEnv(t)
	u := acquire(t, newPool(t, e, 1))
	for _, tt := range []struct {
		sandboxed bool
		timeout   bool
	}{{true, true}, {false, true}, {true, false}, {false, false}} {
		s, _ := e.spec(u, `(sleep 1000; echo leaked) & echo started; sleep 1000`)
		s.Sandboxed = tt.sandboxed
		if tt.timeout {
			s.Timeout = 300 * time.Millisecond
		} else {
			s.MaxSilent = 300 * time.Millisecond
		}
		start := time.Now()
		res, log := e.run(s)
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("%+v: took %v", tt, d)
		}
		if res.Success() || res.TimedOut != tt.timeout || res.Silent == tt.timeout {
			t.Errorf("%+v: result %+v", tt, res)
		}
		if !strings.Contains(log, "started") {
			t.Errorf("%+v: log %q", tt, log)
		}
		if ps := livingProcessesOf(u.UID); len(ps) > 0 {
			t.Errorf("%+v: processes of the build user survive: %v", tt, ps)
		}
	}
	// Cancellation kills too.
	s, _ := e.spec(u, `sleep 1000`)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Run(ctx, s); err == nil {
		t.Error("cancelled build returned no error")
	}
	if ps := livingProcessesOf(u.UID); len(ps) > 0 {
		t.Errorf("processes of the build user survive cancellation: %v", ps)
	}
}

func TestRefusals(t *testing.T) {
	e := newEnv(t)
	s, _ := e.spec(nil, "true")
	if _, err := Run(context.Background(), s); err == nil || !strings.Contains(err.Error(), "refusing to run a sandboxed build as root without a build user") {
		t.Errorf("root without build user: %v", err)
	}
	// The same build unsandboxed is allowed.
	s.Sandboxed = false
	if res, _ := e.run(s); !res.Success() {
		t.Errorf("unsandboxed build as root failed: %+v", res)
	}
}
