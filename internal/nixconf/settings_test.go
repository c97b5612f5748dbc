package nixconf

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/nixtest"
)

func envOf(m map[string]string) LookupEnv {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDirs(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want Dirs
	}{
		{map[string]string{"HOME": "/h"}, Dirs{Store: "/nix/store", Data: "/usr/share", Log: "/nix/var/log/nix", State: "/nix/var/nix",
			Conf: "/etc/nix", Libexec: "/usr/libexec", Bin: "/usr/bin", Socket: "/nix/var/nix/daemon-socket/socket",
			UserConfFiles: []string{"/h/.config/nix/nix.conf", "/etc/xdg/nix/nix.conf"}}},
		{map[string]string{"NIX_STORE": "/s//x/", "NIX_STATE_DIR": "/st/./a/../b", "XDG_CONFIG_HOME": "/c", "XDG_CONFIG_DIRS": "/d1::/d2"},
			Dirs{Store: "/s/x", Data: "/usr/share", Log: "/nix/var/log/nix", State: "/st/b", Conf: "/etc/nix", Libexec: "/usr/libexec",
				Bin: "/usr/bin", Socket: "/st/b/daemon-socket/socket", UserConfFiles: []string{"/c/nix/nix.conf", "/d1/nix/nix.conf", "/d2/nix/nix.conf"}}},
		{map[string]string{"NIX_STORE_DIR": "/a", "NIX_STORE": "/b", "NIX_DAEMON_SOCKET_PATH": "/sock", "NIX_USER_CONF_FILES": "/u1:/u2"},
			Dirs{Store: "/a", Data: "/usr/share", Log: "/nix/var/log/nix", State: "/nix/var/nix", Conf: "/etc/nix", Libexec: "/usr/libexec",
				Bin: "/usr/bin", Socket: "/sock", UserConfFiles: []string{"/u1", "/u2"}}},
	}
	for _, tt := range tests {
		d, err := NewDirs(envOf(tt.env))
		if err != nil {
			t.Fatal(err)
		}
		d.getenv = nil
		if diff := cmp.Diff(&tt.want, d, cmp.AllowUnexported(Dirs{})); diff != "" {
			t.Errorf("NewDirs(%v) (-want +got):\n%s", tt.env, diff)
		}
	}
	if _, err := NewDirs(envOf(map[string]string{"NIX_STORE_DIR": "rel/store"})); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("relative store dir: err = %v", err)
	}
}

