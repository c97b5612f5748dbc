package localstore

import (
	"context"
	"testing"

	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/storepath"
)

// A DB kept open across Nix processes that come and go keeps reading what
// they write. (Nix's last connection deletes db.sqlite-wal and -shm on
// close; a connection this process kept idle once read the database as
// "malformed" from then on, hence no idle connections. That interleaving
// shows only under the full suite — `go test -count=1 -p 2
// ./internal/publish ./internal/push` failed every time with idle
// connections — not in this simpler sequence.)
func TestDBOutlivesNixProcesses(t *testing.T) {
	n := nixtest.Require(t)
	ctx := context.Background()
	first, err := storepath.DefaultDir.Parse(n.Build("outlive-0", "echo 0 > $out"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := OpenDB(storepath.DefaultDir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 6; i++ {
		if _, err := db.QueryPathInfo(ctx, first); err != nil {
			t.Fatalf("round %d, query %s: %v", i, first, err)
		}
		// Each build is a Nix process that opens, writes and closes the DB.
		p, err := storepath.DefaultDir.Parse(n.Build("outlive", "echo $RANDOM > $out"))
		if err != nil {
			t.Fatal(err)
		}
		n.Run("nix", "path-info", p.String())
		if _, err := db.QueryPathInfo(ctx, p); err != nil {
			t.Fatalf("round %d, query the path just built %s: %v", i, p, err)
		}
	}
}
