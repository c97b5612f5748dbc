package derivation

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/storepath"
)

// TestGolden parses every .drv the real Nix wrote, prints it back byte for
// byte, recomputes its store path, and compares the parse with
// `nix show-derivation`.
func TestGolden(t *testing.T) {
	for _, set := range goldenSets(t) {
		for _, g := range set.drvs {
			t.Run(g.path.Base(), func(t *testing.T) {
				out, err := g.drv.Print()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, g.text) {
					t.Errorf("Print differs from Nix's file:\n got %s\nwant %s", out, g.text)
				}
				p, _, err := g.drv.StorePath()
				if err != nil {
					t.Fatal(err)
				}
				if p != g.path {
					t.Errorf("StorePath = %s, Nix wrote %s", p, g.path)
				}
				got := showDerivation{
					InputSrcs: paths(g.drv.InputSrcs), InputDrvs: map[string][]string{},
					System: g.drv.Platform, Builder: g.drv.Builder, Args: g.drv.Args, Env: g.drv.Env,
				}
				if got.Args == nil {
					got.Args = []string{}
				}
				got.Outputs = g.show.Outputs
				for p, outs := range g.drv.InputDrvs {
					got.InputDrvs[p.String()] = outs
				}
				if diff := cmp.Diff(g.show, got); diff != "" {
					t.Errorf("parse differs from nix show-derivation (-nix +silo):\n%s", diff)
				}
				for name, want := range g.show.Outputs {
					o := g.drv.Outputs[name]
					path, known, err := g.drv.OutputPath(name)
					if err != nil {
						t.Fatal(err)
					}
					gotPath := ""
					if known {
						gotPath = path.String()
					}
					gotHash := ""
					if o.Kind == CAFixed {
						gotHash = o.Hash.Base16()
					} // nix show-derivation shows no hash for impure outputs
					gotAlgo := ""
					if o.HashAlgo != 0 {
						gotAlgo = o.methodAlgo()
					}
					if gotPath != want.Path || gotAlgo != want.HashAlgo || gotHash != want.Hash {
						t.Errorf("output %s = (%q %q %q), Nix shows (%q %q %q)", name, gotPath, gotAlgo, gotHash, want.Path, want.HashAlgo, want.Hash)
					}
				}
				// Parse(Print(d)) == d.
				again, err := Parse(set.dir, g.drv.Name, out, allFeatures)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(g.drv, again, cmp.Comparer(func(a, b storepath.Path) bool { return a == b }), cmp.AllowUnexported(hash.Hash{})); diff != "" {
					t.Errorf("Parse(Print(d)) != d:\n%s", diff)
				}
			})
		}
	}
}

