package nar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nixtest"
)

// Differential tests: silo against the real Nix on generated trees.

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func putFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, data, 0o644))
	must(t, os.Chmod(path, mode)) // exactly mode, whatever the umask
}

func symlinkAt(t testing.TB, target, path string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.Symlink(target, path))
}

// makeTree builds the tree called kind at path.
func makeTree(t testing.TB, kind, path string) {
	rnd := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	switch kind {
	case "mixed":
		must(t, os.MkdirAll(filepath.Join(path, "empty-dir"), 0o755))
		putFile(t, filepath.Join(path, "file"), []byte("hello\n"), 0o644)
		putFile(t, filepath.Join(path, "empty"), nil, 0o644)
		for _, n := range []int{1, 7, 8, 9, 4095, 4096, 128<<10 - 100, 128 << 10, 300 << 10} {
			putFile(t, filepath.Join(path, "sizes", fmt.Sprintf("size-%d", n)), random(n), 0o644)
		}
		for _, m := range []os.FileMode{0o755, 0o744, 0o700, 0o654, 0o645, 0o444, 0o555, 0o600, 0o111} {
			putFile(t, filepath.Join(path, "modes", fmt.Sprintf("mode-%o", m)), []byte("#!/bin/sh\n"), m)
		}
		must(t, os.Mkdir(filepath.Join(path, "modes", "dir-700"), 0o700))
		symlinkAt(t, "/nix/store/absolute-target", filepath.Join(path, "links", "absolute"))
		symlinkAt(t, "../file", filepath.Join(path, "links", "relative"))
		symlinkAt(t, "does-not-exist", filepath.Join(path, "links", "dangling"))
		symlinkAt(t, "..", filepath.Join(path, "links", "dotdot"))
		symlinkAt(t, "sp ace/é", filepath.Join(path, "links", "odd target"))
		for _, n := range []string{"B", "a", "_x", "Z", "é", "É", "é-é", "-dash", ".hidden", "with space",
			"tab\tname", "new\nline", `quote"back\slash`, "\x7f", "bad-utf8-\xff", "~tilde", "a.b", "a-b", "a_b", "A"} {
			putFile(t, filepath.Join(path, "names", n), []byte(n), 0o644)
		}
		for i := range 2000 {
			putFile(t, filepath.Join(path, "many", fmt.Sprintf("f%04d", i)), random(i%300), 0o644)
		}
	case "deep":
		p := path
		for i := 1; i <= 100; i++ {
			p = filepath.Join(p, fmt.Sprintf("d%d", i))
		}
		putFile(t, filepath.Join(p, "bottom"), []byte("bottom\n"), 0o644)
		symlinkAt(t, strings.Repeat("../", 100), filepath.Join(p, "up"))
	case "file":
		putFile(t, path, []byte("just a file\n"), 0o644)
	case "empty-file":
		putFile(t, path, nil, 0o644)
	case "exec":
		putFile(t, path, []byte("#!/bin/sh\n"), 0o755)
	case "symlink":
		must(t, os.Symlink("/nix/store/some-target", path))
	case "relative-symlink":
		must(t, os.Symlink("../dangling", path))
	case "empty-dir":
		must(t, os.Mkdir(path, 0o755))
	default:
		t.Fatalf("unknown tree %q", kind)
	}
}

var treeKinds = []string{"mixed", "deep", "file", "empty-file", "exec", "symlink", "relative-symlink", "empty-dir"}

func dumpBytes(t testing.TB, path string) []byte {
	t.Helper()
	var b bytes.Buffer
	must(t, Dump(context.Background(), &b, path))
	return b.Bytes()
}

// firstDiff describes where a and b first differ.
func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d of %d/%d", i, len(a), len(b))
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}

// modes lists every path below root with its type and permission bits.
func modes(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, fmt.Sprintf("%s %v", rel, fi.Mode()))
		return nil
	})
	must(t, err)
	return out
}

func nixRestore(t testing.TB, n *nixtest.Nix, narBytes []byte, dir string) {
	t.Helper()
	cmd := n.Command(context.Background(), "nix-store", "--restore", dir)
	cmd.Stdin = bytes.NewReader(narBytes)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nix-store --restore %s: %v\n%s", dir, err, out)
	}
}

// nixListing returns the .ls Nix writes for the tree at path.
func nixListing(t testing.TB, n *nixtest.Nix, path string) []byte {
	t.Helper()
	sp := strings.TrimSpace(n.Run("nix-store", "--add", path))
	cache := t.TempDir()
	n.Run("nix", "copy", "--to", "file://"+cache+"?write-nar-listing=true&compression=none", sp)
	hashPart := strings.SplitN(filepath.Base(sp), "-", 2)[0]
	b, err := os.ReadFile(filepath.Join(cache, hashPart+".ls"))
	must(t, err)
	return b
}

