package units

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/silo-cache/silo/internal/config"
	"github.com/silo-cache/silo/internal/nixtest"
)

// TestModuleSettingsFile: settings, typed and free-form, become the TOML
// file the unit passes with --config, and silo reads back each value.
func TestModuleSettingsFile(t *testing.T) {
	n := nixtest.Require(t)
	m := evalModule(t, n, `{ services.silo.serve = { enable = true; settings = {
	  compression = "xz"; max-nar-size = "20G"; require-closure = true; max-uploads = 3;
	  url = "https://cache.example.org/with \"quotes\""; some-future-flag = [ "a" "b" ]; }; }; }`, "/silo")
	m.realise(t, n)
	got, err := config.Load(configFileOf(t, m.Units["silo-serve.service"]))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"compression": {"xz"}, "max-nar-size": {"20G"}, "require-closure": {"true"}, "max-uploads": {"3"},
		"url": {`https://cache.example.org/with "quotes"`}, "some-future-flag": {"a", "b"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config file (-want +got):\n%s", diff)
	}
}

// TestModuleRefuses: settings of the wrong type, secrets in the store,
// a queue without a cache, silo daemon beside nix-daemon and misspelled
// options are errors that name the option.
func TestModuleRefuses(t *testing.T) {
	n := nixtest.Require(t)
	tests := []struct{ name, config, want string }{
		{"bad enum", `{ services.silo.serve = { enable = true; settings.compression = "lz4"; }; }`,
			"services.silo.serve.settings.compression' is not of type"},
		{"bad type", `{ services.silo.publish = { enable = true; settings.priority = "high"; }; }`,
			"services.silo.publish.settings.priority' is not of type"},
		{"secret in store", `{ services.silo.publish = { enable = true; secrets.signing-key-file = [ "/nix/store/x-key.sec" ]; }; }`,
			"secret /nix/store/x-key.sec is in the Nix store"},
		{"queue without to", `{ services.silo.queue.enable = true; }`, "services.silo.queue.settings.to"},
		{"daemon with nix-daemon", `{ nix.enable = true; services.silo.daemon.enable = true; }`, "set nix.enable = false"},
		{"settings and configFile", `{ services.silo.serve = { enable = true; configFile = "/etc/silo/serve.toml"; settings.url = "x"; }; }`,
			"either settings or configFile"},
		{"misspelled", `{ services.silo.serve = { enable = true; }; services.silo.sreve.enable = true; }`, "services.silo.sreve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := evalModuleErr(n, harness(t, tt.config, "/silo"))
			var got string
			switch {
			case err != nil:
				got = err.Error()
			default:
				got = strings.Join(append(m.FailedAssertions, m.Undeclared...), "\n")
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want it to contain %q", got, tt.want)
			}
		})
	}
}

