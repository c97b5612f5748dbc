package nixstore_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
	"github.com/silo-cache/silo/internal/storepath"
)

func inode(t *testing.T, path string) (uint64, uint64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino, uint64(st.Nlink)
}

// TestOptimise deduplicates identical files as Nix does: one inode in
// .links shared by both paths (nlink 3), contents still verifying; the
// real Nix's optimiser then finds nothing left to do, and auto-optimise
// links a new path's files as it is added.
func TestOptimise(t *testing.T) {
	ctx := context.Background()
	ts := storetest.New(t, true)
	src := storetest.MakeTree(t, t.TempDir(), "tree")
	a := storetest.AddTree(t, ts.Store, src, "a")
	b := storetest.AddTree(t, ts.Store, src, "b")
	stats, err := ts.Store.OptimiseStore(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if stats.FilesLinked != 5 { // a, run, sub/b, sub/deep/c, link
		t.Errorf("linked %d files, want 5", stats.FilesLinked)
	}
	fa, na := inode(t, filepath.Join(ts.Store.RealPath(a), "sub/deep/c"))
	fb, _ := inode(t, filepath.Join(ts.Store.RealPath(b), "sub/deep/c"))
	if fa != fb || na != 3 {
		t.Errorf("inodes %d, %d with %d links, want one inode with 3", fa, fb, na)
	}
	_, stderr := ts.Run("nix-store", "--optimise")
	if !strings.Contains(stderr, "0.00 MiB freed by hard-linking 0 files") {
		t.Errorf("Nix's optimiser found more to do: %s", stderr)
	}
	ts.Run("nix-store", "--verify", "--check-contents")
	// Directories keep their canonical mode and time after being relinked.
	var st syscall.Stat_t
	syscall.Lstat(filepath.Join(ts.Store.RealPath(b), "sub"), &st)
	if st.Mode&0o7777 != 0o555 || st.Mtim.Sec != 1 {
		t.Errorf("directory mode %o mtime %d after optimising", st.Mode&0o7777, st.Mtim.Sec)
	}

	info, err := ts.Store.AddToStoreFromDump(ctx, dumpReader(src), "c", nixstore.CAMethod{Recursive: true, Algo: hash.SHA256}, nil, nixstore.AddOptions{Optimise: true})
	if err != nil {
		t.Fatal(err)
	}
	if fc, n := inode(t, filepath.Join(ts.Store.RealPath(info.Path), "sub/deep/c")); fc != fa || n != 4 {
		t.Errorf("auto-optimised file has inode %d (%d links), want %d (4)", fc, n, fa)
	}
}

// corrupt changes a file of a store path behind the store's back.
func corrupt(t *testing.T, file string) {
	t.Helper()
	os.Chmod(filepath.Dir(file), 0o755)
	os.Chmod(file, 0o644)
	if err := os.WriteFile(file, []byte("corrupted\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(file, 0o444)
	os.Chmod(filepath.Dir(file), 0o555)
}

// TestVerify checks that a modified path and a vanished one are found as
// Nix finds them, that repair without a way to repair reports what Nix
// reports, and that RepairPath is used when given.
func TestVerify(t *testing.T) {
	ctx := context.Background()
	ts := storetest.New(t, true)
	var logs bytes.Buffer
	o := ts.Opts
	o.Log = func(_ nixstore.Verbosity, msg string) { logs.WriteString(msg + "\n") }
	s := ts.Open(o)
	src := storetest.MakeTree(t, t.TempDir(), "tree")
	p := storetest.AddTree(t, s, src, "p")
	gone := storetest.AddText(t, s, "gone", "gone")
	if errs, err := s.VerifyStore(ctx, true, false); err != nil || errs {
		t.Fatalf("a sound store: errors %v, %v\n%s", errs, err, logs.String())
	}
	corrupt(t, filepath.Join(ts.Store.RealPath(p), "a"))
	os.Remove(ts.Store.RealPath(gone))

	if _, _, err := ts.Try("nix-store", "--verify", "--check-contents"); err == nil {
		t.Error("Nix finds no error in a corrupted store")
	}
	// Nix invalidated the vanished path; make it valid again for silo.
	gone = storetest.AddText(t, s, "gone", "gone")
	os.Remove(ts.Store.RealPath(gone))
	logs.Reset()
	errs, err := s.VerifyStore(ctx, true, false)
	if err != nil || !errs {
		t.Fatalf("corrupted store: errors %v, %v", errs, err)
	}
	for _, want := range []string{
		"path '" + gone.String() + "' disappeared, removing from database...",
		"path '" + p.String() + "' was modified! expected hash",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("missing %q in:\n%s", want, logs.String())
		}
	}
	if ok, _ := s.IsValid(ctx, gone); ok {
		t.Error("a vanished path is still valid")
	}
	logs.Reset()
	if errs, _ := s.VerifyStore(ctx, true, true); !errs || !strings.Contains(logs.String(), "cannot repair path '"+p.String()+"'") {
		t.Errorf("repair without substituters: errors %v, log:\n%s", errs, logs.String())
	}

	// A repairer that restores the original contents.
	o.RepairPath = func(ctx context.Context, q storepath.Path) error {
		info, err := s.QueryPathInfo(ctx, q)
		if err != nil {
			return err
		}
		data, _ := storetest.NarOf(t, src)
		return s.AddToStoreNar(ctx, info, bytes.NewReader(data), nixstore.AddOptions{Repair: true})
	}
	r := ts.Open(o)
	if errs, err := r.VerifyStore(ctx, true, true); err != nil || errs {
		t.Errorf("repair: errors %v, %v", errs, err)
	}
	ts.Run("nix-store", "--verify", "--check-contents")
}

// TestBuildLog stores a build log that the real Nix then reads.
func TestBuildLog(t *testing.T) {
	ctx := context.Background()
	ts := storetest.New(t, true)
	drv := storetest.RandomPath(t, ts.Store.Dir(), "foo.drv")
	if err := ts.Store.AddBuildLog(ctx, drv, strings.NewReader("building foo\ndone\n")); err != nil {
		t.Fatal(err)
	}
	out, _ := ts.Run("nix-store", "--read-log", drv.String())
	if out != "building foo\ndone\n" {
		t.Errorf("Nix reads the log as %q", out)
	}
	rc, err := ts.Store.OpenBuildLog(ctx, drv)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "building foo\ndone\n" {
		t.Errorf("silo reads %q", b)
	}
	// A build log being written is what Nix reads, replacing an old one.
	w, err := ts.Store.CreateBuildLog(drv)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("rebuilt\n"))
	w.Close()
	if out, _ = ts.Run("nix-store", "--read-log", drv.String()); out != "rebuilt\n" {
		t.Errorf("Nix reads the new log as %q", out)
	}
	// A second copied log for the same derivation does not replace the first.
	ts.Store.AddBuildLog(ctx, drv, strings.NewReader("other"))
	out, _ = ts.Run("nix-store", "--read-log", drv.String())
	if out != "rebuilt\n" {
		t.Errorf("log replaced: %q", out)
	}
}
