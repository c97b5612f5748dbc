package units

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/silo-cache/silo/internal/nar"
)

// TestVendorHashCurrent: nix/package.nix's vendorHash is the NAR hash of
// what `go mod vendor` writes for go.mod and go.sum (buildGoModule's
// goModules output), so the flake builds after a dependency change only
// if the hash was updated too. The build itself needs nixpkgs, which this
// machine cannot reach; this is the part of it that can be checked here.
func TestVendorHashCurrent(t *testing.T) {
	goTool := requireTool(t, "go")
	pkg, err := os.ReadFile(filepath.Join(nixDir(t), "package.nix"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`vendorHash = "([^"]+)"`).FindSubmatch(pkg)
	if m == nil {
		t.Fatal("nix/package.nix has no vendorHash")
	}
	vendor := filepath.Join(t.TempDir(), "vendor")
	cmd := exec.Command(goTool, "mod", "vendor", "-o", vendor)
	cmd.Dir = filepath.Dir(nixDir(t))
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, out)
	}
	h, _, err := nar.HashPath(context.Background(), vendor)
	if err != nil {
		t.Fatal(err)
	}
	if h.SRI() != string(m[1]) {
		t.Errorf("nix/package.nix: vendorHash = %q, but go mod vendor hashes to %q; put that in nix/package.nix", m[1], h.SRI())
	}
}
