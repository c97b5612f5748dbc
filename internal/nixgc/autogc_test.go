package nixgc_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixgc"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
)

// TestAutoGC: with free space (faked as Nix's tests do) below min-free,
// adding content first collects garbage, up to max-free; with enough free
// space nothing is collected.
func TestAutoGC(t *testing.T) {
	ctx := context.Background()
	ts := storetest.New(t, false)
	free := filepath.Join(t.TempDir(), "free")
	t.Setenv("_NIX_TEST_FREE_SPACE_FILE", free)
	adder := ts.Open(ts.Opts)
	for i := 0; i < 20; i++ {
		storetest.AddText(t, adder, fmt.Sprint("g", i), fmt.Sprint("garbage ", i))
	}
	adder.Close()
	open := func(ctx context.Context) (*nixstore.Store, error) { return nixstore.Open(ctx, ts.Opts) }
	auto := nixgc.NewAutoGC(ctx, ts.Store.RealStoreDir(), 1000, 1000+8, 0, open)
	o := ts.Opts
	o.AutoGC = auto.Check

	os.WriteFile(free, []byte("5000"), 0o644) // plenty
	s := ts.Open(o)
	storetest.AddText(t, s, "new", "new")
	if n := len(ts.Entries(t)); n != 21 {
		t.Fatalf("collected with enough free space: %d entries", n)
	}
	os.WriteFile(free, []byte("1000"), 0o644) // at min-free: still fine
	time.Sleep(time.Millisecond)
	storetest.AddText(t, s, "new2", "new2")
	if n := len(ts.Entries(t)); n != 22 {
		t.Fatalf("collected at min-free: %d entries", n)
	}
	os.WriteFile(free, []byte("999"), 0o644)
	p := storetest.AddText(t, s, "new3", "new3")
	if ok, _ := s.IsValid(ctx, p); !ok {
		t.Fatal("the path added after auto-GC is not valid")
	}
	n := len(ts.Entries(t))
	if n >= 23 || n <= 3 {
		t.Fatalf("after auto-GC to free 9 bytes, %d entries (want some but not all garbage gone)", n)
	}
}
