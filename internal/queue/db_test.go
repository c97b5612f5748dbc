package queue

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/storepath"
)

func info(t *testing.T, base string, refs ...*localstore.PathInfo) *localstore.PathInfo {
	p, err := storepath.DefaultDir.ParseBase(base)
	if err != nil {
		t.Fatal(err)
	}
	i := &localstore.PathInfo{Path: p, References: []storepath.Path{p}} // a self-reference, as Nix allows
	for _, r := range refs {
		i.References = append(i.References, r.Path)
	}
	return i
}

func names(ps []pending) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.path[len("/nix/store/")+33:])
	}
	return out
}

// The database alone decides order: a path is ready only when all its
// references are done; a failure fails its dependents; retry revives them.
func TestDBDependencyOrder(t *testing.T) {
	ctx := context.Background()
	d, err := openDB(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	leaf := info(t, "00000000000000000000000000000001-leaf")
	other := info(t, "00000000000000000000000000000002-other")
	mid := info(t, "00000000000000000000000000000003-mid", leaf)
	top := info(t, "00000000000000000000000000000004-top", mid, other)
	now := time.Now()

	if err := d.addRoots(ctx, []string{top.Path.String()}, "", now); err != nil {
		t.Fatal(err)
	}
	roots, err := d.dueRoots(ctx, now, 10)
	if err != nil || len(roots) != 1 {
		t.Fatalf("dueRoots = %v, %v", roots, err)
	}
	signed := func(i *localstore.PathInfo) bool { return i == other }
	added, err := d.expandRoot(ctx, roots[0].id, []*localstore.PathInfo{leaf, other, mid, top}, signed, now)
	if err != nil || added != 4 {
		t.Fatalf("expandRoot = %d, %v", added, err)
	}
	if roots, _ := d.dueRoots(ctx, now, 10); len(roots) != 0 {
		t.Errorf("root still queued after expansion: %v", roots)
	}
	// Expanding an overlapping closure adds only what is new.
	d.addRoots(ctx, []string{mid.Path.String()}, "", now)
	roots, _ = d.dueRoots(ctx, now, 10)
	if added, err := d.expandRoot(ctx, roots[0].id, []*localstore.PathInfo{leaf, mid}, signed, now); err != nil || added != 0 {
		t.Errorf("re-expanding known paths added %d, %v", added, err)
	}

	step := func(want ...string) []pending {
		t.Helper()
		got, err := d.ready(ctx, time.Now(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, names(got)); diff != "" {
			t.Fatalf("ready (-want +got):\n%s", diff)
		}
		return got
	}
	r := step("leaf") // other is done (signed upstream); mid waits for leaf
	d.markRetry(ctx, r[0].id, "cache down", time.Now().Add(time.Hour))
	step() // leaf backs off
	d.retry(ctx)
	r = step("leaf")
	d.markDone(ctx, r[0].id, "uploaded", time.Now())
	r = step("mid")
	if err := d.markFailed(ctx, r[0].id, "gone from the store"); err != nil {
		t.Fatal(err)
	}
	step()
	s, err := d.status(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if s.Failed != 2 || s.Done != 2 || s.Pending != 0 {
		t.Errorf("status after mid failed: %+v, want mid and top failed", s)
	}
	if n, err := d.retry(ctx); err != nil || n != 2 {
		t.Errorf("retry = %d, %v; want 2", n, err)
	}
	r = step("mid")
	d.markDone(ctx, r[0].id, "uploaded", time.Now())
	r = step("top")
	d.markDone(ctx, r[0].id, "present", time.Now())
	step()
	if s, _ := d.status(ctx, 10); s.Done != 4 || s.Uploaded != 2 || len(s.Failures) != 0 {
		t.Errorf("final status %+v", s)
	}
}
