package derivation

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/storepath"
)

// TestOutputPaths recomputes every input-addressed output path Nix chose
// (hashDerivationModulo through the input derivations) and checks that
// derivations depending on floating or impure ones stay deferred.
func TestOutputPaths(t *testing.T) {
	for _, set := range goldenSets(t) {
		h := NewHasher(newGoldenStore(t, set.dir, set.files))
		for _, g := range set.drvs {
			typ, err := g.drv.Type()
			if err != nil {
				t.Fatal(err)
			}
			if typ != TypeInputAddressed && typ != TypeDeferred {
				continue
			}
			t.Run(g.path.Base(), func(t *testing.T) {
				c := g.drv.Clone()
				known, err := h.FillInputAddressed(context.Background(), c)
				if err != nil {
					t.Fatal(err)
				}
				if known != (typ == TypeInputAddressed) {
					t.Fatalf("FillInputAddressed known = %v for a %v derivation", known, typ)
				}
				out, err := c.Print()
				if err != nil {
					t.Fatal(err)
				}
				if string(out) != string(g.text) {
					t.Errorf("recomputed outputs differ:\n got %s\nwant %s", out, g.text)
				}
				if err := CheckDerivationOutputs(context.Background(), h, g.path, g.drv); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

func TestCheckDerivationOutputs(t *testing.T) {
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	h := NewHasher(newGoldenStore(t, storepath.DefaultDir, "testdata/drv"))
	ctx := context.Background()
	multi := find(t, drvs, "multi")
	wrongPath := multi.drv.Clone()
	other := wrongPath.Outputs["out"]
	wrongPath.Outputs["dev"], wrongPath.Outputs["out"] = other, wrongPath.Outputs["dev"]
	err := CheckDerivationOutputs(ctx, h, multi.path, wrongPath)
	want := "derivation '" + multi.path.String() + "' has incorrect output '" + other.Path.String() + "', should be '" + multi.drv.Outputs["dev"].Path.String() + "'"
	if err == nil || err.Error() != want {
		t.Errorf("swapped outputs: %v\nwant %s", err, want)
	}
	wrongEnv := multi.drv.Clone()
	wrongEnv.Env["lib"] = "/nix/store/ys1nv2c7ac982gri0b26nxfha557671y-simple"
	err = CheckDerivationOutputs(ctx, h, multi.path, wrongEnv)
	want = "derivation '" + multi.path.String() + "' has incorrect environment variable 'lib', should be '" + multi.drv.Outputs["lib"].Path.String() + "'"
	if err == nil || err.Error() != want {
		t.Errorf("wrong env: %v\nwant %s", err, want)
	}
	fixed := find(t, drvs, "fixed-sha256-flat")
	noEnv := fixed.drv.Clone()
	delete(noEnv.Env, "out")
	if err := CheckDerivationOutputs(ctx, h, fixed.path, noEnv); err == nil || !strings.Contains(err.Error(), "has incorrect environment variable 'out'") {
		t.Errorf("fixed output without env: %v", err)
	}
	changed := find(t, drvs, "simple").drv.Clone()
	changed.Env["esc"] = "changed"
	if err := CheckDerivationOutputs(ctx, h, find(t, drvs, "simple").path, changed); err == nil || !strings.Contains(err.Error(), "has incorrect output") {
		t.Errorf("changed attribute: %v", err)
	}
}

func TestPlaceholders(t *testing.T) {
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	floating := find(t, drvs, "floating")
	for _, out := range []string{"out", "bin"} {
		if got := HashPlaceholder(out); floating.drv.Env[out] != got {
			t.Errorf("HashPlaceholder(%s) = %s, Nix put %s", out, got, floating.drv.Env[out])
		}
	}
	impure := find(t, drvs, "impure")
	if got := HashPlaceholder("x"); impure.drv.Env["x"] != got {
		t.Errorf("HashPlaceholder(x) = %s, Nix put %s", got, impure.drv.Env["x"])
	}
	deferred := find(t, drvs, "deferred")
	for env, out := range map[string]string{"f": "out", "fb": "bin"} {
		if got := DownstreamPlaceholder(floating.path, out); deferred.drv.Env[env] != got {
			t.Errorf("DownstreamPlaceholder(%s, %s) = %s, Nix put %s", floating.path, out, got, deferred.drv.Env[env])
		}
	}
	onDeferred := find(t, drvs, "on-deferred")
	if got := DownstreamPlaceholder(deferred.path, "out"); onDeferred.drv.Env["d"] != got {
		t.Errorf("DownstreamPlaceholder(deferred) = %s, Nix put %s", got, onDeferred.drv.Env["d"])
	}
}

// TestStaticOutputHashes compares with the DrvOutput ids of the
// realisations Nix registered when it built floating-built.
func TestStaticOutputHashes(t *testing.T) {
	data, err := os.ReadFile("testdata/built/realisations.json")
	if err != nil {
		t.Fatal(err)
	}
	var rs []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(data, &rs); err != nil || len(rs) != 2 {
		t.Fatalf("realisations.json: %v (%d)", err, len(rs))
	}
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	h := NewHasher(newGoldenStore(t, storepath.DefaultDir, "testdata/drv"))
	hs, err := h.StaticOutputHashes(context.Background(), find(t, drvs, "floating-built").drv)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		hashPart, out, _ := strings.Cut(r.ID, "!")
		if got := "sha256:" + hs[out].Base16(); got != hashPart {
			t.Errorf("static hash of %s = %s, Nix's realisation says %s", out, got, hashPart)
		}
	}
}

func TestHasherMemoAndCycles(t *testing.T) {
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	s := newGoldenStore(t, storepath.DefaultDir, "testdata/drv")
	h := NewHasher(s)
	ctx := context.Background()
	top := find(t, drvs, "checks").drv
	if _, err := h.HashModulo(ctx, top, true); err != nil {
		t.Fatal(err)
	}
	reads := s.reads
	if reads == 0 {
		t.Fatal("no input derivation read")
	}
	if _, err := h.HashModulo(ctx, top, true); err != nil || s.reads != reads {
		t.Errorf("second hash read %d more derivations (err %v); want them remembered", s.reads-reads, err)
	}
	// A resolver that lies (a .drv naming itself) must not recurse forever.
	self := mustPath(t, "/nix/store/f8s3gd55sypmhay5ffcpqw1cn2cjl5a1-simple.drv")
	loop := &Derivation{Dir: storepath.DefaultDir, Name: "loop", Outputs: map[string]Output{"out": {Kind: Deferred}},
		InputDrvs: map[storepath.Path][]string{self: {"out"}}, Env: map[string]string{}}
	cyc := NewHasher(resolverFunc(func(context.Context, storepath.Path) (*Derivation, error) { return loop, nil }))
	if _, err := cyc.HashModulo(ctx, loop, true); err == nil || !strings.Contains(err.Error(), "depends on itself") {
		t.Errorf("cycle: %v", err)
	}
	missing := loop.Clone()
	missing.InputDrvs[self] = []string{"nope"}
	if _, err := h.HashModulo(ctx, missing, true); err == nil || !strings.Contains(err.Error(), `no such output`) {
		t.Errorf("missing input output: %v", err)
	}
}

type resolverFunc func(context.Context, storepath.Path) (*Derivation, error)

func (f resolverFunc) ReadDerivation(ctx context.Context, p storepath.Path) (*Derivation, error) {
	return f(ctx, p)
}

func TestMakeOutputPath(t *testing.T) {
	// A fixed-output derivation's output hash, as hashDerivationModulo
	// gives it: sha256("fixed:out:<method algo>:<hex>:<path>").
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	g := find(t, drvs, "fixed-sha1-recursive")
	h := NewHasher(nil)
	dh, err := h.HashModulo(context.Background(), g.drv, false)
	if err != nil {
		t.Fatal(err)
	}
	p, _, _ := g.drv.OutputPath("out")
	want := hash.Sum(hash.SHA256, []byte("fixed:out:r:sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709:"+p.String()))
	if dh.Hashes["out"] != want || dh.Kind != Regular {
		t.Errorf("fixed modulo hash = %v %v, want %v", dh.Hashes["out"], dh.Kind, want)
	}
	if OutputPathName("hello", "out") != "hello" || OutputPathName("hello", "dev") != "hello-dev" {
		t.Error("OutputPathName wrong")
	}
}

// TestResolve resolves the deferred resolved-consumer with the outputs
// its floating input got, and compares with the resolved derivation Nix
// wrote to the store before building it.
func TestResolve(t *testing.T) {
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	var orig, want goldenDrv
	for _, g := range drvs {
		if g.drv.Name == "resolved-consumer" {
			if len(g.drv.InputDrvs) > 0 {
				orig = g
			} else {
				want = g
			}
		}
	}
	if orig.drv == nil || want.drv == nil {
		t.Fatal("golden resolved-consumer derivations missing; run testdata/gen.sh")
	}
	data, err := os.ReadFile("testdata/built/realisations.json")
	if err != nil {
		t.Fatal(err)
	}
	var rs []struct {
		ID      string `json:"id"`
		OutPath string `json:"outPath"`
	}
	json.Unmarshal(data, &rs)
	outs := map[string]storepath.Path{}
	for _, r := range rs {
		_, out, _ := strings.Cut(r.ID, "!")
		outs[out] = mustPath(t, "/nix/store/"+r.OutPath)
	}
	h := NewHasher(newGoldenStore(t, storepath.DefaultDir, "testdata/drv"))
	ctx := context.Background()
	resolved, warning, err := h.Resolve(ctx, orig.drv, func(drvPath storepath.Path, out string) (storepath.Path, bool) {
		p, ok := outs[out]
		return p, ok && drvPath.Name() == "floating-built.drv"
	})
	if err != nil || warning != "" {
		t.Fatalf("Resolve: %v %q", err, warning)
	}
	text, err := resolved.Print()
	if err != nil {
		t.Fatal(err)
	}
	if string(text) != string(want.text) {
		t.Errorf("resolved derivation differs from Nix's:\n got %s\nwant %s", text, want.text)
	}
	if p, _, _ := resolved.StorePath(); p != want.path {
		t.Errorf("resolved path %s, Nix wrote %s", p, want.path)
	}
	// The realisation Nix registered for the original names it by its
	// static output hash.
	data, err = os.ReadFile("testdata/built/consumer-realisation.json")
	if err != nil {
		t.Fatal(err)
	}
	var cr []struct {
		ID string `json:"id"`
	}
	json.Unmarshal(data, &cr)
	hs, err := h.StaticOutputHashes(ctx, orig.drv)
	if err != nil || len(cr) != 1 || cr[0].ID != "sha256:"+hs["out"].Base16()+"!out" {
		t.Errorf("static hash of the deferred derivation = %v (%v), Nix's realisation %v", hs["out"], err, cr)
	}
	_, warning, err = h.Resolve(ctx, orig.drv, func(storepath.Path, string) (storepath.Path, bool) { return storepath.Path{}, false })
	if err != nil || !strings.HasPrefix(warning, "output 'bin' of input '") {
		t.Errorf("unknown input output: %v %q", err, warning)
	}
}
