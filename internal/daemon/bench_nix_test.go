package daemon

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// nixBenchDaemon is benchDaemon with the real nix-daemon (set
// SILO_BENCH_NIX=1 to benchmark the reference instead).
func nixBenchDaemon(b *testing.B) (sock, storeDir string) {
	root := b.TempDir()
	os.MkdirAll(root+"/conf", 0o755)
	os.WriteFile(root+"/conf/nix.conf", []byte("fsync-metadata = false\ngc-reserved-space = 0\nbuild-users-group =\n"), 0o644)
	sock = root + "/socket"
	cmd := exec.Command("nix-daemon") // nixtest:allow: the reference daemon of a benchmark, with its own store
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "NIX_STORE_DIR=" + root + "/store", "NIX_STATE_DIR=" + root + "/state",
		"NIX_LOG_DIR=" + root + "/log", "NIX_CONF_DIR=" + root + "/conf", "HOME=" + root, "NIX_USER_CONF_FILES=", "NIX_DAEMON_SOCKET_PATH=" + sock}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		b.Skip(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
	}
	os.MkdirAll(root+"/state", 0o755)
	return sock, root + "/store"
}
