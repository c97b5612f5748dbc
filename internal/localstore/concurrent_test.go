package localstore

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/storepath"
)

// Nix writes its database while silo reads it: opening and querying must
// keep working while builds register paths (a busy builder pushing).
func TestDBReadsDuringBuilds(t *testing.T) {
	n := nixtest.Require(t)
	p := n.Build("concurrent-read", "echo x > $out")
	path, err := storepath.DefaultDir.Parse(p)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := n.Try("nix", "build", "--no-link", "--impure", "--expr",
					fmt.Sprintf(`derivation { name = "w%d"; system = builtins.currentSystem; builder = "/bin/sh"; nonce = %q; args = ["-c" "echo %d > $out"]; }`, i, nixtest.Nonce(), i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for i := 0; i < 150; i++ {
		db, err := OpenDB(storepath.DefaultDir, "")
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if _, err := db.QueryPathInfo(context.Background(), path); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		db.Close()
	}
}