func TestAgainstNix(t *testing.T) {
	n := nixtest.Require(t)
	ctx := context.Background()
	for _, kind := range treeKinds {
		t.Run(kind, func(t *testing.T) {
			tmp := t.TempDir()
			src := filepath.Join(tmp, kind)
			makeTree(t, kind, src)

			nixNAR := []byte(n.Run("nix-store", "--dump", src))
			siloNAR := dumpBytes(t, src)
			if !bytes.Equal(siloNAR, nixNAR) {
				t.Fatalf("Dump != nix-store --dump: %s", firstDiff(siloNAR, nixNAR))
			}

			want, err := hash.ParseAs(strings.TrimSpace(n.Run("nix", "hash", "path", "--base32", src)), hash.SHA256)
			must(t, err)
			got, size, err := HashPath(ctx, src)
			must(t, err)
			if got != want || size != uint64(len(nixNAR)) {
				t.Errorf("HashPath = %v, %d; nix hash path = %v, NAR size %d", got, size, want, len(nixNAR))
			}

			// silo restores Nix's NAR; Nix restores silo's: both dump back
			// to the same bytes and get the same modes.
			siloDir, nixDir := filepath.Join(tmp, "silo-restored"), filepath.Join(tmp, "nix-restored")
			must(t, Restore(ctx, bytes.NewReader(nixNAR), siloDir))
			nixRestore(t, n, siloNAR, nixDir)
			if b := []byte(n.Run("nix-store", "--dump", siloDir)); !bytes.Equal(b, nixNAR) {
				t.Errorf("nix-store --dump of silo's restore differs: %s", firstDiff(b, nixNAR))
			}
			if b := dumpBytes(t, nixDir); !bytes.Equal(b, nixNAR) {
				t.Errorf("Dump of nix-store --restore's tree differs: %s", firstDiff(b, nixNAR))
			}
			if diff := cmp.Diff(modes(t, nixDir), modes(t, siloDir)); diff != "" {
				t.Errorf("restored modes differ (-nix-store --restore +silo):\n%s", diff)
			}

			wantLs := nixListing(t, n, src)
			l, err := List(bytes.NewReader(siloNAR))
			must(t, err)
			gotLs, _ := l.MarshalJSON()
			if diff := cmp.Diff(string(wantLs), string(gotLs)); diff != "" {
				t.Errorf("listing differs from Nix's .ls (-nix +silo):\n%s", diff)
			}
			var streamed bytes.Buffer
			must(t, WriteListing(&streamed, bytes.NewReader(siloNAR)))
			if !bytes.Equal(streamed.Bytes(), wantLs) {
				t.Errorf("WriteListing differs from Nix's .ls")
			}
		})
	}
}

func TestDumpUnsupportedType(t *testing.T) {
	n := nixtest.Require(t)
	dir := filepath.Join(t.TempDir(), "tree")
	putFile(t, filepath.Join(dir, "a"), []byte("a"), 0o644)
	fifo := filepath.Join(dir, "sub", "fifo")
	must(t, os.MkdirAll(filepath.Dir(fifo), 0o755))
	must(t, syscall.Mkfifo(fifo, 0o644))
	if _, err := n.Try("nix-store", "--dump", dir); err == nil {
		t.Fatal("nix-store --dump accepted a FIFO; the test's premise is wrong")
	}
	err := Dump(context.Background(), io.Discard, dir)
	if err == nil || !strings.Contains(err.Error(), fifo) || !strings.Contains(err.Error(), "FIFO") {
		t.Errorf("Dump error = %v, want one naming %s as a FIFO", err, fifo)
	}
	if _, _, err := HashPath(context.Background(), dir); err == nil {
		t.Error("HashPath accepted a FIFO")
	}
}

// TestBigFile compares hashes of a tree holding a 400 MiB sparse file; it
// never holds the NAR in memory.
func TestBigFile(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 400 MiB several times; runs without -short")
	}
	n := nixtest.Require(t)
	dir := filepath.Join(t.TempDir(), "big")
	putFile(t, filepath.Join(dir, "a-small"), []byte("small"), 0o644)
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	must(t, err)
	const size = 400<<20 + 12345
	must(t, f.Truncate(size))
	for _, off := range []int64{0, 1 << 20, 200<<20 + 7, size - 5} {
		_, err := f.WriteAt([]byte("data!"), off)
		must(t, err)
	}
	must(t, f.Close())
	must(t, os.Chmod(big, 0o755))

	want, err := hash.ParseAs(strings.TrimSpace(n.Run("nix", "hash", "path", "--base32", dir)), hash.SHA256)
	must(t, err)
	got, gotSize, err := HashPath(context.Background(), dir)
	must(t, err)
	if got != want {
		t.Errorf("HashPath = %v, nix hash path = %v", got, want)
	}

	cmd := n.Command(context.Background(), "nix-store", "--dump", dir)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	nixSum := sha256.New()
	nixSize, err := io.Copy(nixSum, out)
	must(t, err)
	must(t, cmd.Wait())
	siloSum := sha256.New()
	must(t, Dump(context.Background(), siloSum, dir))
	if !bytes.Equal(nixSum.Sum(nil), siloSum.Sum(nil)) || uint64(nixSize) != gotSize {
		t.Errorf("sha256 of Dump != of nix-store --dump (%d bytes; HashPath counted %d)", nixSize, gotSize)
	}
	if !bytes.Equal(nixSum.Sum(nil), got.Bytes()) {
		t.Errorf("HashPath != sha256 of nix-store --dump")
	}
}
