package units

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFilesPutThisMachinesPaths(t *testing.T) {
	files, err := Files(Options{Silo: "/opt/silo/bin/silo", NixBinDir: "/nix/var/nix/profiles/default/bin", ConfigDir: "/srv/silo/etc/"})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]File{}
	for _, f := range files {
		byName[f.Path] = f
	}
	tests := []struct {
		path, contains string
		mode           os.FileMode
		keep           bool
	}{
		{"/etc/systemd/system/silo-serve.service", "ExecStart=/opt/silo/bin/silo serve --config /srv/silo/etc/serve.toml ", 0o644, false},
		{"/etc/systemd/system/silo-publish.service", "LoadCredential=signing-key-file-0:/srv/silo/etc/publish-key.sec\n", 0o644, false},
		{"/etc/systemd/system/silo-gc.service", "ExecStart=/nix/var/nix/profiles/default/bin/nix-collect-garbage\n", 0o644, false},
		{"/etc/nix/silo-post-build-hook", "/opt/silo/bin/silo hook --socket '/var/lib/silo/queue.sock' || true\n", 0o755, false},
		{"/opt/silo/bin/silo-serve-admin", "-E SILO_CONFIG='/srv/silo/etc/serve.toml'", 0o755, false},
		{"/srv/silo/etc/queue.toml", "# to = ", 0o644, true},
	}
	for _, tt := range tests {
		f, ok := byName[tt.path]
		if !ok {
			t.Errorf("no %s among %d files", tt.path, len(files))
			continue
		}
		if !strings.Contains(string(f.Data), tt.contains) || f.Mode != tt.mode || f.KeepExisting != tt.keep {
			t.Errorf("%s: mode %v keep %v, want %q in:\n%s", tt.path, f.Mode, f.KeepExisting, tt.contains, f.Data)
		}
	}
	for _, f := range files {
		if strings.Contains(string(f.Data), "/usr/local/bin/silo") || strings.Contains(string(f.Data), "/etc/silo/") {
			t.Errorf("%s still names the plain paths", f.Path)
		}
	}
}

func TestFilesRefusesUnsafePaths(t *testing.T) {
	for _, o := range []Options{
		{},
		{Silo: "silo"},
		{Silo: "/opt/my silo/silo"},
		{Silo: "/opt/silo%i"},
		{Silo: "/usr/bin/silo", ConfigDir: "/etc/$HOME"},
	} {
		if _, err := Files(o); err == nil {
			t.Errorf("Files(%+v) = nil error, want a refusal", o)
		}
	}
}

// TestInstall: a first run creates everything, a second changes nothing,
// an edited unit is replaced, an edited config is kept; dry runs write
// nothing.
func TestInstall(t *testing.T) {
	root := t.TempDir()
	o := Options{Silo: "/usr/bin/silo", UnitDir: root + "/units", ConfigDir: root + "/etc", Hook: root + "/hook", Admin: root + "/admin"}
	files, err := Files(o)
	if err != nil {
		t.Fatal(err)
	}
	actions := func(dry bool) map[string]string {
		t.Helper()
		res, err := Install(files, dry)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, r := range res {
			m[r.Action] += filepath.Base(r.Path) + " "
		}
		return m
	}
	if got := actions(true); len(got) != 1 || got["created"] == "" {
		t.Fatalf("dry run on an empty machine: %v", got)
	}
	if _, err := os.Stat(root + "/units"); !os.IsNotExist(err) {
		t.Fatalf("dry run wrote %s", root+"/units")
	}
	actions(false)
	if got := actions(false); len(got) != 2 || got["unchanged"] == "" || got["kept"] != "publish.toml queue.toml serve.toml " {
		t.Fatalf("second run: %v", got)
	}
	os.WriteFile(root+"/units/silo-serve.service", []byte("edited"), 0o644)
	os.WriteFile(root+"/etc/serve.toml", []byte("url = \"mine\"\n"), 0o644)
	os.Chmod(root+"/hook", 0o644)
	got := actions(false)
	if diff := cmp.Diff("hook silo-serve.service ", got["updated"]); diff != "" {
		t.Errorf("updated (-want +got):\n%s", diff)
	}
	data, _ := os.ReadFile(root + "/etc/serve.toml")
	hook, _ := os.Stat(root + "/hook")
	if string(data) != "url = \"mine\"\n" || hook.Mode().Perm() != 0o755 {
		t.Errorf("config %q (want kept), hook mode %v (want 0755)", data, hook.Mode())
	}
	if leftovers, _ := filepath.Glob(root + "/*/.silo-install-*"); len(leftovers) > 0 {
		t.Errorf("temporary files left: %q", leftovers)
	}
}
