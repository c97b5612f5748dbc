package storewatch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/storepath"
)

// TestWatchRealNix: in both modes, paths the real Nix builds or adds while
// a Watcher runs are reported once each, and paths valid before it
// started never are.
func TestWatchRealNix(t *testing.T) {
	n := nixtest.Require(t)
	for _, mode := range []string{ModeDB, ModeInotify} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			store, err := localstore.Open(ctx, storepath.DefaultDir)
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			before := n.Build("watch-before", "echo before > $out")
			w, err := New(ctx, Options{Mode: mode, Store: store})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if w.Mode() != mode {
				t.Fatalf("mode %s, want %s", w.Mode(), mode)
			}
			built := n.Build("watch-built", "echo built > $out")
			file := filepath.Join(t.TempDir(), "added-"+nixtest.Nonce())
			os.WriteFile(file, []byte(nixtest.Nonce()), 0o644)
			added := strings.TrimSpace(n.Run("nix-store", "--add", file))
			n.Build("watch-before", "echo before > $out") // a new nonce: another path; "before" itself stays old

			seen := map[string]int{}
			deadline := time.Now().Add(20 * time.Second)
			for !(seen[built] > 0 && seen[added] > 0) && time.Now().Before(deadline) {
				ps, err := w.Poll(ctx, false)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range ps {
					seen[p.String()]++
				}
				time.Sleep(100 * time.Millisecond)
			}
			ps, err := w.Poll(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ps {
				seen[p.String()]++
			}
			for _, want := range []string{built, added} {
				if seen[want] != 1 {
					t.Errorf("%s reported %d times, want once", want, seen[want])
				}
			}
			if seen[before] != 0 {
				t.Errorf("%s, valid before the watch began, was reported", before)
			}
			var drvs []string
			for p := range seen {
				if strings.HasSuffix(p, ".drv") {
					drvs = append(drvs, p)
				}
			}
			if mode == ModeDB && len(drvs) == 0 {
				t.Errorf("no derivation reported (Nix registers .drv files too): %v", seen)
			}
			for p, c := range seen {
				if c != 1 {
					t.Errorf("%s reported %d times", p, c)
				}
			}
		})
	}
}

func TestBadMode(t *testing.T) {
	if _, err := New(context.Background(), Options{Mode: "fanotify"}); err == nil || !strings.Contains(err.Error(), "want auto, db or inotify") {
		t.Errorf("bad mode: %v", err)
	}
}
