package sandbox

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/nixtest"
)

// TestThroughSiloBinary runs a sandboxed build whose init step is the real
// silo binary, so cli.Main's dispatch of `silo __sandbox-init` is what
// sets the sandbox up.
func TestThroughSiloBinary(t *testing.T) {
	e := newEnv(t)
	u := acquire(t, newPool(t, e, 1))
	silo := nixtest.SiloBinary(t)
	// The build user must be able to run it (KillUser's helper).
	bin := e.base + "/silo"
	if err := linkOrCopy(silo, bin); err != nil {
		t.Fatal(err)
	}
	os.Chmod(bin, 0o755)
	old := initBinary
	initBinary = bin
	defer func() { initBinary = old }()
	s, out := e.spec(u, `mkdir $out; id -u > $out/uid; cat /etc/hostname 2>/dev/null; hostname > $out/host; echo $$ > $out/pid`)
	e.mustRun(s)
	for f, want := range map[string]string{"uid": "1000\n", "host": "localhost\n", "pid": "1\n"} {
		if b, err := os.ReadFile(e.real(out) + "/" + f); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", f, b, err, want)
		}
	}
	// As root, silo's kill helper refuses (kill(-1) as root would kill everything).
	outb, err := exec.Command(bin, InitCommand, "kill-user").CombinedOutput()
	if err == nil || !strings.Contains(string(outb), "refusing to kill all processes as root") {
		t.Errorf("silo __sandbox-init kill-user as root: %v: %s", err, outb)
	}
}
