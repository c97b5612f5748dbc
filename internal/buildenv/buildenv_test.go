package buildenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/derivation"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/storepath"
)

// store serves testdata/drv and testdata/pathinfo.json.
type store struct {
	t     *testing.T
	infos map[storepath.Path]*derivation.PathInfo
}

func newStore(t *testing.T) *store {
	data, err := os.ReadFile("testdata/pathinfo.json")
	if err != nil {
		t.Fatal(err)
	}
	var infos []struct {
		Path       string   `json:"path"`
		NarHash    string   `json:"narHash"`
		NarSize    uint64   `json:"narSize"`
		References []string `json:"references"`
		CA         string   `json:"ca"`
	}
	if err := json.Unmarshal(data, &infos); err != nil {
		t.Fatal(err)
	}
	s := &store{t: t, infos: map[storepath.Path]*derivation.PathInfo{}}
	for _, i := range infos {
		h, err := hash.Parse(i.NarHash)
		if err != nil {
			t.Fatal(err)
		}
		info := &derivation.PathInfo{Path: s.path(i.Path), NarHash: h, NarSize: i.NarSize, CA: i.CA}
		for _, r := range i.References {
			info.References = append(info.References, s.path(r))
		}
		s.infos[info.Path] = info
	}
	return s
}

func (s *store) path(p string) storepath.Path {
	sp, err := storepath.DefaultDir.Parse(p)
	if err != nil {
		s.t.Fatal(err)
	}
	return sp
}

func (s *store) ReadDerivation(ctx context.Context, p storepath.Path) (*derivation.Derivation, error) {
	data, err := os.ReadFile(filepath.Join("testdata/drv", p.Base()))
	if err != nil {
		return nil, err
	}
	return derivation.Read(p, data, derivation.Features{})
}

func (s *store) PathInfo(ctx context.Context, p storepath.Path) (*derivation.PathInfo, error) {
	if i, ok := s.infos[p]; ok {
		return i, nil
	}
	return nil, fmt.Errorf("path '%s' is not valid", p)
}

