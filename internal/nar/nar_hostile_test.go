package nar

// Attacks on Restore written by an independent security review: a restore
// that fails must clean up without following the symlinks it created, and
// symlinks from the NAR are created as symlinks, never written through.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// outsideTree makes a directory with a file that no restore may touch and
// returns the directory.
func outsideTree(t *testing.T) string {
	t.Helper()
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.MkdirAll(filepath.Join(outside, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"file", "sub/file"} {
		if err := os.WriteFile(filepath.Join(outside, f), []byte("original"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return outside
}

// A failed restore removes what it created, and the removal never follows
// a symlink the NAR made: the files a symlink points at survive.
func TestHostileFailedRestoreKeepsSymlinkTargets(t *testing.T) {
	outside := outsideTree(t)
	before := snapshot(t, outside)
	garbage := toks("garbage")
	tests := []struct {
		name string
		nar  []byte
	}{
		{"root symlink, then trailing data", append(toks(magic), append(symlink(outside), garbage...)...)},
		{"symlink entry, then a bad entry", dirOf(entry("a", symlink(outside)), entry("b/c", regular("x")))},
		{"symlink entry, then truncated", dirOf(entry("a", symlink(outside)), entry("b", regular("x")))[:200]},
		{"symlink in a subdirectory, then a bad entry", dirOf(
			entry("d", toks("(", "type", "directory", "entry", "(", "name", "l", "node", "(", "type", "symlink", "target", outside, ")", ")", ")")),
			entry("e", toks("(", "type", "fifo", ")")))},
		{"relative symlink up, then a duplicate", dirOf(entry("up", symlink("../../../../../../../../../../"+outside)), entry("up", regular("x")))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "out")
			if err := Restore(context.Background(), bytes.NewReader(tt.nar), dst); err == nil {
				t.Fatal("Restore succeeded")
			}
			if _, err := os.Lstat(dst); err == nil {
				t.Errorf("Restore left %s behind", dst)
			}
			if diff := cmp.Diff(before, snapshot(t, outside)); diff != "" {
				t.Errorf("the failed restore changed a symlink's target (-before +after):\n%s", diff)
			}
		})
	}
}

// Symlinks in a NAR are restored as symlinks with the NAR's target,
// absolute, relative or dangling, and nothing is written where they point.
func TestHostileRestoreSymlinksVerbatim(t *testing.T) {
	outside := outsideTree(t)
	before := snapshot(t, outside)
	targets := map[string]string{
		"abs":      outside,
		"absfile":  outside + "/file",
		"dangling": outside + "/nonexistent",
		"dotdot":   "../../../../../../../../../..",
		"self":     ".",
		"up":       "../" + filepath.Base(outside),
	}
	nar := dirOf(
		entry("abs", symlink(targets["abs"])),
		entry("absfile", symlink(targets["absfile"])),
		entry("dangling", symlink(targets["dangling"])),
		entry("dir", toks("(", "type", "directory", "entry", "(", "name", "f", "node", "(", "type", "regular", "contents", "inside", ")", ")", ")")),
		entry("dotdot", symlink(targets["dotdot"])),
		entry("self", symlink(targets["self"])),
		entry("up", symlink(targets["up"])),
	)
	dst := filepath.Join(t.TempDir(), "out")
	if err := Restore(context.Background(), bytes.NewReader(nar), dst); err != nil {
		t.Fatal(err)
	}
	for name, want := range targets {
		fi, err := os.Lstat(filepath.Join(dst, name))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: not restored as a symlink (%v, %v)", name, fi, err)
			continue
		}
		if got, _ := os.Readlink(filepath.Join(dst, name)); got != want {
			t.Errorf("%s -> %q, want %q", name, got, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dst, "dir", "f")); err != nil || string(b) != "inside" {
		t.Errorf("dir/f = %q, %v", b, err)
	}
	if diff := cmp.Diff(before, snapshot(t, outside)); diff != "" {
		t.Errorf("restore changed files outside its target (-before +after):\n%s", diff)
	}
}
