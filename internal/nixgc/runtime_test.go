package nixgc_test

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"testing"

	"github.com/silo-cache/silo/internal/nixgc"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
)

// TestRuntimeRoots: a running process whose working directory is in a
// store path keeps that path (and what it refers to) alive, as for Nix;
// once it exits, the path is garbage.
func TestRuntimeRoots(t *testing.T) {
	ctx := context.Background()
	ts := storetest.NewIn(t, false, true)
	adder := ts.Open(ts.Opts)
	dep := storetest.AddText(t, adder, "dep", "dep")
	tree := storetest.AddTree(t, adder, storetest.MakeTree(t, t.TempDir(), "t"), "running", dep)
	adder.Close()
	cmd := exec.Command("sleep", "60")
	cmd.Dir = ts.Store.RealPath(tree)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	roots, err := nixgc.FindRoots(ctx, ts.Store, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("/proc/%d/cwd", cmd.Process.Pid); !slices.Contains(roots[tree], want) {
		t.Errorf("roots of %s: %v, want %s", tree, roots[tree], want)
	}
	if censored, _ := nixgc.FindRoots(ctx, ts.Store, true); !slices.Equal(censored[tree], []string{nixgc.Censored}) {
		t.Errorf("censored roots: %v", censored[tree])
	}
	res, err := nixgc.CollectGarbage(ctx, ts.Store, nixgc.Options{Action: nixgc.DeleteDead, MaxFreed: nixgc.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(res.Paths, tree.String()) || slices.Contains(res.Paths, dep.String()) {
		t.Fatalf("collected a running program's directory or its reference: %v", res.Paths)
	}
	cmd.Process.Kill()
	cmd.Wait()
	res, err = nixgc.CollectGarbage(ctx, ts.Store, nixgc.Options{Action: nixgc.DeleteDead, MaxFreed: nixgc.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Paths, tree.String()) || !slices.Contains(res.Paths, dep.String()) {
		t.Errorf("after the program exited, deleted %v", res.Paths)
	}
}
