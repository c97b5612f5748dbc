package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/nixtest"
)

func runWithStdin(t *testing.T, stdin []byte, args ...string) (int, []byte, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &Env{Stdin: bytes.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	code := Main(context.Background(), args, env)
	return code, out.Bytes(), errb.String()
}

// TestNarCommands runs silo's nar and hash commands beside the real Nix on
// one tree.
func TestNarCommands(t *testing.T) {
	n := nixtest.Require(t)
	tmp := t.TempDir()
	tree := filepath.Join(tmp, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	os.WriteFile(filepath.Join(tree, "sub", "file"), []byte("hello\n"), 0o644)
	os.WriteFile(filepath.Join(tree, "exec"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("sub/file", filepath.Join(tree, "link"))

	code, narBytes, stderr := runWithStdin(t, nil, "nar", "dump", tree)
	if code != 0 || !bytes.Equal(narBytes, []byte(n.Run("nix-store", "--dump", tree))) {
		t.Fatalf("silo nar dump: exit %d, %s; output differs from nix-store --dump", code, stderr)
	}

	for _, f := range []string{"sri", "nix32", "base16", "base64"} {
		nixFlag := map[string]string{"sri": "--sri", "nix32": "--base32", "base16": "--base16", "base64": "--base64"}[f]
		want := n.Run("nix", "hash", "path", nixFlag, tree)
		code, out, stderr := runWithStdin(t, nil, "hash", "path", "--format", f, tree)
		if code != 0 || string(out) != want {
			t.Errorf("silo hash path --format %s = %q (exit %d, %s), nix hash path %s = %q", f, out, code, stderr, nixFlag, want)
		}
	}
	if _, out, _ := runWithStdin(t, nil, "hash", "path", tree); string(out) != n.Run("nix", "hash", "path", tree) {
		t.Errorf("silo hash path default = %q, want nix hash path's SRI", out)
	}

	narFile := filepath.Join(tmp, "tree.nar")
	os.WriteFile(narFile, narBytes, 0o644)
	_, fromFile, _ := runWithStdin(t, nil, "nar", "ls", narFile)
	_, fromStdin, _ := runWithStdin(t, narBytes, "nar", "ls", "-")
	sp := strings.TrimSpace(n.Run("nix-store", "--add", tree))
	cache := t.TempDir()
	n.Run("nix", "copy", "--to", "file://"+cache+"?write-nar-listing=true&compression=none", sp)
	nixLs, err := os.ReadFile(filepath.Join(cache, filepath.Base(sp)[:32]+".ls"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromFile, nixLs) || !bytes.Equal(fromStdin, nixLs) {
		t.Errorf("silo nar ls: from file %q, from stdin %q; Nix's .ls %q", fromFile, fromStdin, nixLs)
	}

	restored := filepath.Join(tmp, "restored")
	if code, _, stderr := runWithStdin(t, narBytes, "nar", "restore", restored); code != 0 {
		t.Fatalf("silo nar restore: exit %d: %s", code, stderr)
	}
	if got := n.Run("nix-store", "--dump", restored); got != string(narBytes) {
		t.Errorf("restored tree dumps differently")
	}
}

func TestNarCommandErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		stdin    []byte
		args     []string
		wantCode int
		want     string
	}{
		{"dump without path", nil, []string{"nar", "dump"}, 2, "want exactly one PATH"},
		{"dump missing path", nil, []string{"nar", "dump", filepath.Join(dir, "nope")}, 1, "no such file"},
		{"bad format", nil, []string{"hash", "path", "--format", "hex2", dir}, 2, "unknown hash format"},
		{"restore existing", nil, []string{"nar", "restore", dir}, 1, "already exists"},
		{"restore garbage", []byte("garbage garbage!"), []string{"nar", "restore", filepath.Join(dir, "new")}, 1, "not a NAR"},
		{"ls garbage", []byte("garbage garbage!"), []string{"nar", "ls"}, 1, "nar ls stdin: invalid NAR"},
		{"ls missing file", nil, []string{"nar", "ls", filepath.Join(dir, "nope.nar")}, 1, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runWithStdin(t, tt.stdin, tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr, tt.wantCode, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		t.Error("failed restore left its target behind")
	}
}
