package units

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/nixtest"
)

// variants are module settings whose units must all verify and keep the
// network-facing ones at an exposure of at most 2.0.
var variants = map[string]string{
	"tcp": `{ services.silo = {
	  serve = { enable = true; listen = [ "127.0.0.1:8080" "[::1]:8080" ]; settings.compression = "xz"; };
	  publish = { enable = true; secrets.signing-key-file = [ "/run/keys/a.sec" "/run/keys/b.sec" ]; };
	  queue = { enable = true; settings.to = "https://cache.example.org/main"; secrets.netrc-file = "/run/keys/netrc"; };
	  gc = { enable = true; dates = "weekly"; randomizedDelaySec = "45min"; options = [ "--delete-older-than" "30d" ]; };
	}; }`,
	"unix": `{ services.silo = {
	  serve = { enable = true; listen = [ "unix:/run/silo/serve.sock" ]; socketMode = "0660"; socketGroup = "nginx"; };
	  publish = { enable = true; listen = [ "unix:/run/silo/publish.sock" ]; tokensFromServe = true; };
	}; }`,
	"outbound": `{ services.silo = {
	  serve = { enable = true; privateNetwork = false; extraArgs = [ "--log-level" "debug" ]; };
	  publish = { enable = true; supplementaryGroups = [ "nix-users" ]; };
	}; }`,
	"daemon": `{ nix.enable = false; services.silo = {
	  daemon = { enable = true; buildMachines = [ { hostName = "b1"; systems = [ "x86_64-linux" ]; maxJobs = 4; } ]; };
	  queue = { enable = true; settings.to = "file:///var/cache/silo"; };
	}; }`,
}

// siloPrefix returns a directory with bin/silo, the binary built for tests.
func siloPrefix(t *testing.T) string {
	t.Helper()
	prefix := t.TempDir()
	os.Mkdir(filepath.Join(prefix, "bin"), 0o755)
	if err := os.Symlink(nixtest.SiloBinary(t), filepath.Join(prefix, "bin", "silo")); err != nil {
		t.Fatal(err)
	}
	return prefix
}

// unitSets returns the plain units (as install-units writes them, with the
// test's silo) and each variant's, by name.
func unitSets(t *testing.T) map[string]map[string]string {
	t.Helper()
	n := nixtest.Require(t)
	prefix := siloPrefix(t)
	nixBin := filepath.Dir(requireTool(t, "nix-collect-garbage"))
	files, err := Files(Options{UnitDir: "/u", Silo: filepath.Join(prefix, "bin", "silo"), NixBinDir: nixBin})
	if err != nil {
		t.Fatal(err)
	}
	sets := map[string]map[string]string{"plain": {}}
	for _, f := range files {
		if filepath.Dir(f.Path) == "/u" {
			sets["plain"][filepath.Base(f.Path)] = string(f.Data)
		}
	}
	for name, cfg := range variants {
		sets[name] = evalModule(t, n, cfg, prefix).Units
	}
	return sets
}

func writeUnits(t *testing.T, units map[string]string) (dir string, names []string) {
	t.Helper()
	dir = t.TempDir()
	for name, text := range units {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Join(dir, name))
	}
	sort.Strings(names)
	return dir, names
}

// TestUnitsVerify: systemd-analyze verify accepts every unit without a
// warning (it exits 0 on unknown keys and bad values, so output counts).
func TestUnitsVerify(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze")
	for set, units := range unitSets(t) {
		_, paths := writeUnits(t, units)
		out, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("%s units: systemd-analyze verify: %v\n%s", set, err, out)
		}
	}
}

var exposure = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestUnitsExposure: systemd-analyze security --offline scores every silo
// service but the store daemon at most 2.0 in every variant (the daemon
// needs root's powers for build users and sandboxes, as nix-daemon does).
func TestUnitsExposure(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze")
	sets := unitSets(t)
	for _, set := range sortedKeys(sets) {
		units := sets[set]
		dir, _ := writeUnits(t, units)
		for _, name := range sortedKeys(units) {
			if !strings.HasSuffix(name, ".service") {
				continue
			}
			cmd := exec.Command(analyze, "security", "--offline=true", "--no-pager", filepath.Join(dir, name))
			out, _ := cmd.CombinedOutput() // exits non-zero above its threshold
			m := exposure.FindSubmatch(out)
			if m == nil {
				t.Fatalf("%s %s: no score in:\n%s", set, name, out)
			}
			score, _ := strconv.ParseFloat(string(m[1]), 64)
			t.Logf("%-8s %-22s exposure %.1f", set, name, score)
			if name != "silo-daemon.service" && score > 2.0 {
				t.Errorf("%s %s: exposure %.1f, want at most 2.0:\n%s", set, name, score, out)
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
