package builtins

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/nixtest"
)

// tree lists a directory: relative path -> "dir", "file" or "-> target".
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "-> " + target
		case d.IsDir():
			out[rel] = "dir"
		default:
			out[rel] = "file"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBuildenvMatchesNix builds the same user environment with the real
// Nix's builtin:buildenv and with Buildenv and compares the trees.
func TestBuildenvMatchesNix(t *testing.T) {
	n := nixtest.Require(t)
	c := n.Build("pkg-c", `set -e; export PATH=/usr/bin:/bin; mkdir -p $out/bin $out/share/c; echo c > $out/bin/c; echo c-a > $out/bin/a; ln -s /nonexistent $out/dang; echo > $out/share/c/c.txt`)
	a := n.Build("pkg-a", `set -e; export PATH=/usr/bin:/bin; mkdir -p $out/bin $out/share/doc $out/lib $out/nix-support $out/info
echo a > $out/bin/a; echo a > $out/bin/common; echo > $out/share/doc/a.txt; echo > $out/lib/x; echo > $out/.hidden
echo "$dep0" > $out/nix-support/propagated-user-env-packages; echo > $out/log; echo > $out/manifest.json; echo > $out/info/dir; echo > $out/info/a.info`, c)
	b := n.Build("pkg-b", `set -e; export PATH=/usr/bin:/bin; mkdir -p $out/bin $out/share/doc $out/lib/sub; echo b > $out/bin/b; echo b > $out/bin/common; echo > $out/share/doc/b.txt; echo > $out/lib/sub/y`)
	d := n.Build("pkg-d", `set -e; export PATH=/usr/bin:/bin; mkdir -p $out/bin; echo d > $out/bin/d`)
	manifest := strings.TrimSpace(n.Run("nix", "eval", "--raw", "--impure", "--expr", `builtins.toFile "manifest" "[ ]"`))
	derivations := fmt.Sprintf("true 5 1 %s true 3 1 %s false 0 1 %s", a, b, d)
	expr := fmt.Sprintf(`derivation { name = "env-%s"; system = "builtin"; builder = "builtin:buildenv"; manifest = %q; derivations = %q; }`,
		nixtest.Nonce(), manifest, derivations)
	var res []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(n.Run("nix", "build", "--json", "--no-link", "--impure", "--expr", expr)), &res); err != nil || len(res) != 1 {
		t.Fatalf("nix build: %v", err)
	}
	want := tree(t, res[0].Outputs["out"])

	out := filepath.Join(t.TempDir(), "env")
	var warnings []string
	err := Buildenv(map[string]string{"out": out, "manifest": manifest, "derivations": derivations}, func(m string) { warnings = append(warnings, m) })
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, tree(t, out)); diff != "" {
		t.Errorf("user environment differs from Nix's (-nix +silo):\n%s", diff)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "skipping dangling symlink '"+out+"/dang'") {
		t.Errorf("warnings = %q", warnings)
	}
}

func TestBuildenvCollisions(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, files ...string) string {
		p := filepath.Join(dir, name)
		for _, f := range files {
			os.MkdirAll(filepath.Dir(filepath.Join(p, f)), 0o755)
			os.WriteFile(filepath.Join(p, f), []byte(name), 0o644)
		}
		return p
	}
	x, y, z := mk("x", "bin/tool"), mk("y", "bin/tool"), mk("z", "bin/tool/inner")
	err := Buildenv(map[string]string{"out": filepath.Join(dir, "o1"), "manifest": "/m", "derivations": "true 5 1 " + x + " true 5 1 " + y}, nil)
	want := fmt.Sprintf("packages '%s/bin/tool' and '%s/bin/tool' have the same priority 5; use 'nix-env --set-flag priority NUMBER INSTALLED_PKGNAME' to change the priority of one of the conflicting packages (0 being the highest priority)", y, x)
	if err == nil || err.Error() != want {
		t.Errorf("same priority: %v\nwant %s", err, want)
	}
	if err := Buildenv(map[string]string{"out": filepath.Join(dir, "o2"), "manifest": "/m", "derivations": "true 3 1 " + x + " true 4 1 " + z}, nil); err == nil ||
		!strings.Contains(err.Error(), "collision between '"+z+"/bin/tool' and non-directory '"+x+"/bin/tool'") {
		t.Errorf("file over directory: %v", err)
	}
	if err := Buildenv(map[string]string{"out": filepath.Join(dir, "o3"), "manifest": "/m", "derivations": "true 5"}, nil); err == nil {
		t.Error("malformed derivations accepted")
	}
	if err := Buildenv(map[string]string{"out": filepath.Join(dir, "o4"), "derivations": ""}, nil); err == nil || err.Error() != "attribute 'manifest' missing" {
		t.Errorf("missing manifest: %v", err)
	}
}