func TestTypes(t *testing.T) {
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	want := map[string]Type{
		"simple": TypeInputAddressed, "multi": TypeInputAddressed, "with-inputs": TypeInputAddressed,
		"fixed-md5-flat": TypeFixed, "fixed-sha512-recursive": TypeFixed, "on-fixed": TypeInputAddressed,
		"floating": TypeFloating, "floating-flat": TypeFloating, "deferred": TypeDeferred,
		"on-deferred": TypeDeferred, "impure": TypeImpure, "on-impure": TypeDeferred, "structured": TypeInputAddressed,
	}
	for name, typ := range want {
		got, err := find(t, drvs, name).drv.Type()
		if err != nil || got != typ {
			t.Errorf("%s: Type = %v, %v; want %v", name, got, err, typ)
		}
	}
	props := []struct {
		typ                                   Type
		isCA, isFixed, known, sandboxed, pure bool
	}{
		{TypeInputAddressed, false, false, true, true, true},
		{TypeDeferred, false, false, false, true, true},
		{TypeFixed, true, true, true, false, true},
		{TypeFloating, true, false, false, true, true},
		{TypeImpure, true, false, false, false, false},
	}
	for _, p := range props {
		if p.typ.IsCA() != p.isCA || p.typ.IsFixed() != p.isFixed || p.typ.HasKnownOutputPaths() != p.known ||
			p.typ.IsSandboxed() != p.sandboxed || p.typ.IsPure() != p.pure {
			t.Errorf("%v: properties wrong", p.typ)
		}
	}

	ia := Output{Kind: InputAddressed, Path: mustPath(t, "/nix/store/ys1nv2c7ac982gri0b26nxfha557671y-simple")}
	fixed := Output{Kind: CAFixed, HashAlgo: hash.SHA256, Hash: hash.Sum(hash.SHA256, nil)}
	floatSHA256 := Output{Kind: CAFloating, HashAlgo: hash.SHA256, Recursive: true}
	floatSHA1 := Output{Kind: CAFloating, HashAlgo: hash.SHA1, Recursive: true}
	errs := []struct {
		outputs map[string]Output
		want    string
	}{
		{map[string]Output{}, "must have at least one output"},
		{map[string]Output{"out": ia, "dev": {Kind: Deferred}}, "can't mix derivation output types"},
		{map[string]Output{"out": fixed, "dev": fixed}, "only one fixed output is allowed for now"},
		{map[string]Output{"dev": fixed}, `single fixed output must be named "out"`},
		{map[string]Output{"out": floatSHA256, "dev": floatSHA1}, "all floating outputs must use the same hash type"},
	}
	for _, e := range errs {
		d := &Derivation{Dir: storepath.DefaultDir, Name: "x", Outputs: e.outputs}
		if _, err := d.Type(); err == nil || err.Error() != e.want {
			t.Errorf("Type of %v = %v, want %q", e.outputs, err, e.want)
		}
	}
}

