package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
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

type proc struct {
	cmd *exec.Cmd
	log *os.File
}

// start runs a long-lived silo process, logging to a file shown on failure.
func start(t *testing.T, env []string, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logf}
	t.Cleanup(func() {
		p.kill(syscall.SIGKILL)
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("log of silo %s:\n%s", args[0], out)
		}
	})
	return p
}

func (p *proc) kill(sig syscall.Signal) {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(sig)
		p.cmd.Wait()
	}
}

func run(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("silo %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	waitFor(t, url+" to answer", 20*time.Second, func() bool {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
}

// TestRealBuildsThroughHook runs real Nix builds with post-build-hook set
// to silo hook, a silo queue and a silo serve, all as separate processes:
// outputs reach the cache and substitute elsewhere with a verified
// signature; with the cache down builds still succeed and the queue drains
// when it returns; kill -9 of the queue mid-upload loses nothing.
func TestRealBuildsThroughHook(t *testing.T) {
	n := nixtest.Require(t)
	bin := nixtest.SiloBinary(t)
	dir := t.TempDir()
	env := n.Env() // the silo processes see the test's own HOME and XDG directories
	data := filepath.Join(dir, "data")
	addr := freePort(t)
	cacheURL := "http://" + addr + "/main"

	run(t, env, bin, "init", "--data-dir", data)
	info := run(t, env, bin, "cache", "create", "main", "--public", "--data-dir", data)
	var cacheKey string
	for _, line := range strings.Split(info, "\n") {
		if k, ok := strings.CutPrefix(strings.TrimSpace(line), "Public key:"); ok {
			cacheKey = strings.TrimSpace(k)
		}
	}
	if cacheKey == "" {
		t.Fatalf("no public key in silo cache create output:\n%s", info)
	}
	token := strings.TrimSpace(run(t, env, bin, "token", "create", "--cache", "main", "--push", "--data-dir", data))
	serveArgs := []string{"serve", "--data-dir", data, "--listen", addr}
	serve := start(t, env, bin, serveArgs...)
	waitHTTP(t, cacheURL+"/nix-cache-info")
	run(t, env, bin, "login", "main", cacheURL, token) // checks the token against the server

	socket := filepath.Join(dir, "run", "queue.sock")
	queueArgs := []string{"queue", "--to", "main", "--socket", socket, "--state", filepath.Join(dir, "state"),
		"--min-backoff", "50ms", "--max-backoff", "500ms"}
	q := start(t, env, bin, queueArgs...)
	waitFor(t, "queue socket", 20*time.Second, func() bool { _, err := os.Stat(socket); return err == nil })

	// 0. silo push, by the name saved with silo login, before any hook is set.
	p0 := n.Build("p0", "echo p0 > $out")
	run(t, env, bin, "push", "--to", "main", p0)
	substitutesNow := func(paths ...string) {
		t.Helper()
		args := append([]string{"copy", "--from", cacheURL, "--to", t.TempDir(), "--option", "trusted-public-keys", cacheKey}, paths...)
		if _, err := n.Try("nix", args...); err != nil {
			t.Errorf("nix copy --from the silo cache: %v", err)
		}
	}
	substitutesNow(p0)

	hook := filepath.Join(dir, "silo-hook")
	os.WriteFile(hook, []byte(fmt.Sprintf("#!/bin/sh\nexec %s hook --socket %s\n", bin, socket)), 0o755)
	n.Extra = "post-build-hook = " + hook + "\n"

	status := func() queue.Status {
		var s queue.Status
		out := run(t, env, bin, "queue", "status", "--json", "--socket", socket)
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("queue status --json: %v\n%s", err, out)
		}
		return s
	}
	drained := func(done int) func() bool {
		return func() bool {
			s, err := queue.NewClient(socket).Status(context.Background())
			return err == nil && s.Done >= done && s.Pending == 0 && s.Roots == 0 && s.Spooled == 0
		}
	}
	substitutes := substitutesNow

	// 1. Builds with the hook: outputs and closures reach the cache.
	a := n.Build("a", "echo a > $out")
	b := n.Build("b", "echo $dep0 > $out", a)
	waitFor(t, "queue to upload a and b", 30*time.Second, drained(2))
	substitutes(b)

	// 2. Cache down: builds still succeed, quickly; the queue drains once
	// the cache is back.
	serve.kill(syscall.SIGTERM)
	t0 := time.Now()
	c := n.Build("c", "echo $dep0 > $out", b)
	d := n.Build("d", "echo d > $out")
	t.Logf("two builds with the cache down took %v", time.Since(t0))
	waitFor(t, "upload failures with the cache down", 20*time.Second, func() bool { return status().Failing > 0 })
	var worst time.Duration
	for range 10 {
		cmd := exec.Command(hook)
		cmd.Env = append(os.Environ(), "OUT_PATHS="+d)
		t1 := time.Now()
		if err := cmd.Run(); err != nil {
			t.Errorf("hook exited with %v", err)
		}
		worst = max(worst, time.Since(t1))
	}
	if worst > time.Second {
		t.Errorf("hook took up to %v with the cache down", worst)
	}
	t.Logf("hook with the cache down: worst of 10 runs %v", worst)
	serve = start(t, env, bin, serveArgs...)
	waitFor(t, "queue to drain after the cache returned", 30*time.Second, drained(4))
	substitutes(c, d)

	// 3. kill -9 of the queue during uploads of big paths, then restart.
	q.kill(syscall.SIGKILL)
	var bigs []string
	for i := range 3 {
		bigs = append(bigs, n.Build(fmt.Sprintf("big%d", i), "/usr/bin/head -c 40000000 /dev/urandom > $out"))
	}
	spooled, _ := filepath.Glob(filepath.Join(queue.SpoolDir(socket), "*.json"))
	if len(spooled) != 3 {
		t.Errorf("spool holds %d files after 3 builds with the queue down, want 3", len(spooled))
	}
	q = start(t, env, bin, queueArgs...)
	inflight := false
	waitFor(t, "an upload in flight", 30*time.Second, func() bool {
		s, err := queue.NewClient(socket).Status(context.Background())
		inflight = err == nil && s.InFlight > 0
		return inflight || err == nil && s.Done >= 7
	})
	q.kill(syscall.SIGKILL)
	t.Logf("killed the queue with an upload in flight: %v", inflight)
	q = start(t, env, bin, queueArgs...)
	waitFor(t, "queue to finish after kill -9 and restart", 60*time.Second, drained(7))
	if s := status(); s.Failed != 0 || s.Failing != 0 {
		t.Errorf("status after restart: %+v", s)
	}
	substitutes(bigs...)
}
