package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/signature"
)

func TestPublishUsage(t *testing.T) {
	tests := []struct {
		args       []string
		wantCode   int
		wantStderr string
	}{
		{[]string{"publish", "extra"}, 2, "takes no arguments"},
		{[]string{"publish", "--compression", "xz"}, 2, `--compression "xz": want none or zstd`},
		{[]string{"publish", "--store-dir", "nix/store"}, 2, "not absolute"},
		{[]string{"publish", "--priority", "0"}, 2, "want a positive number"},
		{[]string{"publish", "--signing-key-file", "/nonexistent/key"}, 1, "silo key generate"},
		{[]string{"publish", "--db", "/nonexistent/db.sqlite"}, 1, "open Nix database"},
		{[]string{"publish", "--token-data-dir", "/nonexistent"}, 1, "point it at silo serve's --data-dir"},
	}
	for _, tt := range tests {
		code, _, stderr := runCLI(t, nil, tt.args...)
		if code != tt.wantCode || !strings.Contains(stderr, tt.wantStderr) {
			t.Errorf("silo %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tt.args, " "), code, stderr, tt.wantCode, tt.wantStderr)
		}
	}
}

// TestPublishBinary runs the real silo binary as a private publisher
// (settings from SILO_* variables, a token from silo token create) and has
// the real Nix substitute a closure from it through zstd NAR URLs.
func TestPublishBinary(t *testing.T) {
	n := nixtest.Require(t)
	dep := n.Build("cli-publish-dep", `echo dep > $out`)
	top := n.Build("cli-publish-top", `echo $dep0 > $out`, dep)

	dir := t.TempDir()
	bin := filepath.Join(dir, "silo")
	build := exec.Command("go", "build", "-o", bin, "github.com/silo-cache/silo/cmd/silo")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	key, err := signature.GenerateKey("cli-publish-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key.sec")
	os.WriteFile(keyFile, []byte(key.String()+"\n"), 0o600)

	// A private store, with a token made the way silo serve's are.
	dataDir := filepath.Join(dir, "data")
	if out, err := exec.Command(bin, "init", "--data-dir", dataDir).CombinedOutput(); err != nil {
		t.Fatalf("silo init: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "token", "create", "--data-dir", dataDir, "--cache", "publish", "--pull").Output()
	if err != nil {
		t.Fatalf("silo token create: %v", err)
	}
	token := strings.TrimSpace(string(out))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "publish", "--listen", "127.0.0.1:0")
	// Settings from the environment, as a systemd unit would pass them.
	cmd.Env = append(os.Environ(), "SILO_SIGNING_KEY_FILE="+keyFile, "SILO_COMPRESSION=zstd", "SILO_TOKEN_DATA_DIR="+dataDir)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(syscall.SIGTERM)
	lines := bufio.NewScanner(stderr)
	var url string
	for lines.Scan() {
		if _, u, ok := strings.Cut(lines.Text(), " at "); ok && strings.HasPrefix(lines.Text(), "silo publish: serving") {
			url = u
			break
		}
	}
	if url == "" {
		t.Fatal("silo publish did not say where it listens")
	}
	go io.Copy(io.Discard, stderr)

	resp, err := http.Get(url + "/nix-cache-info")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("nix-cache-info without a token: %s, want 401", resp.Status)
	}
	netrc := filepath.Join(dir, "netrc")
	os.WriteFile(netrc, []byte("machine 127.0.0.1 password "+token+"\n"), 0o600)
	dst := t.TempDir()
	n.Run("nix", "copy", "--from", url, "--to", dst, "--option", "netrc-file", netrc,
		"--option", "trusted-public-keys", key.Public().String(), top)
	for _, p := range []string{dep, top} {
		if got, want := n.Run("nix-store", "--dump", filepath.Join(dst, p)), n.Run("nix-store", "--dump", p); got != want {
			t.Errorf("%s substituted from the silo binary differs from the original", p)
		}
	}

	// SIGTERM shuts the server down cleanly.
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("silo publish after SIGTERM: %v, want exit 0", err)
	}
}
