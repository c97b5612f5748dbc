package queue_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/queue"
)

// TestQueueCredentialsAndRestart runs silo serve and silo queue as real
// processes with a long backoff (at least 15 s before any retry) and shows
// that the queue, without a restart, names a revoked token as a credential
// refusal and uses the token a new silo login saves within seconds; that
// SIGHUP retries at once; and that a restart starts without the backoff
// of the previous run.
func TestQueueCredentialsAndRestart(t *testing.T) {
	n := nixtest.Require(t)
	bin := nixtest.SiloBinary(t)
	dir := t.TempDir()
	env := n.Env()
	data := filepath.Join(dir, "data")
	addr := freePort(t)
	cacheURL := "http://" + addr + "/main"
	run(t, env, bin, "init", "--data-dir", data)
	run(t, env, bin, "cache", "create", "main", "--data-dir", data)
	newToken := func() string {
		return strings.TrimSpace(run(t, env, bin, "token", "create", "--cache", "main", "--push", "--data-dir", data))
	}
	serveArgs := []string{"serve", "--data-dir", data, "--listen", addr}
	serve := start(t, env, bin, serveArgs...)
	waitHTTP(t, "http://"+addr+"/healthz")
	tokA := newToken()
	run(t, env, bin, "login", "main", cacheURL, tokA)

	socket := filepath.Join(dir, "queue.sock")
	queueArgs := []string{"queue", "--to", "main", "--socket", socket, "--state", filepath.Join(dir, "state"),
		"--min-backoff", "30s", "--max-backoff", "1h", "--skip-signed-by", "none"}
	q := start(t, env, bin, queueArgs...)
	waitFor(t, "queue socket", 20*time.Second, func() bool { _, err := os.Stat(socket); return err == nil })
	client := queue.NewClient(socket)
	st := func() queue.Status {
		s, _ := client.Status(context.Background())
		return s
	}
	hook := func(p string) {
		t.Helper()
		cmd := exec.Command(bin, "hook", "--socket", socket)
		cmd.Env = append(env, "OUT_PATHS="+p)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("silo hook: %v\n%s", err, out)
		}
	}
	uploaded := func(what string, done int, within time.Duration) {
		t.Helper()
		waitFor(t, what, within, func() bool { s := st(); return s.Done >= done && s.Pending == 0 && s.Roots == 0 })
	}
	failing := func(what, want string) {
		t.Helper()
		waitFor(t, what, 20*time.Second, func() bool {
			s := st()
			for _, f := range s.Failures {
				if strings.Contains(f.Error, want) {
					return s.Failing > 0
				}
			}
			return false
		})
	}

	p1 := n.Build("creds-1", "echo 1 > $out")
	hook(p1)
	uploaded("the first path", 1, 20*time.Second)

	// Revoked token: the refusal is named, in the status and the log.
	id := strings.Split(tokA, "_")[1]
	run(t, env, bin, "token", "revoke", id, "--data-dir", data)
	p2 := n.Build("creds-2", "echo 2 > $out")
	hook(p2)
	failing("the revoked token to be refused", "refused the credentials")
	if log, _ := os.ReadFile(q.log.Name()); !strings.Contains(string(log), "the cache refused the queue's credentials") ||
		strings.Contains(string(log), "cache unreachable") {
		t.Errorf("queue log does not name the credential refusal as such:\n%s", log)
	}
	// A new login is used within seconds, long before the 15 s backoff.
	run(t, env, bin, "login", "main", cacheURL, newToken())
	uploaded("the path after a new silo login, without a restart", 2, 10*time.Second)

	// SIGHUP: the cache was down, is back, and SIGHUP retries at once.
	serve.kill(syscall.SIGTERM)
	p3 := n.Build("creds-3", "echo 3 > $out")
	hook(p3)
	failing("failure with the cache down", "")
	serve = start(t, env, bin, serveArgs...)
	waitHTTP(t, "http://"+addr+"/healthz")
	q.cmd.Process.Signal(syscall.SIGHUP)
	uploaded("the path after SIGHUP", 3, 10*time.Second)

	// A restart starts fresh: the backoff of the killed run is forgotten.
	serve.kill(syscall.SIGTERM)
	p4 := n.Build("creds-4", "echo 4 > $out")
	hook(p4)
	failing("failure with the cache down", "")
	q.kill(syscall.SIGKILL)
	serve = start(t, env, bin, serveArgs...)
	waitHTTP(t, "http://"+addr+"/healthz")
	q = start(t, env, bin, queueArgs...)
	uploaded("the path after a restart", 4, 10*time.Second)
	if log, _ := os.ReadFile(q.log.Name()); !strings.Contains(string(log), "retrying paths that failed before the restart") {
		t.Errorf("restarted queue does not say it retries:\n%s", log)
	}
}