// TestModuleWiring: what the module sets beside the units: the hook in
// nix.settings (or, with silo daemon, in its nix.conf), and for silo
// daemon what nix-daemon's module would set: nix.conf as /etc/nix/nix.conf,
// the machines file, build users, the client in PATH.
func TestModuleWiring(t *testing.T) {
	n := nixtest.Require(t)
	m := evalModule(t, n, `{ services.silo = { serve.enable = true; gc.enable = true; queue = { enable = true; settings.to = "https://c"; }; }; }`, "/silo")
	if m.NixSettings["post-build-hook"] != m.Hook || !strings.HasPrefix(m.Hook, "/nix/store/") {
		t.Errorf("nix.settings.post-build-hook = %v, want the wrapper %s", m.NixSettings["post-build-hook"], m.Hook)
	}
	wantWanted := map[string][]string{
		"silo-serve.socket": {"sockets.target"}, "silo-serve.service": {},
		"silo-queue.socket": {"sockets.target"}, "silo-queue.service": {},
		"silo-gc.timer": {"timers.target"}, "silo-gc.service": {},
	}
	if diff := cmp.Diff(wantWanted, m.WantedBy); diff != "" {
		t.Errorf("units and wantedBy (-want +got):\n%s", diff)
	}

	d := evalModule(t, n, `{ nix.enable = false; services.silo = {
	  queue = { enable = true; settings.to = "https://c"; };
	  daemon = { enable = true; nrBuildUsers = 4; settings.max-jobs = 8; settings.experimental-features = [ "nix-command" ];
	    buildMachines = [ { hostName = "b1"; sshUser = "nix"; systems = [ "x86_64-linux" "i686-linux" ]; maxJobs = 4;
	      supportedFeatures = [ "kvm" "big-parallel" ]; } ]; };
	}; }`, "/silo")
	d.realise(t, n)
	if _, ok := d.NixSettings["post-build-hook"]; ok {
		t.Errorf("with silo daemon, nix.settings (unused) got the hook: %v", d.NixSettings)
	}
	conf := d.Etc["nix/nix.conf"].Source
	env := parseUnit(d.Units["silo-daemon.service"])["Service.Environment"]
	if want := []string{"NIX_CONF_DIR=" + filepath.Dir(conf)}; !cmp.Equal(env, want) {
		t.Errorf("silo-daemon.service Environment = %q, want %q (the nix.conf installed as /etc/nix/nix.conf)", env, want)
	}
	text, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"build-users-group = nixbld", "sandbox = true", "builders = @/etc/nix/machines",
		"max-jobs = 8", "post-build-hook = " + d.Hook, "experimental-features = nix-command",
		"trusted-users = root", "substituters = https://cache.nixos.org/"} {
		if !strings.Contains(string(text), line+"\n") {
			t.Errorf("nix.conf lacks %q:\n%s", line, text)
		}
	}
	if got, want := d.Etc["nix/machines"].Text, "ssh://nix@b1 x86_64-linux,i686-linux - 4 1 kvm,big-parallel - -\n"; got != want {
		t.Errorf("machines = %q, want %q", got, want)
	}
	if len(d.Users) != 4 || d.Users["nixbld4"]["uid"] != float64(30004) || d.Users["nixbld1"]["group"] != "nixbld" {
		t.Errorf("build users = %v", d.Users)
	}
	if d.Groups["nixbld"]["gid"] != float64(30000) || d.NixEnable || !cmp.Equal(d.Packages, []string{"/usr"}) {
		t.Errorf("groups %v, nix.enable %v, packages %v", d.Groups, d.NixEnable, d.Packages)
	}
}

// TestDaemonNixConf: the real Nix reads the nix.conf the module writes for
// silo daemon without a warning, with the values the module meant.
func TestDaemonNixConf(t *testing.T) {
	n := nixtest.Require(t)
	m := evalModule(t, n, `{ nix.enable = false; services.silo.daemon = { enable = true;
	  settings = { sandbox = "relaxed"; cores = 2; trusted-users = [ "root" "@wheel" ]; };
	  buildMachines = [ { hostName = "b1"; systems = [ "x86_64-linux" ]; } ]; }; }`, "/silo")
	m.realise(t, n)
	home := t.TempDir()
	cmd := exec.Command("nix", "--extra-experimental-features", "nix-command", "show-config", "--json") // nixtest:allow: reads the module's nix.conf, in an environment built from nothing
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "NIX_CONF_DIR=" + filepath.Dir(m.Etc["nix/nix.conf"].Source),
		"NIX_USER_CONF_FILES=" + filepath.Join(home, "none")}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("nix show-config: %v\n%s", err, stderr.String())
	}
	var cfg map[string]struct{ Value any }
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"sandbox": "relaxed", "cores": float64(2), "build-users-group": "nixbld", "builders": "@/etc/nix/machines",
		"trusted-users": []any{"root", "@wheel"}, "allowed-users": []any{"*"}, "require-sigs": true,
		"substituters": []any{"https://cache.nixos.org/"}, "max-jobs": float64(0), // auto: Nix prints the CPU count, checked below
	}
	for k, v := range want {
		got := cfg[k].Value
		if k == "max-jobs" {
			if f, ok := got.(float64); !ok || f < 1 {
				t.Errorf("max-jobs = %v, want the CPU count (auto)", got)
			}
			continue
		}
		if !cmp.Equal(got, v) {
			t.Errorf("%s = %#v, want %#v", k, got, v)
		}
	}
}