// TestMatchesNix prepares each derivation of env.nix and compares the
// environment with the one the real Nix gave its `env -0` builder.
func TestMatchesNix(t *testing.T) {
	s := newStore(t)
	inputs := map[storepath.Path]bool{}
	for p := range s.infos {
		inputs[p] = true
	}
	for _, c := range []string{"plain", "structured", "fixed"} {
		t.Run(c, func(t *testing.T) {
			b, err := os.ReadFile("testdata/" + c + ".drvpath")
			if err != nil {
				t.Fatal(err)
			}
			drvPath := s.path(strings.TrimSpace(string(b)))
			d, err := s.ReadDerivation(context.Background(), drvPath)
			if err != nil {
				t.Fatal(err)
			}
			a, err := derivation.NewAttrs(drvPath, d)
			if err != nil {
				t.Fatal(err)
			}
			rewrites := map[string]string{}
			for _, out := range d.OutputNames() {
				p, _, _ := d.OutputPath(out)
				rewrites[derivation.HashPlaceholder(out)] = p.String()
			}
			dir := t.TempDir()
			env, err := Prepare(context.Background(), drvPath, d, a, Options{
				BuildDir: dir, SandboxBuildDir: "/build", Cores: 3, Rewrites: rewrites,
				Getenv: func(k string) string {
					if k == "FOO" {
						return "from-the-daemon"
					}
					return ""
				},
				Store: s, InputPaths: inputs, UID: -1, GID: -1,
			})
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile("testdata/" + c + ".env")
			if err != nil {
				t.Fatal(err)
			}
			nixDir := "/tmp/nix-build-" + drvPath.Name() + "-0"
			want := strings.Split(strings.TrimSuffix(strings.ReplaceAll(string(raw), nixDir, dir), "\x00"), "\x00")
			if diff := cmp.Diff(want, env); diff != "" {
				t.Errorf("environment differs from Nix's (-nix +silo):\n%s", diff)
			}
			switch c {
			case "plain":
				big, err := os.ReadFile(filepath.Join(dir, derivation.PassAsFileName("big")))
				if err != nil || string(big) != d.Env["big"] {
					t.Errorf("passAsFile big = %q, %v", big, err)
				}
				graph, err := os.ReadFile(filepath.Join(dir, "graph"))
				if err != nil || !strings.HasPrefix(string(graph), d.Env["exportReferencesGraph"][len("graph "):]+"\n\n1\n") {
					t.Errorf("graph = %q, %v", graph, err)
				}
			case "structured":
				for _, f := range []string{".attrs.json", ".attrs.sh"} {
					if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
}

func TestRewritesAndErrors(t *testing.T) {
	s := newStore(t)
	dir := storepath.DefaultDir
	d := &derivation.Derivation{Dir: dir, Name: "x", Outputs: map[string]derivation.Output{"out": {Kind: derivation.CAFloating, HashAlgo: hash.SHA256, Recursive: true}},
		InputDrvs: map[storepath.Path][]string{}, Builder: "/bin/sh", Args: []string{"-c", "echo " + derivation.HashPlaceholder("out")},
		Env: map[string]string{"out": derivation.HashPlaceholder("out"), "passAsFile": "f", "f": "at " + derivation.HashPlaceholder("out")}}
	drvPath := s.path("/nix/store/00000000000000000000000000000000-x.drv")
	a, err := derivation.NewAttrs(drvPath, d)
	if err != nil {
		t.Fatal(err)
	}
	scratch := "/nix/store/11111111111111111111111111111111-x"
	rw := map[string]string{derivation.HashPlaceholder("out"): scratch}
	bd := t.TempDir()
	env, err := Prepare(context.Background(), drvPath, d, a, Options{BuildDir: bd, SandboxBuildDir: "/build", Rewrites: rw, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !contains(env, "out="+scratch) {
		t.Errorf("placeholder not rewritten in the environment: %q", env)
	}
	if got := Args(d, rw); got[1] != "echo "+scratch {
		t.Errorf("Args = %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(bd, derivation.PassAsFileName("f"))); string(b) != "at "+scratch {
		t.Errorf("passAsFile contents not rewritten: %q", b)
	}
	// A second Prepare into the same directory refuses to overwrite.
	if _, err := Prepare(context.Background(), drvPath, d, a, Options{BuildDir: bd, SandboxBuildDir: "/build", UID: -1, GID: -1}); err == nil {
		t.Error("Prepare overwrote an existing file in the build directory")
	}
	d.Env["exportReferencesGraph"] = "g /nix/store/7gks6vfcpryrwwxry5jk2rl4m5p7nn5h-dep"
	delete(d.Env, "passAsFile")
	a, _ = derivation.NewAttrs(drvPath, d)
	if _, err := Prepare(context.Background(), drvPath, d, a, Options{BuildDir: t.TempDir(), SandboxBuildDir: "/build", Store: s, UID: -1, GID: -1}); err == nil ||
		!strings.Contains(err.Error(), "because it is not in the input closure of the derivation") {
		t.Errorf("graph of a path outside the inputs: %v", err)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestMakeBuildDir(t *testing.T) {
	root := t.TempDir()
	p := storepath.Path{}
	var err error
	if p, err = storepath.DefaultDir.Parse("/nix/store/00000000000000000000000000000000-x.drv"); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"nix-build-x.drv-0", "nix-build-x.drv-1"} {
		d, err := MakeBuildDir(root, p, -1, -1)
		if err != nil || d != filepath.Join(root, want) {
			t.Fatalf("MakeBuildDir #%d = %s, %v", i, d, err)
		}
		if st, _ := os.Stat(d); st.Mode().Perm() != 0o700 {
			t.Errorf("mode %v", st.Mode())
		}
	}
}
