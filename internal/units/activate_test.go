package units

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixtest"
)

// TestServeUnitServesNix: the module's silo-serve units, socket-activated
// on TCP as a dynamic user, take a push from the real Nix and serve it back
// signed; admin commands run as that user, as silo-serve-admin runs them.
func TestServeUnitServesNix(t *testing.T) {
	n := nixtest.Require(t)
	prefix := openToAll(t, siloPrefix(t))
	openToAll(t, filepath.Dir(mustReadlink(t, filepath.Join(prefix, "bin", "silo"))))
	addr := "127.0.0.1:" + freePort(t)
	m := evalModule(t, n, fmt.Sprintf(`{ services.silo.serve = {
	  enable = true; listen = [ %q ]; settings = { compression = "zstd"; log-level = "debug"; }; }; }`, addr), prefix)
	m.realise(t, n)
	state := startUnit(t, m.Units, "silo-serve")

	// What silo-serve-admin does: silo as the server's user, on its data
	// directory, with its config file.
	data := filepath.Join(state, "silo", "serve")
	admin := func(args ...string) string {
		cmd := asUser(exec.Command(filepath.Join(prefix, "bin", "silo"), args...), dynamicUID)
		cmd.Env = []string{"SILO_DATA_DIR=" + data, "SILO_CONFIG=" + configFileOf(t, m.Units["silo-serve.service"])}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("silo %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	// Connecting activated the server; it creates its data directory as
	// it starts, which may take a moment on a loaded machine.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(data, "silo.db")); err == nil || time.Now().After(deadline) {
			break
		}
	}
	key := regexp.MustCompile(`Public key:\s+(\S+)`).FindStringSubmatch(admin("cache", "create", "main"))
	if key == nil {
		t.Fatal("cache create printed no public key")
	}
	token := strings.TrimSpace(admin("token", "create", "--cache", "main", "--push"))
	netrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(netrc, []byte("machine 127.0.0.1 password "+token+"\n"), 0o600)

	path := n.Build("served", "echo served-through-socket-activation > $out")
	url := "http://" + addr + "/main"
	n.Run("nix", "copy", "--option", "netrc-file", netrc, "--to", url+"?compression=zstd", path)
	n.Run("nix", "copy", "--option", "netrc-file", netrc, "--option", "trusted-public-keys", key[1],
		"--from", url, "--to", "local?root="+t.TempDir(), path)
}

// TestPublishUnitServesNix: silo-publish, socket-activated as a dynamic
// user, reads the store through nix-daemon and signs with the key systemd
// hands it as a credential; the real Nix copies from it, checking the
// signature. The same unit on a unix socket answers HTTP there.
func TestPublishUnitServesNix(t *testing.T) {
	n := nixtest.Require(t)
	prefix := openToAll(t, siloPrefix(t))
	silo := filepath.Join(prefix, "bin", "silo")
	openToAll(t, filepath.Dir(mustReadlink(t, silo)))
	keys := t.TempDir()
	out, err := exec.Command(silo, "key", "generate", "--secret", keys+"/k.sec", "--public", keys+"/k.pub", "publish-test-1").CombinedOutput()
	if err != nil {
		t.Fatalf("key generate: %v\n%s", err, out)
	}
	pub, _ := os.ReadFile(keys + "/k.pub")
	sock := n.StartDaemon()
	openToAll(t, filepath.Dir(sock))
	daemonEnv := "NIX_DAEMON_SOCKET_PATH=" + sock

	addr := "127.0.0.1:" + freePort(t)
	unix := filepath.Join(t.TempDir(), "run", "publish.sock")
	m := evalModule(t, n, fmt.Sprintf(`{ services.silo.publish = {
	  enable = true; listen = [ %q "unix:%s" ]; secrets.signing-key-file = [ %q ]; }; }`, addr, unix, keys+"/k.sec"), prefix)
	m.realise(t, n)
	startUnit(t, m.Units, "silo-publish", daemonEnv)

	path := n.Build("published", "echo published > $out")
	n.Run("nix", "copy", "--option", "trusted-public-keys", strings.TrimSpace(string(pub)),
		"--from", "http://"+addr, "--to", "local?root="+t.TempDir(), path)

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", unix)
	}}, Timeout: 10 * time.Second}
	hash := strings.SplitN(filepath.Base(path), "-", 2)[0]
	resp, err := client.Get("http://publish/" + hash + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Sig: publish-test-1:") {
		t.Fatalf("narinfo over the unix socket: %s\n%s", resp.Status, body)
	}
}

// TestQueueUnitAndHook: Nix, with the module's post-build-hook and a PATH
// without silo (as nix-daemon has under systemd), hands each build to the
// socket-activated silo-queue, which uploads it. With the queue stopped,
// or silo missing altogether, builds still succeed.
func TestQueueUnitAndHook(t *testing.T) {
	n := nixtest.Require(t)
	prefix := siloPrefix(t)
	dir := t.TempDir()
	cache, socket := filepath.Join(dir, "cache"), filepath.Join(dir, "q", "queue.sock")
	m := evalModule(t, n, fmt.Sprintf(`{ services.silo.queue = {
	  enable = true; socket = %q; settings = { to = "file://%s"; skip-signed-by = "none"; }; }; }`, socket, cache), prefix)
	m.realise(t, n)
	hook, _ := m.NixSettings["post-build-hook"].(string)
	if hook == "" || hook != m.Hook {
		t.Fatalf("nix.settings.post-build-hook = %v, want the wrapper %s", m.NixSettings["post-build-hook"], m.Hook)
	}
	sock := n.StartDaemon()
	startUnit(t, m.Units, "silo-queue", "NIX_DAEMON_SOCKET_PATH="+sock)

	n.Extra = "post-build-hook = " + hook + "\n"
	path := buildWithPath(t, n, "queued", "/usr/bin:/bin")
	narinfo := filepath.Join(cache, strings.SplitN(filepath.Base(path), "-", 2)[0]+".narinfo")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(narinfo); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the queue did not upload %s within 60s", path)
		}
	}

	// A hook whose silo is gone: the build still succeeds.
	gone := evalModule(t, n, `{ services.silo.queue = { enable = true; settings.to = "file:///nonexistent"; }; }`, "/nonexistent")
	gone.realise(t, n)
	n.Extra = "post-build-hook = " + gone.Hook + "\n"
	buildWithPath(t, n, "hook-without-silo", "/usr/bin:/bin")
}

