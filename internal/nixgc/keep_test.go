package nixgc_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/silo-cache/silo/internal/nixgc"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
)

// TestKeepDerivationsAndOutputs builds a derivation with the real Nix and
// compares the dead paths both collectors find with a root on the output
// or on the derivation, for every keep-derivations / keep-outputs setting.
func TestKeepDerivationsAndOutputs(t *testing.T) {
	ctx := context.Background()
	ts := storetest.NewIn(t, true, true)
	expr := fmt.Sprintf(`derivation { name = "kept"; system = builtins.currentSystem; builder = "/bin/sh"; nonce = %q; args = ["-c" "echo hi > $out"]; }`, ts.Root)
	drvOut, _ := ts.Run("nix-instantiate", "--expr", expr)
	drv := strings.TrimSpace(drvOut)
	outOut, _ := ts.Run("nix-store", "--realise", drv)
	out := strings.TrimSpace(outOut)
	root := filepath.Join(ts.Opts.StateDir, "gcroots", "r")
	for _, target := range []string{out, drv} {
		os.Remove(root)
		if err := nixstore.MakeSymlink(root, target); err != nil {
			t.Fatal(err)
		}
		for _, kd := range []bool{false, true} {
			for _, ko := range []bool{false, true} {
				name := fmt.Sprintf("root %s, keep-derivations %v, keep-outputs %v", filepath.Base(target), kd, ko)
				nix, _ := ts.Run("nix-store", "--gc", "--print-dead",
					"--option", "keep-derivations", fmt.Sprint(kd), "--option", "keep-outputs", fmt.Sprint(ko))
				res, err := nixgc.CollectGarbage(ctx, ts.Store, nixgc.Options{Action: nixgc.ReturnDead, MaxFreed: nixgc.Unlimited, KeepDerivations: kd, KeepOutputs: ko})
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(lines(nix), res.Paths); d != "" {
					t.Errorf("%s: dead paths differ (-Nix +silo):\n%s", name, d)
				}
			}
		}
	}
}
