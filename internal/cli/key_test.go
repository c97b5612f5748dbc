package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/signature"
)

func runKey(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	code = Main(context.Background(), args, env)
	return code, out.String(), errb.String()
}

func TestKeyGenerate(t *testing.T) {
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "sec"), filepath.Join(dir, "pub")
	code, out, errOut := runKey(t, "", "key", "generate", "cache.example.org-1", "--secret", sec, "--public", pub)
	if code != 0 || out != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for file, mode := range map[string]os.FileMode{sec: 0o600, pub: 0o644} {
		st, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", file, st.Mode().Perm(), mode)
		}
	}
	k, err := signature.LoadSecretKeyFile(sec)
	if err != nil {
		t.Fatal(err)
	}
	pubText, _ := os.ReadFile(pub)
	if k.Name() != "cache.example.org-1" || string(pubText) != k.Public().String()+"\n" {
		t.Errorf("key %s, public file %q", k.Name(), pubText)
	}

	// key public, from the file and from stdin.
	secText, _ := os.ReadFile(sec)
	for _, args := range [][]string{{"key", "public", "--secret", sec}, {"key", "public"}} {
		code, out, errOut := runKey(t, string(secText), args...)
		if code != 0 || out != string(pubText) {
			t.Errorf("%v: exit %d, stdout %q (want %q), stderr %q", args, code, out, pubText, errOut)
		}
	}

	// Existing files are kept unless --force.
	code, _, errOut = runKey(t, "", "key", "generate", "other-1", "--secret", filepath.Join(dir, "new"), "--public", pub)
	if code != 1 || !strings.Contains(errOut, pub) || !strings.Contains(errOut, "--force") {
		t.Errorf("overwriting public: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !os.IsNotExist(err) {
		t.Errorf("a refused generate left a secret key behind: %v", err)
	}
	code, _, errOut = runKey(t, "", "key", "generate", "other-1", "--secret", sec)
	if again, _ := os.ReadFile(sec); code != 1 || !bytes.Equal(again, secText) {
		t.Errorf("overwriting secret: exit %d, stderr %q, file changed %v", code, errOut, !bytes.Equal(again, secText))
	}
	os.Chmod(sec, 0o644)
	code, out, errOut = runKey(t, "", "key", "generate", "other-1", "--secret", sec, "--force")
	if code != 0 {
		t.Fatalf("--force: exit %d, stderr %q", code, errOut)
	}
	k2, err := signature.LoadSecretKeyFile(sec)
	if err != nil || k2.Name() != "other-1" || out != k2.Public().String()+"\n" {
		t.Errorf("--force: key %v, %v; stdout %q", k2.Name(), err, out)
	}
	if st, _ := os.Stat(sec); st.Mode().Perm() != 0o600 {
		t.Errorf("--force left mode %v on the secret key", st.Mode().Perm())
	}
}

func TestKeyErrors(t *testing.T) {
	dir := t.TempDir()
	sec := filepath.Join(dir, "sec")
	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"no name", "", []string{"key", "generate", "--secret", sec}, 2, "NAME"},
		{"no secret", "", []string{"key", "generate", "k-1"}, 2, "--secret"},
		{"bad name", "", []string{"key", "generate", "a:b", "--secret", sec}, 2, "':'"},
		{"same files", "", []string{"key", "generate", "k-1", "--secret", sec, "--public", sec}, 2, "same file"},
		{"missing dir", "", []string{"key", "generate", "k-1", "--secret", filepath.Join(dir, "no", "sec")}, 1, "no such file"},
		{"public: missing file", "", []string{"key", "public", "--secret", filepath.Join(dir, "none")}, 1, "silo key generate"},
		{"public: garbage stdin", "hello", []string{"key", "public"}, 1, "stdin"},
		{"public: public key on stdin", "k-1:25K+uops/ty81XCzxxKiUt7O4v0b4XqUTk/minNHVBU=", []string{"key", "public"}, 1, "32 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runKey(t, tt.stdin, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d (want %d), stderr %q (want %q in it)", code, tt.code, errOut, tt.want)
			}
		})
	}
}

// TestKeyWithNix: Nix signs with a key silo generated and verifies with its
// public key; silo reads a key Nix generated.
func TestKeyWithNix(t *testing.T) {
	n := nixtest.Require(t)
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "sec"), filepath.Join(dir, "pub")
	if code, _, errOut := runKey(t, "", "key", "generate", "silo-cli-test-1", "--secret", sec, "--public", pub); code != 0 {
		t.Fatal(errOut)
	}
	path := n.Build("key-test", "echo hi > $out")
	n.Run("nix", "store", "sign", "--key-file", sec, path)
	pubText, _ := os.ReadFile(pub)
	n.Run("nix", "store", "verify", "--no-contents", "--sigs-needed", "1", "--trusted-public-keys", strings.TrimSpace(string(pubText)), path)

	nixSec, nixPub := filepath.Join(dir, "nix.sec"), filepath.Join(dir, "nix.pub")
	n.Run("nix-store", "--generate-binary-cache-key", "nix-cli-test-1", nixSec, nixPub)
	code, out, errOut := runKey(t, "", "key", "public", "--secret", nixSec)
	want, _ := os.ReadFile(nixPub)
	if code != 0 || out != string(want)+"\n" {
		t.Errorf("key public of Nix's key: exit %d, %q (want %q), stderr %q", code, out, want, errOut)
	}
}