func mustPath(t testing.TB, s string) storepath.Path {
	t.Helper()
	p, err := storepath.DefaultDir.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseErrors(t *testing.T) {
	const (
		p   = "/nix/store/ys1nv2c7ac982gri0b26nxfha557671y-simple"
		pre = `Derive([("out","` + p + `","","")],[],[],"x86_64-linux","/bin/sh",[],[`
	)
	good := pre + `("out","` + p + `")])`
	if _, err := Parse(storepath.DefaultDir, "simple", []byte(good), Features{}); err != nil {
		t.Fatalf("good derivation: %v", err)
	}
	tests := []struct {
		name, in string
		xp       Features
		want     string // substring of the error
		format   bool   // wraps ErrFormat
	}{
		{"empty", "", Features{}, "expected string 'Derive(['", true},
		{"not aterm", "{}", Features{}, "expected string 'Derive(['", true},
		{"truncated", good[:len(good)-5], Features{}, "unterminated string", true},
		{"truncated after list", pre, Features{}, "expected string '('", true},
		{"unterminated escape", pre + `("a","\`, Features{}, "unterminated string", true},
		{"missing close", good[:len(good)-1], Features{}, "expected string ')'", true},
		{"relative input src", `Derive([("out","` + p + `","","")],[],["nix/store/x"],"x","/bin/sh",[],[])`, Features{}, "bad path 'nix/store/x' in derivation", true},
		{"empty output path with hash", `Derive([("out","","sha256","0000000000000000000000000000000000000000000000000000000000000000")],[],[],"x","b",[],[])`, Features{}, "bad path '' in derivation", true},
		{"input drv outside store", `Derive([("out","` + p + `","","")],[("/tmp/x.drv",["out"])],[],"x","b",[],[])`, Features{}, "not in the store directory", false},
		{"bad output path", `Derive([("out","/nix/store/short","","")],[],[],"x","b",[],[])`, Features{}, "too short", false},
		{"unknown algo", `Derive([("out","` + p + `","sha3","00")],[],[],"x","b",[],[])`, Features{}, "unknown hash algorithm 'sha3'", false},
		{"bad fixed hash", `Derive([("out","` + p + `","sha256","abc")],[],[],"x","b",[],[])`, Features{}, "invalid hash", false},
		{"SRI fixed hash", `Derive([("out","` + p + `","sha256","sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")],[],[],"x","b",[],[])`, Features{}, "not a bare sha256 digest", false},
		{"floating without feature", `Derive([("out","","r:sha256","")],[],[],"x","b",[],[])`, Features{},
			"experimental Nix feature 'ca-derivations' is disabled; use '--extra-experimental-features ca-derivations' to override", false},
		{"impure without feature", `Derive([("out","","r:sha256","impure")],[],[],"x","b",[],[])`, Features{CADerivations: true},
			"experimental Nix feature 'impure-derivations' is disabled", false},
		{"floating with path", `Derive([("out","` + p + `","r:sha256","")],[],[],"x","b",[],[])`, allFeatures, "floating output has path", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(storepath.DefaultDir, "simple", []byte(tt.in), tt.xp)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded", tt.in)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if errors.Is(err, ErrFormat) != tt.format {
				t.Errorf("error %q: errors.Is(ErrFormat) = %v, want %v", err, !tt.format, tt.format)
			}
		})
	}
	drvPath := mustPath(t, "/nix/store/f8s3gd55sypmhay5ffcpqw1cn2cjl5a1-simple.drv")
	if _, err := Read(drvPath, []byte("nonsense"), Features{}); err == nil ||
		err.Error() != "error parsing derivation '"+drvPath.String()+"': malformed derivation: expected string 'Derive(['" {
		t.Errorf("Read error = %v", err)
	}
	if _, err := Read(mustPath(t, p), []byte(good), Features{}); err == nil {
		t.Error("Read of a path without .drv succeeded")
	}
}

// TestParseLikeNix covers what Nix's parser tolerates and how it resolves
// duplicates: the result prints in Nix's canonical form.
func TestParseLikeNix(t *testing.T) {
	const p = "/nix/store/ys1nv2c7ac982gri0b26nxfha557671y-simple"
	const q = "/nix/store/f8s3gd55sypmhay5ffcpqw1cn2cjl5a1-simple.drv"
	in := `Derive([("out","` + p + `","","ignored")("out","/nix/store/ys1nv2c7ac982gri0b26nxfha557671y-other","","")],` +
		`[("` + q + `",["b","a","b"]),("` + q + `",["c"])],["` + p + `""` + p + `"],"sys","/bin/\s\h",["a\qb"],` +
		`[("z","1"),("a","2"),("z","3")])trailing`
	d, err := Parse(storepath.DefaultDir, "simple", []byte(in), Features{})
	if err != nil {
		t.Fatal(err)
	}
	want := `Derive([("out","` + p + `","","")],[("` + q + `",["c"])],["` + p + `"],"sys","/bin/sh",["aqb"],[("a","2"),("z","3")])`
	out, err := d.Print()
	if err != nil || string(out) != want {
		t.Errorf("Print = %s, %v\nwant    %s", out, err, want)
	}
	upper := `Derive([("out","` + p + `","sha1","DA39A3EE5E6B4B0D3255BFEF95601890AFD80709")],[],[],"x","b",[],[])`
	d, err = Parse(storepath.DefaultDir, "simple", []byte(upper), Features{})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Outputs["out"].Hash.Base16(); got != "da39a3ee5e6b4b0d3255bfef95601890afd80709" {
		t.Errorf("hash = %s", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, g := range goldenDrvs(f, storepath.DefaultDir, "testdata/drv", "testdata/show.json") {
		f.Add(g.text)
	}
	f.Add([]byte(`Derive([("out","","","")],[],[],"","",[],[("\`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse(storepath.DefaultDir, "fuzz", data, allFeatures)
		if err != nil {
			return
		}
		out, err := d.Print()
		if err != nil {
			return // e.g. a fixed output whose name makes no valid path, as in Nix
		}
		d2, err := Parse(storepath.DefaultDir, "fuzz", out, allFeatures)
		if err != nil {
			t.Fatalf("Parse(Print(d)) failed: %v\n%s", err, out)
		}
		out2, err := d2.Print()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("Print(Parse(Print(d))) differs:\n%s\n%s", out, out2)
		}
		if slices.Compare(d.OutputNames(), d2.OutputNames()) != 0 || len(d.Env) != len(d2.Env) || !slices.Equal(d.Args, d2.Args) {
			t.Fatal("Parse(Print(d)) != d")
		}
	})
}
