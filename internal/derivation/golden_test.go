package derivation

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/storepath"
)

// allFeatures parses everything in testdata (made with both experimental
// features on).
var allFeatures = Features{CADerivations: true, ImpureDerivations: true}

// goldenStore serves the .drv files of a testdata directory and the path
// infos Nix reported for the paths of build.nix (testdata/built/pathinfo.json).
type goldenStore struct {
	t     testing.TB
	dir   storepath.Dir
	files string
	infos map[storepath.Path]*PathInfo
	reads int
}

func newGoldenStore(t testing.TB, dir storepath.Dir, files string) *goldenStore {
	t.Helper()
	s := &goldenStore{t: t, dir: dir, files: files, infos: map[storepath.Path]*PathInfo{}}
	if dir != storepath.DefaultDir {
		return s // the path infos are of build.nix, built in /nix/store
	}
	data, err := os.ReadFile("testdata/built/pathinfo.json")
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
	for _, i := range infos {
		p := s.path(i.Path)
		h, err := hash.Parse(i.NarHash)
		if err != nil {
			t.Fatal(err)
		}
		info := &PathInfo{Path: p, NarHash: h, NarSize: i.NarSize, CA: i.CA}
		for _, r := range i.References {
			info.References = append(info.References, s.path(r))
		}
		s.infos[p] = info
	}
	return s
}

func (s *goldenStore) path(full string) storepath.Path {
	s.t.Helper()
	p, err := s.dir.Parse(full)
	if err != nil {
		s.t.Fatal(err)
	}
	return p
}

func (s *goldenStore) ReadDerivation(ctx context.Context, drvPath storepath.Path) (*Derivation, error) {
	s.reads++
	data, err := os.ReadFile(filepath.Join(s.files, drvPath.Base()))
	if err != nil {
		return nil, err
	}
	return Read(drvPath, data, allFeatures)
}

func (s *goldenStore) PathInfo(ctx context.Context, p storepath.Path) (*PathInfo, error) {
	if i, ok := s.infos[p]; ok {
		return i, nil
	}
	return nil, fmt.Errorf("path '%s' is not valid", p)
}

// showDerivation is one entry of `nix show-derivation` output.
type showDerivation struct {
	Outputs map[string]struct {
		Path     string `json:"path"`
		HashAlgo string `json:"hashAlgo"`
		Hash     string `json:"hash"`
	} `json:"outputs"`
	InputSrcs []string            `json:"inputSrcs"`
	InputDrvs map[string][]string `json:"inputDrvs"`
	System    string              `json:"system"`
	Builder   string              `json:"builder"`
	Args      []string            `json:"args"`
	Env       map[string]string   `json:"env"`
}

type goldenDrv struct {
	path storepath.Path
	text []byte
	drv  *Derivation
	show showDerivation
}

// goldenDrvs returns every derivation gen.sh made for store dir in files.
func goldenDrvs(t testing.TB, dir storepath.Dir, files, showFile string) []goldenDrv {
	t.Helper()
	data, err := os.ReadFile(showFile)
	if err != nil {
		t.Fatal(err)
	}
	var show map[string]showDerivation
	if err := json.Unmarshal(data, &show); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(files)
	if err != nil {
		t.Fatal(err)
	}
	var out []goldenDrv
	for _, e := range ents {
		p, err := dir.ParseBase(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		text, err := os.ReadFile(filepath.Join(files, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		d, err := Read(p, text, allFeatures)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		sd, ok := show[p.String()]
		if !ok {
			t.Fatalf("%s missing from %s", p, showFile)
		}
		out = append(out, goldenDrv{path: p, text: text, drv: d, show: sd})
	}
	if len(out) < 20 {
		t.Fatalf("only %d derivations in %s; run testdata/gen.sh", len(out), files)
	}
	return out
}

func goldenSets(t testing.TB) []struct {
	dir   storepath.Dir
	files string
	drvs  []goldenDrv
} {
	return []struct {
		dir   storepath.Dir
		files string
		drvs  []goldenDrv
	}{
		{storepath.DefaultDir, "testdata/drv", goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")},
		{"/other/store", "testdata/other", goldenDrvs(t, "/other/store", "testdata/other", "testdata/other-show.json")},
	}
}

func find(t testing.TB, drvs []goldenDrv, name string) goldenDrv {
	t.Helper()
	for _, g := range drvs {
		if g.drv.Name == name {
			return g
		}
	}
	t.Fatalf("no golden derivation named %q", name)
	return goldenDrv{}
}

func paths(ps []storepath.Path) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

func join(ss []string) string { return strings.Join(ss, " ") }
