package units

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/silo-cache/silo/internal/config"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/packaging/systemd"
)

// TestPlainUnitsCurrent: packaging/systemd holds exactly what the NixOS
// module renders for the plain profile (nix/plain.nix), so the plain units
// and the module's cannot drift. Fix with nix/gen-units.sh.
func TestPlainUnitsCurrent(t *testing.T) {
	n := nixtest.Require(t)
	out := n.Run("nix-instantiate", "--eval", "--strict", "--json", filepath.Join(nixDir(t), "plain.nix"))
	var want map[string]string
	if err := json.Unmarshal([]byte(out), &want); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	names, _ := fs.Glob(systemd.Files, "silo-*")
	for _, name := range names {
		data, _ := fs.ReadFile(systemd.Files, name)
		got[name] = string(data)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packaging/systemd is not what nix/plain.nix renders; run nix/gen-units.sh (-rendered +checked in):\n%s", diff)
	}
	for _, exe := range []string{"silo-post-build-hook", "silo-serve-admin"} {
		fi, err := os.Stat(filepath.Join(nixDir(t), "..", "packaging", "systemd", exe))
		if err != nil || fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("packaging/systemd/%s is not executable (%v); run nix/gen-units.sh", exe, err)
		}
	}
}

var helpFlag = regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`)

// TestModuleHasEveryFlag: every flag of silo serve, publish and queue is a
// typed setting, a secret or set by the unit (nix/flags.nix), and nothing
// there names a flag silo does not have.
func TestModuleHasEveryFlag(t *testing.T) {
	n := nixtest.Require(t)
	silo := nixtest.SiloBinary(t)
	out := n.Run("nix-instantiate", "--eval", "--strict", "--json", "--expr", `
	  let f = import `+filepath.Join(nixDir(t), "flags.nix")+` { lib = import `+filepath.Join(nixDir(t), "minilib.nix")+`; };
	  in builtins.mapAttrs (_: c: builtins.attrNames c.settings ++ builtins.attrNames c.secrets ++ c.unit) f`)
	var table map[string][]string
	if err := json.Unmarshal([]byte(out), &table); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"serve", "publish", "queue"} {
		help, err := exec.Command(silo, cmd, "--help").Output()
		if err != nil {
			t.Fatalf("silo %s --help: %v", cmd, err)
		}
		var flags []string
		_, flagSection, _ := strings.Cut(string(help), "\nFlags (")
		for _, m := range helpFlag.FindAllStringSubmatch(flagSection, -1) {
			flags = append(flags, m[1])
		}
		mod := append([]string(nil), table[cmd]...)
		sort.Strings(flags)
		sort.Strings(mod)
		if diff := cmp.Diff(flags, mod); diff != "" {
			t.Errorf("silo %s: nix/flags.nix does not match --help (-flags +flags.nix):\n%s", cmd, diff)
		}
	}
}

// TestConfigTemplates: the config files install-units creates parse, and
// set nothing (every line a comment), so silo's defaults hold until edited.
func TestConfigTemplates(t *testing.T) {
	names, _ := fs.Glob(systemd.Files, "config/*.toml")
	if len(names) != 3 {
		t.Fatalf("config templates = %q, want serve, publish and queue", names)
	}
	for _, name := range names {
		data, _ := fs.ReadFile(systemd.Files, name)
		p := filepath.Join(t.TempDir(), "x.toml")
		os.WriteFile(p, data, 0o644)
		vals, err := config.Load(p)
		if err != nil || len(vals) != 0 {
			t.Errorf("%s: values %v, error %v; want a valid file that sets nothing", name, vals, err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				t.Errorf("%s: line %q is not a comment", name, l)
			}
		}
	}
}