func TestSet(t *testing.T) {
	tests := []struct {
		name, value string
		known       bool
		err         string
		setting     string
		want        string
	}{
		{"keep-outputs", "yes", true, "", "keep-outputs", "true"},
		{"gc-keep-outputs", "0", true, "", "keep-outputs", "false"},
		{"keep-outputs", "maybe", true, "Boolean setting 'keep-outputs' has invalid value 'maybe'", "keep-outputs", "false"},
		{"cores", "-1", true, "setting 'cores' has invalid value '-1'", "cores", ""},
		{"cores", "4294967296", true, "setting 'cores' has invalid value '4294967296'", "cores", ""},
		{"timeout", "-5", true, "", "timeout", "-5"},
		{"max-jobs", "auto", true, "", "max-jobs", ""},
		{"max-jobs", "x", true, "configuration setting 'max-jobs' should be 'auto' or an integer", "max-jobs", "1"},
		{"sandbox", "relaxed", true, "", "sandbox", "relaxed"},
		{"build-use-sandbox", "sometimes", true, "option 'sandbox' has invalid value 'sometimes'", "sandbox", "true"},
		{"substituters", "  a   b ", true, "", "substituters", "a b"},
		{"extra-substituters", "c", true, "", "substituters", "https://cache.nixos.org/ c"},
		{"extra-trusted-substituters", "z a z", true, "", "trusted-substituters", "a z"},
		{"extra-keep-outputs", "true", false, "", "keep-outputs", "false"},
		{"no-such-setting", "1", false, "", "", ""},
		{"experimental-features", "flakes ca-references nix-command", true, "", "experimental-features", "flakes nix-command"},
		{"access-tokens", "github.com=x noequals a=b=c", true, "", "access-tokens", "a=b=c github.com=x"},
		{"diff-hook", "", true, "", "diff-hook", ""},
		{"build-hook", "/a/../b//c", true, "", "build-hook", "/b/c"},
		{"system-features", "kvm big", true, "", "system-features", "big kvm"},
	}
	for _, tt := range tests {
		s := Defaults(&Dirs{Conf: "/etc/nix", Libexec: "/usr/libexec"})
		known, err := s.Set(tt.name, tt.value)
		if known != tt.known {
			t.Errorf("Set(%q, %q) known = %v, want %v", tt.name, tt.value, known, tt.known)
		}
		if tt.err != "" {
			if err == nil || err.Error() != tt.err || !IsUsage(err) {
				t.Errorf("Set(%q, %q) err = %v, want %q", tt.name, tt.value, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Set(%q, %q): %v", tt.name, tt.value, err)
		}
		if tt.setting != "" && tt.want != "" {
			if got := s.String(tt.setting); got != tt.want {
				t.Errorf("after Set(%q, %q): %s = %q, want %q", tt.name, tt.value, tt.setting, got, tt.want)
			}
		}
	}
}

func TestApplyIncludes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("nix.conf", "keep-derivations = false # comment\n\n  sandbox = false\ninclude nix.conf.extra\ntrusted-users = alice @wheel\nunknown-thing = 1\n")
	write("nix.conf.extra", "fsync-metadata = false\n!include nix.conf.extra.not-there\nextra-trusted-users = bob\n")
	s := Defaults(&Dirs{})
	if err := s.ApplyFile(filepath.Join(dir, "nix.conf")); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"keep-derivations": "false", "sandbox": "false", "fsync-metadata": "false", "trusted-users": "alice @wheel"} {
		if got := s.String(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if diff := cmp.Diff([]string{"unknown-thing"}, s.Unknown()); diff != "" {
		t.Errorf("Unknown (-want +got):\n%s", diff)
	}

	bad := []struct{ conf, err string }{
		{"include missing.conf\n", "file '" + dir + "/missing.conf' included from '" + dir + "/bad.conf' not found"},
		{"justoneword\n", "illegal configuration line 'justoneword' in '" + dir + "/bad.conf'"},
		{"a b c\n", "illegal configuration line 'a b c' in '" + dir + "/bad.conf'"},
		{"include a b\n", "illegal configuration line 'include a b' in '" + dir + "/bad.conf'"},
		{"keep-going = perhaps\n", dir + "/bad.conf: Boolean setting 'keep-going' has invalid value 'perhaps'"},
		{"include bad.conf\n", "too many nested includes"},
	}
	for _, tt := range bad {
		write("bad.conf", tt.conf)
		err := Defaults(&Dirs{}).ApplyFile(filepath.Join(dir, "bad.conf"))
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%q: err = %v, want %q", tt.conf, err, tt.err)
		}
	}
	if err := Defaults(&Dirs{}).ApplyFile(filepath.Join(dir, "absent.conf")); err != nil {
		t.Errorf("a missing nix.conf: %v", err)
	}
}

func TestLoadOrder(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "nix.conf"), []byte("cores = 1\nmax-jobs = 1\ntimeout = 1\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "u1"), []byte("max-jobs = 2\ntimeout = 2\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "u2"), []byte("max-jobs = 3\ntimeout = 3\n"), 0o644)
	c, err := Load(envOf(map[string]string{"NIX_CONF_DIR": dir, "NIX_USER_CONF_FILES": dir + "/u1:" + dir + "/u2", "NIX_CONFIG": "timeout = 4"}))
	if err != nil {
		t.Fatal(err)
	}
	// The first user file has the highest priority; NIX_CONFIG beats them all.
	if got := [3]uint64{c.Settings.Uint("cores"), c.Settings.Uint("max-jobs"), c.Settings.Uint("timeout")}; got != [3]uint64{1, 2, 4} {
		t.Errorf("cores, max-jobs, timeout = %v, want [1 2 4]", got)
	}
}

