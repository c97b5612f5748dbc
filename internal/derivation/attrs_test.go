package derivation

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/nixjson"
	"github.com/silo-cache/silo/internal/storepath"
)

func attrsOf(t *testing.T, g goldenDrv) *Attrs {
	t.Helper()
	a, err := NewAttrs(g.path, g.drv)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAttrs(t *testing.T) {
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	tests := []struct {
		name                 string
		features             []string
		preferLocal, subst   bool
		passAsFile, impure   []string
		graph                []string
		structured, noChroot bool
	}{
		{name: "checks", features: []string{"kvm", "nixos-test"}, preferLocal: true, subst: false,
			passAsFile: []string{"big", "other"}, impure: []string{"http_proxy", "FOO"},
			graph: []string{"graph=" + mustOut(t, find(t, drvs, "simple")), "g2=/nix/store/9kd0xc7sympdzgidl52g6j4zz5zbvx67-src.txt"}},
		{name: "structured", features: []string{"big-parallel", "kvm"}, preferLocal: true, subst: false, structured: true},
		{name: "simple", subst: true},
		{name: "floating", features: []string{"ca-derivations"}, subst: true},
		{name: "deferred", features: []string{"ca-derivations"}, subst: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := attrsOf(t, find(t, drvs, tt.name))
			fs, err := a.RequiredSystemFeatures()
			if err != nil || !slices.Equal(fs, tt.features) && !(len(fs) == 0 && len(tt.features) == 0) {
				t.Errorf("RequiredSystemFeatures = %q, %v; want %q", fs, err, tt.features)
			}
			if v, err := a.PreferLocalBuild(); err != nil || v != tt.preferLocal {
				t.Errorf("PreferLocalBuild = %v, %v", v, err)
			}
			if v, err := a.SubstitutesAllowed(); err != nil || v != tt.subst {
				t.Errorf("SubstitutesAllowed = %v, %v", v, err)
			}
			if v, err := a.NoChroot(); err != nil || v != tt.noChroot {
				t.Errorf("NoChroot = %v, %v", v, err)
			}
			if got := a.PassAsFile(); !slices.Equal(got, tt.passAsFile) {
				t.Errorf("PassAsFile = %q", got)
			}
			if got, err := a.ImpureEnvVars(); err != nil || !slices.Equal(got, tt.impure) {
				t.Errorf("ImpureEnvVars = %q, %v", got, err)
			}
			ge, err := a.ExportReferencesGraph()
			var graph []string
			for _, e := range ge {
				graph = append(graph, e.FileName+"="+e.Path.String())
			}
			if err != nil || !slices.Equal(graph, tt.graph) {
				t.Errorf("ExportReferencesGraph = %q, %v", graph, err)
			}
			if (a.Structured() != nil) != tt.structured {
				t.Errorf("Structured = %v", a.Structured())
			}
		})
	}

	a := attrsOf(t, find(t, drvs, "structured"))
	if _, _, err := a.String("ints"); err == nil || err.Error() != "attribute 'ints' of derivation '"+find(t, drvs, "structured").path.Base()+"' must be a string" {
		t.Errorf("String of a list: %v", err)
	}
	if _, err := a.Bool("str", false); err == nil || !strings.Contains(err.Error(), "must be a Boolean") {
		t.Errorf("Bool of a string: %v", err)
	}
	if _, _, err := a.Strings("ints"); err == nil || !strings.Contains(err.Error(), "must be a list of strings") {
		t.Errorf("Strings of ints: %v", err)
	}
	if s, ok, err := a.String("name"); err != nil || !ok || s != "structured" {
		t.Errorf("String(name) = %q %v %v", s, ok, err)
	}

	broken := find(t, drvs, "simple").drv.Clone()
	broken.Env["__json"] = "{"
	if _, err := NewAttrs(find(t, drvs, "simple").path, broken); err == nil || !strings.HasPrefix(err.Error(), "cannot process __json attribute of '") {
		t.Errorf("bad __json: %v", err)
	}
}

