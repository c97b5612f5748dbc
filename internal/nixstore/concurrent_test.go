package nixstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/silo-cache/silo/internal/nixstore/storetest"
)

// TestConcurrentWithNix: silo and the real Nix add paths to one store at
// the same time (SQLite busy waits and retries on both sides); every path
// either added is valid afterwards and the store verifies.
func TestConcurrentWithNix(t *testing.T) {
	ctx := context.Background()
	ts := storetest.New(t, true)
	src := t.TempDir()
	var files []string
	for i := 0; i < 15; i++ {
		f := filepath.Join(src, fmt.Sprint("nix-", i))
		os.WriteFile(f, []byte(fmt.Sprint("added by Nix ", i)), 0o644)
		files = append(files, f)
	}
	var wg sync.WaitGroup
	var nixOut string
	var nixErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		var errOut string
		nixOut, errOut, nixErr = ts.Try("nix-store", append([]string{"--add"}, files...)...)
		if nixErr != nil {
			nixErr = fmt.Errorf("%v: %s", nixErr, errOut)
		}
	}()
	var siloPaths []string
	for i := 0; i < 100; i++ {
		p := storetest.AddText(t, ts.Store, fmt.Sprint("silo-", i), fmt.Sprint("added by silo ", i))
		siloPaths = append(siloPaths, p.String())
	}
	wg.Wait()
	if nixErr != nil {
		t.Fatal(nixErr)
	}
	for _, p := range append(siloPaths, strings.Fields(nixOut)...) {
		sp, err := ts.Store.ParsePath(p)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := ts.Store.IsValid(ctx, sp); !ok || err != nil {
			t.Errorf("%s not valid: %v", p, err)
		}
	}
	if n := len(strings.Fields(nixOut)); n != len(files) {
		t.Errorf("Nix added %d paths, want %d", n, len(files))
	}
	ts.Run("nix-store", "--verify", "--check-contents")
}
