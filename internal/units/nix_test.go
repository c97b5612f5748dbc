package units

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/silo-cache/silo/internal/nixtest"
)

// nixDir is the repository's nix/ directory.
func nixDir(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir, err := filepath.Abs(filepath.Join(filepath.Dir(file), "..", "..", "nix"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// requireTool skips when a tool is missing on a developer machine and
// fails under CI, where ./test.sh installs it.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %s is missing (./test.sh installs it)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// moduleEval is what the harness returns of module.nix evaluated with
// minilib.nix under the real Nix 2.8: nixpkgs needs a newer Nix than this
// machine has, so minilib.nix brings the library functions the module uses.
type moduleEval struct {
	Units            map[string]string   `json:"units"`
	WantedBy         map[string][]string `json:"wantedBy"`
	Undeclared       []string            `json:"undeclared"`
	FailedAssertions []string            `json:"failedAssertions"`
	NixEnable        bool                `json:"nixEnable"`
	NixSettings      map[string]any      `json:"nixSettings"`
	Etc              map[string]struct {
		Source string `json:"source"`
		Text   string `json:"text"`
	} `json:"etc"`
	Users    map[string]map[string]any `json:"users"`
	Groups   map[string]map[string]any `json:"groups"`
	Hook     string                    `json:"hook"`
	Packages []string                  `json:"packages"`
	Tmpfiles []string                  `json:"tmpfiles"`
	Drvs     []string                  `json:"drvs"`
}

// harness is a Nix expression evaluating module.nix with config (a Nix
// expression: a module) and testpkgs.nix with silo at siloPrefix.
func harness(t testing.TB, config, siloPrefix string) string {
	return fmt.Sprintf(`let
  dir = %q;
  lib = import (dir + "/minilib.nix");
  eval = lib.evalModules {
    modules = [ lib.nixosStub (dir + "/module.nix") (%s) ];
    specialArgs.pkgs = import (dir + "/testpkgs.nix") { silo = %q; };
  };
  c = eval.config;
in {
  units = builtins.mapAttrs (_: u: u.text) c.systemd.units;
  wantedBy = builtins.mapAttrs (_: u: u.wantedBy) c.systemd.units;
  inherit (eval) undeclared failedAssertions;
  nixEnable = c.nix.enable;
  nixSettings = c.nix.settings;
  etc = c.environment.etc;
  users = c.users.users;
  groups = c.users.groups;
  hook = c.services.silo.queue.hook.path;
  packages = c.environment.systemPackages;
  tmpfiles = c.systemd.tmpfiles.rules;
  # Derivations the units and files name (config files, wrappers), to build.
  drvs = builtins.attrNames (builtins.getContext (builtins.concatStringsSep " "
    (builtins.attrValues (builtins.mapAttrs (_: u: u.text) c.systemd.units)
     ++ [ c.services.silo.queue.hook.path ]
     ++ map (e: e.source or "") (builtins.attrValues c.environment.etc))));
}`, nixDir(t), config, siloPrefix)
}

// evalModule evaluates the module with config and fails on any error,
// undeclared option or failed assertion.
func evalModule(t testing.TB, n *nixtest.Nix, config, siloPrefix string) *moduleEval {
	t.Helper()
	out, err := evalModuleErr(n, harness(t, config, siloPrefix))
	if err != nil {
		t.Fatalf("evaluate module with %s: %v", config, err)
	}
	if len(out.Undeclared) > 0 || len(out.FailedAssertions) > 0 {
		t.Fatalf("module with %s: undeclared options %q, failed assertions %q", config, out.Undeclared, out.FailedAssertions)
	}
	return out
}

func evalModuleErr(n *nixtest.Nix, expr string) (*moduleEval, error) {
	// --read-write-mode: builtins.toFile writes the config files it names.
	out, err := n.Try("nix-instantiate", "--read-write-mode", "--eval", "--strict", "--json", "--expr", expr)
	if err != nil {
		return nil, err
	}
	var m moduleEval
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return nil, fmt.Errorf("decode %q: %w", out, err)
	}
	return &m, nil
}

// realise builds the files the evaluated units and wrappers name, as
// NixOS would, so that tests can run them.
func (m *moduleEval) realise(t testing.TB, n *nixtest.Nix) {
	t.Helper()
	if len(m.Drvs) > 0 {
		n.Run("nix-store", append([]string{"--realise"}, m.Drvs...)...)
	}
}
