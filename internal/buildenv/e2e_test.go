package buildenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/derivation"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/sandbox"
	"github.com/silo-cache/silo/internal/storepath"
)

// TestMain lets the test binary be the sandbox's init step.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == sandbox.InitCommand {
		sandbox.Init(os.Args[2:])
	}
	os.Exit(m.Run())
}

// goldenStore serves internal/derivation's golden .drv files and the path
// infos the real Nix reported for build.nix's paths.
type goldenStore struct {
	t     *testing.T
	infos map[storepath.Path]*derivation.PathInfo
}

const goldenDir = "../derivation/testdata"

func newGoldenStore(t *testing.T) *goldenStore {
	data, err := os.ReadFile(goldenDir + "/built/pathinfo.json")
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
	s := &goldenStore{t: t, infos: map[storepath.Path]*derivation.PathInfo{}}
	for _, i := range infos {
		h, err := hash.Parse(i.NarHash)
		if err != nil {
			t.Fatal(err)
		}
		info := &derivation.PathInfo{Path: mustParse(t, i.Path), NarHash: h, NarSize: i.NarSize, CA: i.CA}
		for _, r := range i.References {
			info.References = append(info.References, mustParse(t, r))
		}
		s.infos[info.Path] = info
	}
	return s
}

func mustParse(t *testing.T, p string) storepath.Path {
	sp, err := storepath.DefaultDir.Parse(p)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func (s *goldenStore) ReadDerivation(ctx context.Context, p storepath.Path) (*derivation.Derivation, error) {
	data, err := os.ReadFile(filepath.Join(goldenDir, "drv", p.Base()))
	if err != nil {
		return nil, err
	}
	return derivation.Read(p, data, derivation.Features{CADerivations: true})
}

func (s *goldenStore) PathInfo(ctx context.Context, p storepath.Path) (*derivation.PathInfo, error) {
	if i, ok := s.infos[p]; ok {
		return i, nil
	}
	return nil, fmt.Errorf("path '%s' is not valid", p)
}

// TestBuildLikeNix builds build.nix's derivations (dep, dep2, plain-built,
// structured-built) with silo's pieces: derivation to read them, buildenv
// for the environment and build directory, sandbox to run the builder as
// a build user. The outputs must be what the real Nix built from the same
// .drv files: the same NAR hashes, the same files.
func TestBuildLikeNix(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but this test needs root")
		}
		t.Skip("needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := newGoldenStore(t)
	base, err := os.MkdirTemp("", "silo-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { exec.Command("chmod", "-R", "u+w", base).Run(); os.RemoveAll(base) }()
	os.Chmod(base, 0o755)
	store := filepath.Join(base, "store")
	os.Mkdir(store, 0o755)
	pool := newBuildUsers(t, base)
	u, err := pool.Acquire(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Release()

	// The one source: builtins.toFile "src.txt" "source file\n".
	src := "/nix/store/9kd0xc7sympdzgidl52g6j4zz5zbvx67-src.txt"
	if err := os.WriteFile(filepath.Join(store, filepath.Base(src)), []byte("source file\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	byName := map[string]storepath.Path{}
	ents, _ := os.ReadDir(goldenDir + "/drv")
	for _, e := range ents {
		p := mustParse(t, "/nix/store/"+e.Name())
		name, _ := derivation.NameFromPath(p)
		byName[name] = p
	}
	built := map[storepath.Path]string{} // output path -> host path
	for _, name := range []string{"dep", "dep2", "plain-built", "structured-built"} {
		drvPath := byName[name]
		d, err := s.ReadDerivation(ctx, drvPath)
		if err != nil {
			t.Fatal(err)
		}
		// The input closure: sources and input outputs, with references.
		var roots []storepath.Path
		roots = append(roots, d.InputSrcs...)
		for in, outs := range d.InputDrvs {
			id, err := s.ReadDerivation(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range outs {
				p, _, _ := id.OutputPath(o)
				roots = append(roots, p)
			}
		}
		closure, err := derivation.Closure(ctx, s, roots)
		if err != nil {
			t.Fatal(err)
		}
		inputs := map[storepath.Path]bool{}
		var inputList []string
		for _, p := range closure {
			inputs[p] = true
			inputList = append(inputList, p.String())
		}
		a, err := derivation.NewAttrs(drvPath, d)
		if err != nil {
			t.Fatal(err)
		}
		rewrites := map[string]string{}
		var outputs []string
		for _, o := range d.OutputNames() {
			p, _, _ := d.OutputPath(o)
			rewrites[derivation.HashPlaceholder(o)] = p.String()
			outputs = append(outputs, p.String())
		}
		dir, err := MakeBuildDir(base, drvPath, u.UID, u.GID)
		if err != nil {
			t.Fatal(err)
		}
		env, err := Prepare(ctx, drvPath, d, a, Options{BuildDir: dir, SandboxBuildDir: "/build", Cores: 4,
			Rewrites: rewrites, Store: s, InputPaths: inputs, UID: u.UID, GID: u.GID})
		if err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		res, err := sandbox.Run(ctx, sandbox.Spec{
			Name: drvPath.Base(), Builder: d.Builder, Args: Args(d, rewrites), Env: env,
			BuildDir: dir, Sandboxed: true, StoreDir: storepath.DefaultDir, RealStoreDir: store,
			Inputs: inputList, Paths: sandbox.ParsePaths([]string{"/bin", "/lib", "/lib64?", "/usr"}),
			Outputs: outputs, User: u, Platform: d.Platform, Log: &log,
		})
		if err != nil || !res.Success() {
			t.Fatalf("build %s: %+v %v\n%s", name, res, err, log.String())
		}
		for _, o := range outputs {
			built[mustParse(t, o)] = filepath.Join(store, filepath.Base(o))
		}
	}
	// Same NAR hashes as Nix's outputs.
	compared := 0
	for p, host := range built {
		info, ok := s.infos[p]
		if !ok {
			continue // structured-built: compared file by file below
		}
		h, _, err := nar.HashPath(ctx, host)
		if err != nil {
			t.Fatal(err)
		}
		if h != info.NarHash {
			t.Errorf("%s: NAR hash %s, Nix's build has %s", p, h, info.NarHash)
		}
		compared++
	}
	if compared != 3 {
		t.Errorf("compared %d outputs with Nix's, want 3 (dep, dep2, plain-built)", compared)
	}
	for out, golden := range map[string]string{"structured-built": "structured", "plain-built": "plain"} {
		d, _ := s.ReadDerivation(ctx, byName[out])
		p, _, _ := d.OutputPath("out")
		gents, _ := os.ReadDir(filepath.Join(goldenDir, "built", golden))
		for _, e := range gents {
			want, _ := os.ReadFile(filepath.Join(goldenDir, "built", golden, e.Name()))
			got, err := os.ReadFile(filepath.Join(built[p], e.Name()))
			if err != nil {
				t.Errorf("%s: %v", out, err)
				continue
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s/%s differs from Nix's build (-nix +silo):\n%s", out, e.Name(), diff)
			}
		}
	}
}

// newBuildUsers creates a build-users group with one member for the test.
func newBuildUsers(t *testing.T, base string) *sandbox.Pool {
	b := make([]byte, 4)
	rand.Read(b)
	group := "siloe" + hex.EncodeToString(b)
	user := group + "-0"
	for _, args := range [][]string{
		{"groupadd", "-r", group},
		{"useradd", "-r", "-M", "-N", "-g", "nogroup", "-G", group, "-s", "/usr/sbin/nologin", "-d", "/var/empty", user},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("userdel", user).Run()
		exec.Command("groupdel", group).Run()
	})
	state := filepath.Join(base, "state")
	os.MkdirAll(state, 0o755)
	return &sandbox.Pool{Group: group, StateDir: state}
}