func TestCanBuildLocally(t *testing.T) {
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	g := find(t, drvs, "checks")
	a := attrsOf(t, g)
	m := Machine{System: "x86_64-linux", MaxJobs: 1, SystemFeatures: []string{"nixos-test", "kvm", "benchmark"}}
	if ok, err := a.CanBuildLocally(m); !ok || err != nil {
		t.Errorf("CanBuildLocally = %v, %v", ok, err)
	}
	m.SystemFeatures = []string{"benchmark"}
	ok, err := a.CanBuildLocally(m)
	want := "a 'x86_64-linux' with features {kvm, nixos-test} is required to build '" + g.path.String() + "', but I am a 'x86_64-linux' with features {benchmark}"
	if ok || err == nil || err.Error() != want {
		t.Errorf("missing features: %v, %v\nwant %s", ok, err, want)
	}
	m = Machine{System: "aarch64-linux", MaxJobs: 1, SystemFeatures: []string{"kvm", "nixos-test"}}
	if ok, err := a.CanBuildLocally(m); ok || err == nil {
		t.Errorf("other platform: %v, %v", ok, err)
	}
	m.ExtraPlatforms = []string{"x86_64-linux"}
	if ok, err := a.CanBuildLocally(m); !ok || err != nil {
		t.Errorf("extra platform: %v, %v", ok, err)
	}
	m.MaxJobs = 0
	if ok, err := a.CanBuildLocally(m); ok || err != nil {
		t.Errorf("max-jobs 0: %v, %v", ok, err)
	}
}

func TestExportReferencesGraphErrors(t *testing.T) {
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	g := find(t, drvs, "simple")
	for value, want := range map[string]string{
		"a":                     "odd number of tokens in 'exportReferencesGraph': 'a'",
		"1a /nix/store/x":       "invalid file name '1a' in 'exportReferencesGraph'",
		"a /tmp/x":              "'exportReferencesGraph' contains a non-store path '/tmp/x'",
		"a /nix/store/":         "'exportReferencesGraph' contains a non-store path '/nix/store/'",
		"a /nix/store/tooshort": "too short",
	} {
		d := g.drv.Clone()
		d.Env["exportReferencesGraph"] = value
		a, err := NewAttrs(g.path, d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.ExportReferencesGraph(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", value, err, want)
		}
	}
	d := g.drv.Clone()
	d.Env["exportReferencesGraph"] = "a.b-c_ /nix/store/ys1nv2c7ac982gri0b26nxfha557671y-simple/bin/sh"
	a, _ := NewAttrs(g.path, d)
	ge, err := a.ExportReferencesGraph()
	if err != nil || len(ge) != 1 || ge[0].Path.Base() != "ys1nv2c7ac982gri0b26nxfha557671y-simple" {
		t.Errorf("path inside a store path: %v, %v", ge, err)
	}
}

// TestStructuredAttrsFiles rebuilds .attrs.json and .attrs.sh of
// structured-built and compares them with the files Nix gave its builder.
func TestStructuredAttrsFiles(t *testing.T) {
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	s := newGoldenStore(t, storepath.DefaultDir, "testdata/drv")
	g := find(t, drvs, "structured-built")
	a := attrsOf(t, g)
	inputs := map[storepath.Path]bool{}
	for p := range s.infos {
		inputs[p] = true
	}
	ctx := context.Background()
	js, err := a.PrepareStructuredAttrs(ctx, s, inputs)
	if err != nil {
		t.Fatal(err)
	}
	rewrites := map[string]string{}
	for _, out := range g.drv.OutputNames() {
		p, _, _ := g.drv.OutputPath(out)
		rewrites[HashPlaceholder(out)] = p.String()
	}
	gotJSON, gotSh, err := StructuredAttrsFiles(js, rewrites)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string][]byte{".attrs.json": gotJSON, ".attrs.sh": gotSh} {
		want, err := os.ReadFile("testdata/built/structured/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("%s differs from Nix's (-nix +silo):\n%s", name, diff)
		}
	}
	delete(inputs, s.path("/nix/store/45mvhcjcrwy8qg0m6icpbgavxgamn76z-dep2"))
	if _, err := a.PrepareStructuredAttrs(ctx, s, inputs); err == nil || !strings.Contains(err.Error(), "because it is not in the input closure of the derivation") {
		t.Errorf("graph outside the input closure: %v", err)
	}
}

