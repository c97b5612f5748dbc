package nixtest

import (
	"os"
	"strings"
	"testing"
)

func TestBuildWithReference(t *testing.T) {
	n := Require(t)
	dep := n.Build("dep", "echo dep > $out")
	out := n.Build("top", "echo $dep0 > $out", dep)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(data)) != dep {
		t.Fatalf("output = %q, want %q", data, dep)
	}
	refs := n.Run("nix-store", "--query", "--references", out)
	if strings.TrimSpace(refs) != dep {
		t.Fatalf("references = %q, want %q", refs, dep)
	}
}
