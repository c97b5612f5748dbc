package nixstore

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
)

// dumpReader streams the NAR of path.
func dumpReader(t testing.TB, path string) io.Reader {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(nar.Dump(context.Background(), pw, path)) }()
	return pr
}

// TestAddMatchesNix adds the same tree and text with silo and with the
// real Nix (each in its own store): the paths and the dump-db listings
// must be the same, and the real Nix must verify silo's store.
func TestAddMatchesNix(t *testing.T) {
	ctx := context.Background()
	silo := newTestStore(t, true)
	nixs := newTestStore(t, true)
	tree := makeTree(t, t.TempDir(), "tree")

	info, err := silo.store.AddToStoreFromDump(ctx, dumpReader(t, tree), "tree", CAMethod{Recursive: true, Algo: hash.SHA256}, nil, AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := nixs.runNix("nix-store", "--add", tree)
	want := strings.TrimSpace(out)
	if info.Path.String() != want {
		t.Errorf("silo added %s, Nix %s", info.Path, want)
	}
	silo.runNix("nix-store", "--verify", "--check-contents")
	dumpS, _ := silo.runNix("nix-store", "--dump-db")
	dumpN, _ := nixs.runNix("nix-store", "--dump-db")
	if dumpS != dumpN {
		t.Errorf("nix-store --dump-db differs:\nsilo:\n%s\nNix:\n%s", dumpS, dumpN)
	}
	outS, _ := silo.runNix("nix-store", "-q", "--hash", info.Path.String())
	if strings.TrimSpace(outS) != info.NarHash.String() {
		t.Errorf("Nix reads hash %q, silo registered %s", outS, info.NarHash)
	}
}
