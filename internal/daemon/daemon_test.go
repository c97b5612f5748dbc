package daemon

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// regTime matches path-info's registration time, which differs between runs.
var regTime = regexp.MustCompile(`,?"registrationTime":[0-9]+`)

func noRegTime(s string) string { return regTime.ReplaceAllString(s, "") }

// TestAddAndQuery adds content every way the client does and queries it
// back; the real nix-daemon must answer the same on an identical store,
// and the real Nix in local mode must see the same store.
func TestAddAndQuery(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "file.txt"), []byte("hello silo\n"), 0o644)
	os.MkdirAll(filepath.Join(src, "tree", "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "tree", "sub", "x"), []byte("x"), 0o755)
	os.Symlink("sub/x", filepath.Join(src, "tree", "link"))

	script := func(s *testStore) []string {
		file := strings.TrimSpace(s.run("nix-store", "--add", filepath.Join(src, "file.txt")))
		tree := strings.TrimSpace(s.run("nix-store", "--add", filepath.Join(src, "tree")))
		out := []string{file, tree,
			s.run("nix-store", "--add-fixed", "sha256", filepath.Join(src, "file.txt")),
			s.run("nix-store", "--add-fixed", "--recursive", "sha1", filepath.Join(src, "tree")),
			s.run("nix-store", "--add-fixed", "md5", filepath.Join(src, "file.txt")),
			s.run("nix", "store", "add-path", "--name", "named", filepath.Join(src, "tree")),
			s.run("nix", "store", "add-file", filepath.Join(src, "file.txt")),
			s.run("nix-store", "-q", "--hash", file),
			s.run("nix-store", "-q", "--size", tree),
			s.run("nix-instantiate", "--eval", "-E", `builtins.toFile "t.txt" "some text"`),
			s.run("nix-instantiate", "-E", `derivation { name = "d"; system = "x"; builder = "/b"; src = ./.; }`),
		}
		dep := s.build("dep", "echo dep > $out")
		top := s.build("top", "echo $dep0 > $out", dep)
		drv := strings.TrimSpace(s.run("nix-store", "-q", "--deriver", top))
		out = append(out, dep, top, drv,
			s.run("nix-store", "-q", "--references", top),
			s.run("nix-store", "-q", "--referrers", dep),
			s.run("nix-store", "-q", "--requisites", top),
			s.run("nix-store", "--check-validity", top, dep),
			noRegTime(s.run("nix", "path-info", "--json", "-r", top)),
			noRegTime(s.run("nix", "path-info", "--json", file, tree)),
			s.run("nix-store", "-q", "--outputs", drv),
			s.run("nix", "show-derivation", drv),
			s.run("nix-store", "-r", top),
			s.run("nix", "build", "--no-link", "--json", drv),
		)
		// What would be built (QueryMissing), and EnsurePath of a valid path.
		unbuilt := strings.TrimSpace(s.run("nix-instantiate", "-E", `derivation { name = "unbuilt"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo > $out"]; }`))
		_, dry, _ := s.try("nix-store", "-r", "--dry-run", unbuilt)
		_, dryTop, _ := s.try("nix-store", "-r", "--dry-run", drv)
		out = append(out, dry, dryTop,
			s.run("nix-instantiate", "--eval", "-E", `builtins.readFile (builtins.storePath "`+file+`")`),
			s.run("nix-store", "-q", "--outputs", unbuilt))
		_, errOut, err := s.try("nix-store", "--check-validity", s.store+"/00000000000000000000000000000000-nope")
		out = append(out, "invalid: "+errOut, strings.TrimSpace(s.run("nix-store", "--add", filepath.Join(src, "file.txt"))))
		if err == nil {
			t.Error("--check-validity of an invalid path succeeded")
		}
		if s.silo { // the real Nix in local mode sees the same store
			if diff := cmp.Diff(noRegTime(s.local("nix", "path-info", "--json", "--all")), noRegTime(s.run("nix", "path-info", "--json", "--all"))); diff != "" {
				t.Errorf("path-info --all: local Nix vs silo (-local +silo):\n%s", diff)
			}
			if o, e, err := s.tryCmd(s.command(false, "nix-store", "--verify", "--check-contents")); err != nil || strings.Contains(e, "error") {
				t.Errorf("nix-store --verify --check-contents (local Nix) on what silo added: %v\n%s%s", err, o, e)
			}
		}
		return out
	}
	silo, _ := compareWithNix(t, "", script)
	var infos []map[string]any
	const pathInfoR = 18
	if err := json.Unmarshal([]byte(silo[pathInfoR]), &infos); err != nil || len(infos) != 2 || !(strings.HasSuffix(infos[0]["path"].(string), "-dep") || strings.HasSuffix(infos[1]["path"].(string), "-dep")) {
		t.Errorf("path-info --json -r of top: %v %s", err, silo[pathInfoR])
	}
}