// TestPlainBuildFiles checks passAsFile names and exportReferencesGraph
// files against what Nix gave the builder of plain-built.
func TestPlainBuildFiles(t *testing.T) {
	drvs := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")
	s := newGoldenStore(t, storepath.DefaultDir, "testdata/drv")
	a := attrsOf(t, find(t, drvs, "plain-built"))
	names := []string{}
	for _, n := range a.PassAsFile() {
		names = append(names, "/build/"+PassAsFileName(n))
	}
	want, _ := os.ReadFile("testdata/built/plain/names")
	if got := strings.Join(names, " ") + "\n"; got != string(want) {
		t.Errorf("passAsFile paths %q, Nix gave %q", got, want)
	}
	inputs := map[storepath.Path]bool{}
	for p := range s.infos {
		inputs[p] = true
	}
	ge, err := a.ExportReferencesGraph()
	if err != nil || len(ge) != 2 {
		t.Fatalf("ExportReferencesGraph = %v, %v", ge, err)
	}
	ctx := context.Background()
	for _, e := range ge {
		closure, err := ExportReferences(ctx, s, []storepath.Path{e.Path}, inputs)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ValidityRegistration(ctx, s, closure)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile("testdata/built/plain/" + e.FileName)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("%s differs from Nix's (-nix +silo):\n%s", e.FileName, diff)
		}
	}
}

