package units

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// This machine has systemd 252 but no systemd manager (PID 1 is not
// systemd), so tests start a unit the way its manager would as far as
// systemd-socket-activate allows: the socket unit's ListenStream
// addresses are bound by systemd-socket-activate, which execs the
// service's ExecStart on the first connection with LISTEN_FDS; the
// service's Environment=, StateDirectory= (under a private %S),
// LoadCredential= (copied into a private %d) and DynamicUser= (an unused
// uid) are applied here. The sandboxing directives are not (systemd-analyze
// checks those); what this shows is that the unit's command line, sockets,
// settings and credentials make the real binary serve the real Nix.

// dynamicUID stands in for the uid systemd would pick for DynamicUser.
const dynamicUID = 61917

type unitFile map[string][]string // "Section.Key" -> values, in order

func parseUnit(text string) unitFile {
	u := unitFile{}
	section := ""
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, _ := strings.Cut(line, "=")
			u[section+"."+k] = append(u[section+"."+k], v)
		}
	}
	return u
}

func (u unitFile) one(key string) string {
	if v := u[key]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// splitCommand splits an ExecStart line into words, honouring double
// quotes and backslash escapes, and expands the specifiers in spec.
func splitCommand(t testing.TB, line string, spec map[byte]string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '"':
			quoted, inWord = !quoted, true
		case c == '\\' && quoted && i+1 < len(line):
			i++
			w.WriteByte(line[i])
		case c == '%' && i+1 < len(line):
			i++
			if line[i] == '%' {
				w.WriteByte('%')
			} else if v, ok := spec[line[i]]; ok {
				w.WriteString(v)
			} else {
				t.Fatalf("ExecStart %q: specifier %%%c not emulated", line, line[i])
			}
			inWord = true
		case c == '$' && i+1 < len(line) && line[i+1] == '$':
			i++
			w.WriteByte('$')
			inWord = true
		case c == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// openToAll makes dir and its parent traversable by the dynamic user
// (t.TempDir makes both 0700).
func openToAll(t testing.TB, dir string) string {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startUnit starts units[name+".service"] socket-activated on the
// addresses of units[name+".socket"]; env is added to the unit's own
// Environment= (e.g. the test's private nix-daemon socket). It returns the
// private state directory (%S). The process group is stopped at the end.
func startUnit(t *testing.T, units map[string]string, name string, env ...string) (stateDir string) {
	t.Helper()
	activate := requireTool(t, "systemd-socket-activate")
	sock, svc := parseUnit(units[name+".socket"]), parseUnit(units[name+".service"])
	if len(sock["Socket.ListenStream"]) == 0 || len(svc["Service.ExecStart"]) != 1 {
		t.Fatalf("%s: want a socket with ListenStream and a service with one ExecStart", name)
	}
	root := openToAll(t, t.TempDir())
	stateDir, creds := filepath.Join(root, "state"), filepath.Join(root, "credentials")
	uid := 0
	if svc.one("Service.DynamicUser") == "yes" {
		uid = dynamicUID
	}
	for _, dir := range append([]string{stateDir, creds}, svc["Service.StateDirectory"]...) {
		if dir != stateDir && dir != creds {
			dir = filepath.Join(stateDir, dir)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chown(dir, uid, uid)
	}
	for _, l := range sock["Socket.ListenStream"] {
		if strings.HasPrefix(l, "/") { // systemd (root) would create it
			os.MkdirAll(filepath.Dir(l), 0o755)
			os.Chown(filepath.Dir(l), uid, uid)
		}
	}
	for _, lc := range svc["Service.LoadCredential"] {
		id, path, _ := strings.Cut(lc, ":")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("LoadCredential=%s: %v", lc, err)
		}
		p := filepath.Join(creds, id)
		if err := os.WriteFile(p, data, 0o400); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, uid, uid)
	}
	os.Chmod(creds, 0o500)
	argv := splitCommand(t, svc.one("Service.ExecStart"),
		map[byte]string{'S': stateDir, 'd': creds, 't': filepath.Join(root, "run")})
	args := []string{}
	for _, l := range sock["Socket.ListenStream"] {
		args = append(args, "-l", l)
	}
	for _, e := range append(svc["Service.Environment"], env...) {
		args = append(args, "-E", e)
	}
	cmd := exec.Command(activate, append(append(args, "--"), argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, stderr.String())
		}
	})
	// systemd-socket-activate binds before it waits; connecting activates.
	for _, l := range sock["Socket.ListenStream"] {
		network := "tcp"
		if strings.HasPrefix(l, "/") {
			network = "unix"
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			c, err := net.DialTimeout(network, l, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: nothing listens on %s: %v\n%s", name, l, err, stderr.String())
			}
		}
	}
	return stateDir
}

// freePort returns a TCP port on 127.0.0.1 nothing listens on now.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// asUser runs cmd as uid (the dynamic user), for admin commands.
func asUser(cmd *exec.Cmd, uid int) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	return cmd
}
