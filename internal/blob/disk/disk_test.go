package disk

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/blob/blobtest"
)

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestLayout(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w, _ := s.Create(ctx)
	w.Write([]byte("hello"))
	if err := w.Commit(ctx, "nar/0abcdef.nar.zst"); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(s.Root(), "nar", "0a", "0abcdef.nar.zst")
	if data, err := os.ReadFile(want); err != nil || string(data) != "hello" {
		t.Errorf("blob not at %s: %q, %v", want, data, err)
	}
}

// A writer that crashed leaves a file only in .tmp, which no key reaches
// and CleanTemp removes.
func TestCleanTemp(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w, _ := s.Create(ctx)
	w.Write([]byte("partial"))
	// Simulate a crash: never commit or abort.
	old, _ := s.Create(ctx)
	old.Write([]byte("old"))
	oldName := old.(*writer).f.Name()
	past := time.Now().Add(-2 * time.Hour)
	os.Chtimes(oldName, past, past)

	if n, err := s.CleanTemp(time.Hour); err != nil || n != 1 {
		t.Errorf("CleanTemp(1h) = %d, %v; want 1 removed", n, err)
	}
	if _, err := os.Stat(oldName); !os.IsNotExist(err) {
		t.Errorf("old temp file survived CleanTemp")
	}
	if n, err := s.CleanTemp(0); err != nil || n != 1 {
		t.Errorf("CleanTemp(0) = %d, %v; want 1 removed", n, err)
	}
	err = s.List(ctx, "", func(i blob.Info) error { t.Errorf("temp file listed as %q", i.Key); return nil })
	if err != nil {
		t.Fatal(err)
	}
}

// Blobs hold private caches' NARs and logs: whatever the umask, every
// directory and file the store creates is its owner's only.
func TestFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	root := filepath.Join(t.TempDir(), "blobs")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w, _ := s.Create(ctx)
	w.Write([]byte("private"))
	if err := w.Commit(ctx, "nar/abcdef.nar.zst"); err != nil {
		t.Fatal(err)
	}
	pending, _ := s.Create(ctx) // a file in .tmp
	defer pending.Abort()
	n := 0
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v under umask 0; want no access for group and others", p, fi.Mode().Perm())
		}
		n++
		return nil
	})
	if n < 5 {
		t.Errorf("walked only %d entries", n)
	}
}