// buildWithPath builds a fresh derivation with Nix's PATH set to path.
func buildWithPath(t *testing.T, n *nixtest.Nix, name, path string) string {
	t.Helper()
	expr := fmt.Sprintf(`derivation { name = %q; system = builtins.currentSystem; builder = "/bin/sh"; nonce = %q; args = ["-c" "echo %s > $out"]; }`,
		name, nixtest.Nonce(), name)
	cmd := n.Command(context.Background(), "nix", "build", "--no-link", "--json", "--impure", "--expr", expr)
	for i, e := range cmd.Env {
		if strings.HasPrefix(e, "PATH=") {
			cmd.Env[i] = "PATH=" + path
		}
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix build %s: %v\n%s", name, err, stderr.String())
	}
	var res []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 {
		t.Fatalf("nix build %s: output %q: %v", name, out, err)
	}
	return res[0].Outputs["out"]
}

func configFileOf(t *testing.T, service string) string {
	t.Helper()
	argv := strings.Fields(parseUnit(service).one("Service.ExecStart"))
	for i, a := range argv {
		if a == "--config" && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	t.Fatalf("no --config in %q", argv)
	return ""
}

func mustReadlink(t *testing.T, p string) string {
	t.Helper()
	target, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// TestDaemonUnitServesNix: the module's silo-daemon units, socket-activated,
// run silo daemon with the nix.conf the module wrote, and the real Nix
// talks to it. The daemon keeps a private state directory here, so the
// machine's own store database is never touched.
func TestDaemonUnitServesNix(t *testing.T) {
	n := nixtest.Require(t)
	prefix := siloPrefix(t)
	if out, err := exec.Command(filepath.Join(prefix, "bin", "silo"), "daemon", "--help").CombinedOutput(); err != nil {
		// silo daemon is being written on another branch; this test runs
		// once it is merged (the units are verified and scored above).
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Skipf("this silo has no daemon command yet: %s", lines[len(lines)-1])
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "daemon-socket", "socket")
	m := evalModule(t, n, fmt.Sprintf(`{ nix.enable = false; services.silo.daemon = {
	  enable = true; socket = %q; settings = { sandbox = false; build-users-group = ""; substituters = [ ]; }; }; }`, sock), prefix)
	m.realise(t, n)
	startUnit(t, m.Units, "silo-daemon", "NIX_STATE_DIR="+filepath.Join(dir, "state"), "NIX_LOG_DIR="+filepath.Join(dir, "log"))
	n.Run("nix", "store", "ping", "--store", "unix://"+sock)
}

// TestGCUnitCollects: silo-gc.service's command, with its environment,
// collects garbage through the store daemon's socket. The daemon here is
// the real nix-daemon on a private chroot store, so the machine's own
// store is never collected.
func TestGCUnitCollects(t *testing.T) {
	n := nixtest.Require(t)
	nixBin := filepath.Dir(requireTool(t, "nix-collect-garbage"))
	files, err := Files(Options{Silo: "/usr/local/bin/silo", NixBinDir: nixBin})
	if err != nil {
		t.Fatal(err)
	}
	var svc unitFile
	for _, f := range files {
		if filepath.Base(f.Path) == "silo-gc.service" {
			svc = parseUnit(string(f.Data))
		}
	}
	dir := t.TempDir()
	sock, root := filepath.Join(dir, "socket"), filepath.Join(dir, "root")
	daemon := n.Command(context.Background(), "nix-daemon", "--option", "store", "local?root="+root)
	daemon.Env = append(daemon.Env, "NIX_DAEMON_SOCKET_PATH="+sock)
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { daemon.Process.Kill(); daemon.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nix-daemon made no socket")
		}
	}
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("collect me\n"), 0o644)
	path := strings.TrimSpace(n.Run("nix-store", "--store", "unix://"+sock, "--add", garbage))
	if _, err := os.Stat(root + path); err != nil {
		t.Fatalf("added path not in the daemon's store: %v", err)
	}

	// Without it Nix would collect the machine's own store, as root.
	if !strings.Contains(strings.Join(svc["Service.Environment"], " "), "NIX_REMOTE=daemon") {
		t.Fatalf("silo-gc.service does not collect through the daemon: Environment=%q", svc["Service.Environment"])
	}
	argv := splitCommand(t, svc.one("Service.ExecStart"), nil)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(n.Env(), svc["Service.Environment"]...), "NIX_DAEMON_SOCKET_PATH="+sock)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%q: %v\n%s", argv, err, out)
	}
	if _, err := os.Stat(root + path); !os.IsNotExist(err) {
		t.Fatalf("%s is still in the store after silo-gc's command (%v)", path, err)
	}
}