func TestApplyClient(t *testing.T) {
	base := func() *Settings {
		s := Defaults(&Dirs{})
		s.Set("substituters", "https://a/ https://b")
		s.Set("trusted-substituters", "https://t")
		return s
	}
	o := &ClientOptions{KeepGoing: true, MaxBuildJobs: 7, BuildCores: 3, UseSubstitutes: false, Overrides: [][2]string{
		{"keep-outputs", "true"}, {"timeout", "9"}, {"substituters", "https://a https://t https://evil"},
		{"experimental-features", "ca-derivations"}, {"builders", ""}, {"post-build-hook", "/x"}, {"cores", "bad"},
	}}
	var warns, debugs []string
	s := base()
	s.ApplyClient(o, false, func(m string) { warns = append(warns, m) }, func(m string) { debugs = append(debugs, m) })
	got := map[string]string{}
	for _, k := range []string{"keep-going", "max-jobs", "cores", "substitute", "keep-outputs", "timeout", "substituters", "experimental-features", "post-build-hook"} {
		got[k] = s.String(k)
	}
	want := map[string]string{"keep-going": "true", "max-jobs": "7", "cores": "3", "substitute": "false", "keep-outputs": "false",
		"timeout": "9", "substituters": "https://a/ https://t", "experimental-features": "", "post-build-hook": ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("untrusted (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ignoring untrusted substituter 'https://evil'"}, warns); diff != "" {
		t.Errorf("untrusted warnings (-want +got):\n%s", diff)
	}
	if len(debugs) != 4 {
		t.Errorf("untrusted debug messages: %q", debugs)
	}

	warns = nil
	s = base()
	s.ApplyClient(o, true, func(m string) { warns = append(warns, m) }, nil)
	if s.String("keep-outputs") != "true" || s.String("substituters") != "https://a https://t https://evil" || s.String("post-build-hook") != "/x" || s.String("cores") != "3" {
		t.Errorf("trusted: keep-outputs %q substituters %q post-build-hook %q cores %q", s.String("keep-outputs"), s.String("substituters"), s.String("post-build-hook"), s.String("cores"))
	}
	if diff := cmp.Diff([]string{"setting 'cores' has invalid value 'bad'"}, warns); diff != "" {
		t.Errorf("trusted warnings (-want +got):\n%s", diff)
	}
	if base().String("keep-outputs") != "false" {
		t.Error("ApplyClient changed another Settings")
	}
}

// TestMatchesNix compares every setting with what the real Nix prints for
// the same configuration files and environment.
func TestMatchesNix(t *testing.T) {
	nixtest.Require(t)
	dir := t.TempDir()
	conf := "build-users-group =\nkeep-derivations = false\nsandbox = relaxed\nexperimental-features = nix-command flakes\n" +
		"gc-reserved-space = 0\nsubstituters =\ninclude extra.conf\ntrusted-users = alice bob\nbuild-max-jobs = 3\n" +
		"extra-system-features = zzz\nbinary-cache-public-keys = k:AAAA\naccess-tokens = a=b\nbuild-chroot-dirs = /x=/y /b\n"
	os.WriteFile(filepath.Join(dir, "nix.conf"), []byte(conf), 0o644)
	os.WriteFile(filepath.Join(dir, "extra.conf"), []byte("fsync-metadata = false\n!include not-there\nextra-substituters = https://x\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "user.conf"), []byte("extra-trusted-users = carol\nmax-free = 1000\n"), 0o644)
	env := map[string]string{"NIX_CONF_DIR": dir, "NIX_USER_CONF_FILES": dir + "/user.conf", "HOME": dir,
		"NIX_CONFIG": "timeout = 7\nextra-experimental-features = ca-derivations", "NIX_STORE_DIR": dir + "/store", "NIX_STATE_DIR": dir + "/state"}
	cmd := exec.Command("nix", "show-config") // nixtest:allow: this test builds its own environment, Nix's is what it checks
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nix show-config: %v\n%s", err, out)
	}
	c, err := Load(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]string{}
	for line := range strings.Lines(c.Settings.All()) {
		k, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " = ")
		ours[k] = v
	}
	theirs := map[string]string{}
	for line := range strings.Lines(string(out)) {
		k, v, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " = ")
		if !ok {
			continue // a warning or blank line
		}
		theirs[k] = v
	}
	delete(theirs, "pure-eval") // the nix command turns it on for flakes
	delete(ours, "pure-eval")
	if diff := cmp.Diff(theirs, ours); diff != "" {
		t.Errorf("settings differ from nix show-config (-nix +silo):\n%s", diff)
	}
}
