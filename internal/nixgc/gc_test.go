package nixgc_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/silo-cache/silo/internal/nixgc"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
	"github.com/silo-cache/silo/internal/storepath"
)

// graph sets up a store with live and dead paths, every kind of root and
// some debris, adding through a store that is closed afterwards (so its
// temp roots no longer count). It returns the names of the paths.
func graph(t *testing.T, ts *storetest.Store) map[string]storepath.Path {
	t.Helper()
	s := ts.Open(ts.Opts)
	p := map[string]storepath.Path{}
	p["dep"] = storetest.AddText(t, s, "dep", "dep")
	p["direct"] = storetest.AddText(t, s, "direct", "uses "+p["dep"].String(), p["dep"])
	p["indirect"] = storetest.AddText(t, s, "indirect", "indirect")
	p["profile"] = storetest.AddText(t, s, "profile", "profile")
	p["rootfile"] = storetest.AddText(t, s, "rootfile", "rootfile")
	p["dead"] = storetest.AddText(t, s, "dead", "dead")
	p["dead-user"] = storetest.AddText(t, s, "dead-user", "uses "+p["dead"].String(), p["dead"])
	p["dead-tree"] = storetest.AddTree(t, s, storetest.MakeTree(t, t.TempDir(), "t"), "dead-tree", p["dep"])
	p["self"] = storetest.AddText(t, s, "self", "self")
	s.Close()

	state := ts.Opts.StateDir
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(nixstore.MakeSymlink(filepath.Join(state, "gcroots", "direct"), p["direct"].String()))
	result := filepath.Join(ts.Root, "result")
	must(nixstore.MakeSymlink(result, p["indirect"].String()))
	must(ts.Store.AddIndirectRoot(context.Background(), result))
	must(ts.Store.AddIndirectRoot(context.Background(), filepath.Join(ts.Root, "gone")))
	must(nixstore.MakeSymlink(filepath.Join(state, "profiles", "default"), p["profile"].String()))
	must(os.WriteFile(filepath.Join(state, "gcroots", p["rootfile"].Base()), nil, 0o644))
	store := ts.Store.RealStoreDir()
	must(os.WriteFile(filepath.Join(store, p["dead"].Base()+".lock"), nil, 0o600))
	must(os.WriteFile(filepath.Join(store, p["direct"].Base()+".lock"), nil, 0o600))
	must(os.Mkdir(filepath.Join(store, "not-a-store-path"), 0o755))
	return p
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// copyStore copies a chroot store, so Nix and silo can each collect one.
func copyStore(t *testing.T, from *storetest.Store) *storetest.Store {
	t.Helper()
	to := storetest.New(t, true)
	to.Store.Close()
	os.RemoveAll(filepath.Join(to.Root, "nix"))
	if out, err := exec.Command("cp", "-a", filepath.Join(from.Root, "nix"), to.Root).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	// Links into the store's state name the old root.
	for _, l := range []string{"gcroots/profiles"} {
		path := filepath.Join(to.Opts.StateDir, l)
		os.Remove(path)
		os.Symlink(filepath.Join(to.Opts.StateDir, "profiles"), path)
	}
	to.Store = to.Open(to.Opts)
	return to
}

// TestGCMatchesNix compares silo's collector with the real Nix's on the
// same store: roots, live and dead paths, then what deleting leaves.
func TestGCMatchesNix(t *testing.T) {
	ctx := context.Background()
	ts := storetest.New(t, true)
	graph(t, ts)

	nixRoots, _ := ts.Run("nix-store", "--gc", "--print-roots")
	roots, err := nixgc.FindRoots(ctx, ts.Store, false)
	if err != nil {
		t.Fatal(err)
	}
	var siloRoots []string
	for p, links := range roots {
		for _, l := range links {
			if !strings.HasPrefix(l, "{temp:") && !strings.HasPrefix(l, "/proc/") {
				siloRoots = append(siloRoots, l+" -> "+p.String())
			}
		}
	}
	slices.Sort(siloRoots)
	if d := cmp.Diff(lines(nixRoots), siloRoots); d != "" {
		t.Errorf("roots differ (-Nix +silo):\n%s", d)
	}

	for _, a := range []struct {
		flag   string
		action nixgc.Action
	}{{"--print-dead", nixgc.ReturnDead}, {"--print-live", nixgc.ReturnLive}} {
		// Both collectors delete entries that are not store paths even
		// when only printing: put it back before each.
		debris := filepath.Join(ts.Store.RealStoreDir(), "not-a-store-path")
		os.Mkdir(debris, 0o755)
		out, _ := ts.Run("nix-store", "--gc", a.flag)
		os.Mkdir(debris, 0o755)
		res, err := nixgc.CollectGarbage(ctx, ts.Store, nixgc.Options{Action: a.action, MaxFreed: nixgc.Unlimited, KeepDerivations: true})
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(lines(out), res.Paths); d != "" {
			t.Errorf("%s differs (-Nix +silo):\n%s", a.flag, d)
		}
	}

	os.Mkdir(filepath.Join(ts.Store.RealStoreDir(), "not-a-store-path"), 0o755)
	nixCopy := copyStore(t, ts)
	nixOut, _ := nixCopy.Run("nix-store", "--gc")
	_ = nixOut
	res, err := nixgc.CollectGarbage(ctx, ts.Store, nixgc.Options{Action: nixgc.DeleteDead, MaxFreed: nixgc.Unlimited, KeepDerivations: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(nixCopy.Entries(t), ts.Entries(t)); d != "" {
		t.Errorf("after collecting, the store differs (-Nix +silo):\n%s", d)
	}
	dumpN, _ := nixCopy.Run("nix-store", "--dump-db")
	dumpS, _ := ts.Run("nix-store", "--dump-db")
	if dumpN != dumpS {
		t.Errorf("after collecting, dump-db differs:\nNix:\n%s\nsilo:\n%s", dumpN, dumpS)
	}
	if len(res.Paths) == 0 || res.BytesFreed == 0 {
		t.Errorf("silo reports deleting %v, %d bytes", res.Paths, res.BytesFreed)
	}
	ts.Run("nix-store", "--verify", "--check-contents")
	if _, err := os.Lstat(filepath.Join(ts.Opts.StateDir, "gcroots", "auto")); err == nil {
		names, _ := os.ReadDir(filepath.Join(ts.Opts.StateDir, "gcroots", "auto"))
		if len(names) != 1 {
			t.Errorf("gcroots/auto holds %d links, want 1 (the stale one removed)", len(names))
		}
	}
}

// TestDeleteSpecific deletes named paths: a dead one goes, a live one is
// refused with Nix's message.
func TestDeleteSpecific(t *testing.T) {
	ctx := context.Background()
	ts := storetest.New(t, true)
	p := graph(t, ts)
	_, err := nixgc.CollectGarbage(ctx, ts.Store, nixgc.Options{Action: nixgc.DeleteSpecific, PathsToDelete: []storepath.Path{p["dep"]}, MaxFreed: nixgc.Unlimited})
	want := fmt.Sprintf("Cannot delete path '%s' since it is still alive. To find out why, use: nix-store --query --roots", p["dep"])
	if err == nil || err.Error() != want {
		t.Errorf("deleting a live path: %v, want %q", err, want)
	}
	res, err := nixgc.CollectGarbage(ctx, ts.Store, nixgc.Options{Action: nixgc.DeleteSpecific, PathsToDelete: []storepath.Path{p["dead-user"]}, MaxFreed: nixgc.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{p["dead-user"].String()}, res.Paths); d != "" {
		t.Errorf("deleted (-want +got):\n%s", d)
	}
	// dead is referred to by dead-user no longer: Nix can delete it now.
	ts.Run("nix-store", "--delete", p["dead"].String())
	ts.Run("nix-store", "--verify", "--check-contents")
}

// TestMaxFreed stops a collection once enough is freed.
func TestMaxFreed(t *testing.T) {
	ctx := context.Background()
	ts := storetest.New(t, false)
	graph(t, ts)
	res, err := nixgc.CollectGarbage(ctx, ts.Store, nixgc.Options{Action: nixgc.DeleteDead, MaxFreed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Paths) == 0 || res.BytesFreed <= 1 {
		t.Fatalf("freed %d bytes deleting %v", res.BytesFreed, res.Paths)
	}
	all, err := nixgc.CollectGarbage(ctx, ts.Store, nixgc.Options{Action: nixgc.ReturnDead, MaxFreed: nixgc.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Paths) == 0 {
		t.Errorf("max-freed 1 deleted everything dead")
	}
}