func TestCheckOutputs(t *testing.T) {
	s := newGoldenStore(t, storepath.DefaultDir, "testdata/drv")
	p := func(base string) storepath.Path { return s.path("/nix/store/" + base) }
	dep2, dep, src := p("45mvhcjcrwy8qg0m6icpbgavxgamn76z-dep2"), p("rz7qcpg8qai7mjc0jl2y6f3rlq7911mh-dep"), p("9kd0xc7sympdzgidl52g6j4zz5zbvx67-src.txt")
	out, dev := p("0000000000000000000000000000000a-t"), p("0000000000000000000000000000000b-t-dev")
	outputs := map[string]*PathInfo{
		"out": {Path: out, NarSize: 100, References: []storepath.Path{out, dev, dep2}},
		"dev": {Path: dev, NarSize: 50, References: []storepath.Path{src}},
	}
	drv := &Derivation{Dir: storepath.DefaultDir, Name: "t", Outputs: map[string]Output{"out": {Kind: InputAddressed, Path: out}, "dev": {Kind: InputAddressed, Path: dev}}}
	ctx := context.Background()
	check := func(env map[string]string) error {
		d := drv.Clone()
		d.Env = env
		a, err := NewAttrs(p("0000000000000000000000000000000c-t.drv"), d)
		if err != nil {
			t.Fatal(err)
		}
		return a.CheckOutputs(ctx, s, outputs)
	}
	tests := []struct {
		env  map[string]string
		want string // "" = passes
	}{
		{map[string]string{}, ""},
		{map[string]string{"allowedReferences": "out dev " + dep2.String() + " " + src.String()}, ""},
		{map[string]string{"allowedReferences": "out " + dep2.String() + " " + src.String()}, "output '" + out.String() + "' is not allowed to refer to the following paths:\n  " + dev.String()},
		{map[string]string{"allowedReferences": ""}, "output '" + dev.String() + "' is not allowed to refer to the following paths:\n  " + src.String()},
		{map[string]string{"allowedReferences": "dev " + src.String()}, "output '" + out.String() + "' is not allowed to refer to the following paths:\n  " + out.String() + "\n  " + dep2.String()},
		{map[string]string{"disallowedReferences": dep.String()}, ""},
		{map[string]string{"disallowedRequisites": dep.String()}, "output '" + out.String() + "' is not allowed to refer to the following paths:\n  " + dep.String()},
		{map[string]string{"allowedRequisites": "out dev " + dep2.String() + " " + dep.String()}, "output '" + dev.String() + "' is not allowed to refer to the following paths:\n  " + src.String()},
		{map[string]string{"allowedReferences": "bogus"}, "derivation contains an illegal reference specifier 'bogus'"},
		{map[string]string{"__json": `{"outputChecks":{"out":{"maxSize":99}}}`}, "path '" + out.String() + "' is too large at 100 bytes; limit is 99 bytes"},
		{map[string]string{"__json": `{"outputChecks":{"out":{"maxSize":100,"maxClosureSize":600}}}`}, "closure of path '" + out.String() + "' is too large at 606 bytes; limit is 600 bytes"},
		{map[string]string{"__json": `{"outputChecks":{"dev":{"allowedReferences":[]}}}`}, "output '" + dev.String() + "' is not allowed to refer to the following paths:\n  " + src.String()},
		{map[string]string{"__json": `{"outputChecks":{"dev":{"allowedRequisites":["dev"]}}}`}, "not allowed to refer to the following paths:\n  " + src.String()},
		{map[string]string{"__json": `{"outputChecks":{"out":{"allowedRequisites":"out"}}}`}, "not allowed"},
		{map[string]string{"__json": `{"outputChecks":{"out":{"allowedReferences":[1]}}}`}, "must be a list of strings"},
		{map[string]string{"__json": `{"outputChecks":{"out":{"maxSize":"1"}}}`}, "type must be number, but is string"},
		{map[string]string{"__json": `{"allowedReferences":[]}`}, ""},
	}
	for _, tt := range tests {
		err := check(tt.env)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%v: %v", tt.env, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%v: %v\nwant %s", tt.env, err, tt.want)
		}
	}
	// Without structured attributes a closure check ignores the output
	// itself; with them it does not.
	if err := check(map[string]string{"allowedRequisites": "dev " + dep2.String() + " " + dep.String() + " " + src.String()}); err != nil {
		t.Errorf("self reference in legacy allowedRequisites: %v", err)
	}
	if err := check(map[string]string{"__json": `{"outputChecks":{"out":{"allowedRequisites":["dev","` + dep2.String() + `","` + dep.String() + `","` + src.String() + `"]}}}`}); err == nil {
		t.Error("structured allowedRequisites without the output itself passed")
	}
}

func TestShellAndRewrite(t *testing.T) {
	if got := ShellEscape("it's"); got != `'it'\''s'` {
		t.Errorf("ShellEscape = %s", got)
	}
	js, _ := nixjson.Parse([]byte(`{"a":1.5,"b":[1.0,2],"c":{"x":1e300},"d":-0.5,"e":0.99999999}`))
	if got, want := AttrsShell(js), "declare -a b=(1 2 )\ndeclare -A c=(['x']=-2147483648 )\ndeclare e=0\n"; got != want {
		t.Errorf("AttrsShell = %q, want %q", got, want)
	}
	rw := map[string]string{"aa": "a", "/p": "/q/p", "": "x", "same": "same"}
	if got := Rewrite("aaa /p same", rw); got != "a /q/p same" {
		t.Errorf("Rewrite = %q", got)
	}
}

func mustOut(t *testing.T, g goldenDrv) string {
	t.Helper()
	p, known, err := g.drv.OutputPath("out")
	if err != nil || !known {
		t.Fatalf("%s: no known output path (%v)", g.path, err)
	}
	return p.String()
}
