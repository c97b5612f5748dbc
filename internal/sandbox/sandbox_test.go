package sandbox

import (
	"os"
	"strings"
	"syscall"
	"testing"
)

// The files the real Nix 2.8 writes into its sandbox (seen with
// `cat /etc/passwd /etc/group /etc/hosts` in a sandboxed nix-build).
const (
	nixPasswd = "root:x:0:0:Nix build user:/build:/noshell\nnixbld:x:1000:100:Nix build user:/build:/noshell\nnobody:x:65534:65534:Nobody:/:/noshell\n"
	nixGroup  = "root:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n"
	nixHosts  = "127.0.0.1 localhost\n::1 localhost\n"
)

func TestEtcDevAndIdentity(t *testing.T) {
	e := newEnv(t)
	u := acquire(t, newPool(t, e, 1))
	s, out := e.spec(u, `set -e
mkdir $out
cat /etc/passwd > $out/passwd; cat /etc/group > $out/group; cat /etc/hosts > $out/hosts
hostname > $out/hostname; id -u > $out/uid; id -g > $out/gid; id -G > $out/groups
ls /dev | tr '\n' ' ' > $out/dev
ls / | tr '\n' ' ' > $out/root
pwd > $out/pwd
readlink /dev/ptmx > $out/ptmx
echo $$ > $out/pid
stat -c %a /tmp > $out/tmpmode
stat -f -c %T /dev/shm > $out/shmfs
stat -f -c %T /dev/pts > $out/ptsfs
stat -f -c %T /proc > $out/procfs
`)
	e.mustRun(s)
	got := func(name string) string {
		b, err := os.ReadFile(e.real(out) + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for name, want := range map[string]string{
		"passwd": nixPasswd, "group": nixGroup, "hosts": nixHosts, "hostname": "localhost\n",
		"uid": "1000\n", "gid": "100\n", "groups": "100\n", "pwd": "/build\n", "ptmx": "/dev/pts/ptmx\n",
		"pid": "1\n", "tmpmode": "1777\n", "shmfs": "tmpfs\n", "ptsfs": "devpts\n", "procfs": "proc\n",
		"dev":  "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero ",
		"root": "bin build dev etc lib lib64 nix proc tmp usr ",
	} {
		if g := got(name); g != want && !(name == "root" && g == strings.Replace(want, "lib64 ", "", 1)) {
			t.Errorf("%s = %q, want %q", name, g, want)
		}
	}
	// On the host, the files belong to the build user.
	st, err := os.Stat(e.real(out) + "/uid")
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); int(sys.Uid) != u.UID || int(sys.Gid) != u.GID {
		t.Errorf("output owned by %d:%d, want the build user %d:%d", sys.Uid, sys.Gid, u.UID, u.GID)
	}
}

// TestSandboxPathFile binds a single file (sandbox-paths "/bin/sh=...")
// without the rest of its directory.
func TestSandboxPathFile(t *testing.T) {
	e := newEnv(t)
	u := acquire(t, newPool(t, e, 1))
	dash, err := os.Readlink("/bin/sh")
	if err != nil || dash == "" {
		dash = "/bin/sh"
	}
	if dash[0] != '/' {
		dash = "/usr/bin/" + dash
	}
	s, _ := e.spec(u, `echo /bin/*; echo /usr/bin/* | wc -w`)
	s.Builder = "/bin/sh"
	s.Paths = ParsePaths([]string{"/bin/sh=" + dash, "/lib", "/lib64?", "/usr/lib", "/usr/bin/wc", "/opt/missing?"})
	log := e.mustRun(s)
	if !strings.HasPrefix(log, "/bin/sh\n1\n") {
		t.Errorf("the sandbox's /bin and /usr/bin hold more than given:\n%s", log)
	}
}
