package nixgc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/storepath"
)

func openStore(t testing.TB, root string) *nixstore.Store {
	t.Helper()
	o := nixstore.DefaultOptions(storepath.DefaultDir, filepath.Join(root, "nix", "var", "nix"), filepath.Join(root, "nix", "var", "log", "nix"))
	o.RealStoreDir = filepath.Join(root, "nix", "store")
	o.FsyncMetadata = false
	o.ReservedSize = 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := nixstore.Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func addText(t testing.TB, s *nixstore.Store, name, text string, refs ...storepath.Path) storepath.Path {
	t.Helper()
	info, err := s.AddTextToStore(context.Background(), name, []byte(text), refs, nixstore.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return info.Path
}

func TestCollectGarbageBasic(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := openStore(t, root)
	dep := addText(t, s, "dep", "dep")
	live := addText(t, s, "live", "uses "+dep.String(), dep)
	dead := addText(t, s, "dead", "dead")
	deadTop := addText(t, s, "dead-top", "x "+dead.String(), dead)
	if err := nixstore.MakeSymlink(filepath.Join(s.StateDir(), "gcroots", "live"), live.String()); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.RealStoreDir(), "garbage-file"), []byte("x"), 0o644)
	// A fresh store (another connection), so this one's temp roots do not count.
	s.Close()
	s2 := openStore(t, root)
	res, err := CollectGarbage(ctx, s2, Options{Action: DeleteDead, MaxFreed: Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{dead.String(), deadTop.String(), "/nix/store/garbage-file"}
	if strings.Join(res.Paths, " ") != strings.Join(sortStrings(want), " ") {
		t.Errorf("deleted %v, want %v", res.Paths, want)
	}
	for _, p := range []storepath.Path{dep, live} {
		if ok, _ := s2.IsValid(ctx, p); !ok {
			t.Errorf("%s was collected", p)
		}
	}
}

func sortStrings(ss []string) []string {
	out := append([]string(nil), ss...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
