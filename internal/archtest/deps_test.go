// Package archtest holds tests of the architecture itself: which package
// may import which. ARCHITECTURE.md states the rules these tests enforce.
package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/silo-cache/silo/"

type pkg struct {
	ImportPath string
	Imports    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		p.ImportPath = strings.TrimPrefix(p.ImportPath, module)
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// formats are Nix's own formats: they are on the security path and must stay
// free of servers, storage and the command line.
var formats = map[string]bool{
	"internal/nix32": true, "internal/hash": true, "internal/storepath": true,
	"internal/nar": true, "internal/narinfo": true, "internal/signature": true,
	"internal/refscan": true, "internal/nixjson": true, "internal/derivation": true,
}

func TestDependencyDirections(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			imp = strings.TrimPrefix(imp, module)
			switch {
			case formats[p.ImportPath] && !formats[imp]:
				t.Errorf("%s imports %s: a format package may import only other format packages", p.ImportPath, imp)
			case imp == "internal/cli" && p.ImportPath != "cmd/silo":
				t.Errorf("%s imports internal/cli: only cmd/silo wires the command line", p.ImportPath)
			case strings.HasSuffix(imp, "test") && !strings.HasSuffix(p.ImportPath, "test") && imp != "internal/archtest":
				// blobtest, metatest, nixtest are for tests only.
				t.Errorf("%s imports test-support package %s outside tests", p.ImportPath, imp)
			case strings.HasPrefix(imp, "internal/meta/") && !strings.HasSuffix(imp, "test") &&
				p.ImportPath != "internal/cli" && !strings.HasPrefix(p.ImportPath, "internal/meta"):
				t.Errorf("%s imports storage implementation %s: only cli chooses implementations; use the meta interface", p.ImportPath, imp)
			case strings.HasPrefix(imp, "internal/blob/") && !strings.HasSuffix(imp, "test") &&
				p.ImportPath != "internal/cli" && !strings.HasPrefix(p.ImportPath, "internal/blob"):
				t.Errorf("%s imports storage implementation %s: only cli chooses implementations; use the blob interface", p.ImportPath, imp)
			}
		}
	}
}

// TestMainOnlyWires keeps cmd/silo to wiring: it may import only cli.
func TestMainOnlyWires(t *testing.T) {
	for _, p := range listPackages(t) {
		if p.ImportPath != "cmd/silo" {
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module) && imp != module+"internal/cli" {
				t.Errorf("cmd/silo imports %s; put that in a package under internal/ and wire it through cli", imp)
			}
		}
	}
}
