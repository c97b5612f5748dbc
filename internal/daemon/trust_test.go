package daemon

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

func sortedLines(s string) []string {
	l := lines(s)
	slices.Sort(l)
	return l
}

// nobodyHome is a HOME the user nobody can write.
func nobodyHome(t *testing.T, s *testStore) string {
	t.Helper()
	home := filepath.Join(s.root, "nobody-home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "nobody", home).CombinedOutput(); err != nil {
		t.Fatalf("chown nobody: %v %s", err, out)
	}
	return home
}

// TestUntrustedClient runs the real Nix as the unprivileged user nobody
// against a daemon that trusts only root: what Nix allows untrusted users
// works, what it refuses is refused with Nix's messages.
func TestUntrustedClient(t *testing.T) {
	s := newTestStore(t, "")
	s.startSilo()
	home := nobodyHome(t, s)
	nobody := func(name string, args ...string) (string, string, error) {
		return s.tryCmd(asNobody(t, s.command(true, name, args...), home))
	}
	file := filepath.Join(home, "mine.txt")
	os.WriteFile(file, []byte("nobody's file\n"), 0o644)

	out, errOut, err := nobody("nix-store", "--add", file)
	if err != nil {
		t.Fatalf("untrusted nix-store --add (content-addressed): %v\n%s", err, errOut)
	}
	added := strings.TrimSpace(out)
	if _, errOut, err := nobody("nix", "store", "ping"); err != nil {
		t.Errorf("untrusted nix store ping: %v %s", err, errOut)
	}

	// An input-addressed, unsigned path: root exports it, deletes it, and
	// nobody tries to import it.
	built := s.build("unsigned", "echo unsigned > $out")
	exported := filepath.Join(s.root, "export.nar")
	exp := s.command(true, "nix-store", "--export", built)
	f, _ := os.Create(exported)
	exp.Stdout = f
	if err := exp.Run(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.Chmod(exported, 0o644)
	s.run("nix-store", "--delete", built)
	imp := asNobody(t, s.command(true, "nix-store", "--import"), home)
	imp.Stdin, _ = os.Open(exported)
	if _, errOut, err := s.tryCmd(imp); err == nil || !strings.Contains(errOut, "lacks a valid signature") {
		t.Errorf("untrusted import of an unsigned path: err %v, stderr %q; want 'lacks a valid signature'", err, errOut)
	}
	imp = s.command(true, "nix-store", "--import")
	imp.Stdin, _ = os.Open(exported)
	if _, errOut, err := s.tryCmd(imp); err != nil {
		t.Errorf("trusted import of the same: %v %s", err, errOut)
	}

	refusals := []struct {
		args []string
		want string
	}{
		{[]string{"nix", "store", "sign", "--key-file", "/dev/null", added}, ""},
		{[]string{"nix-store", "--verify", "--repair"}, "you are not privileged to repair paths"},
		{[]string{"nix-store", "-r", "--repair", added}, "repairing is not allowed because you are not in 'trusted-users'"},
		{[]string{"nix-store", "--delete", "--ignore-liveness", added}, "you are not allowed to ignore liveness"},
	}
	for _, r := range refusals {
		_, errOut, err := nobody(r.args[0], r.args[1:]...)
		if err == nil || !strings.Contains(errOut, r.want) {
			t.Errorf("untrusted %s: err %v, stderr %q; want %q", strings.Join(r.args, " "), err, errOut, r.want)
		}
	}

	// AddSignatures itself, with a real key.
	key := filepath.Join(home, "key")
	s.local("nix-store", "--generate-binary-cache-key", "test-1", key, key+".pub")
	os.Chmod(key, 0o644)
	if _, errOut, err := nobody("nix", "store", "sign", "--key-file", key, added); err == nil || !strings.Contains(errOut, "you are not privileged to add signatures") {
		t.Errorf("untrusted nix store sign: err %v, stderr %q", err, errOut)
	}

	// Settings: an untrusted substituter is dropped with Nix's warning.
	_, errOut, err = nobody("nix-store", "-q", "--hash", added, "--option", "substituters", "http://evil.invalid")
	if err != nil || !strings.Contains(errOut, "ignoring untrusted substituter 'http://evil.invalid'") {
		t.Errorf("untrusted substituter: err %v, stderr %q", err, errOut)
	}

	// Temp (and runtime) roots are censored for nobody, not for root; gcroots
	// links are shown to everyone, as Nix.
	link := filepath.Join(s.state, "gcroots", "mine")
	os.Symlink(added, link)
	holder := dialRaw(t, s.sock)
	holder.enc.Uint64(11) // AddTempRoot
	holder.enc.String(added)
	if err := holder.stderr(); err != nil {
		t.Fatal(err)
	}
	holder.u64()
	out, _, _ = nobody("nix-store", "-q", "--roots", added)
	if got := sortedLines(out); len(got) != 2 || got[0] != link+" -> "+added || got[1] != "{censored} -> "+added {
		t.Errorf("untrusted -q --roots: %q, want the link and {censored}", got)
	}
	out = s.run("nix-store", "-q", "--roots", added)
	if got := sortedLines(out); len(got) != 2 || got[0] != link+" -> "+added || !strings.HasPrefix(got[1], "{temp:") {
		t.Errorf("trusted -q --roots: %q, want the link and {temp:N}", got)
	}
	// nobody's profile and GC root directories exist, owned by nobody.
	for _, d := range []string{"profiles/per-user/nobody", "gcroots/per-user/nobody"} {
		if fi, err := os.Stat(filepath.Join(s.state, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
}

// TestAllowedUsers refuses a user not in allowed-users (nor trusted).
func TestAllowedUsers(t *testing.T) {
	s := newTestStore(t, "allowed-users = root @wheel\n")
	s.startSilo()
	home := nobodyHome(t, s)
	if _, errOut, err := s.tryCmd(asNobody(t, s.command(true, "nix", "store", "ping"), home)); err == nil {
		t.Errorf("nobody connected although not in allowed-users: %s", errOut)
	}
	if !strings.Contains(s.stderr.String(), "user 'nobody' is not allowed to connect to the Nix daemon") {
		t.Errorf("daemon log lacks the refusal: %s", s.stderr)
	}
	if _, errOut, err := s.try("nix", "store", "ping"); err != nil {
		t.Errorf("root refused: %s", errOut)
	}
}

// TestTrustedGroup trusts nobody through its group (@nogroup, nobody's
// primary group), as Nix's matchUser does.
func TestTrustedGroup(t *testing.T) {
	s := newTestStore(t, "trusted-users = root @nogroup\n")
	s.startSilo()
	home := nobodyHome(t, s)
	file := filepath.Join(home, "f")
	os.WriteFile(file, []byte("group trust\n"), 0o644)
	out, errOut, err := s.tryCmd(asNobody(t, s.command(true, "nix-store", "--add", file), home))
	if err != nil {
		t.Fatalf("%v %s", err, errOut)
	}
	key := filepath.Join(home, "key")
	s.local("nix-store", "--generate-binary-cache-key", "group-1", key, key+".pub")
	os.Chmod(key, 0o644)
	if _, errOut, err := s.tryCmd(asNobody(t, s.command(true, "nix", "store", "sign", "--key-file", key, strings.TrimSpace(out)), home)); err != nil {
		t.Errorf("nobody, trusted through @nogroup, cannot sign: %v %s", err, errOut)
	}
	if !strings.Contains(s.stderr.String(), "user nobody (trusted)") {
		t.Errorf("daemon log: %s", s.stderr)
	}
}

func TestMatchUser(t *testing.T) {
	tests := []struct {
		user, group string
		list        []string
		want        bool
	}{
		{"alice", "users", []string{"*"}, true},
		{"alice", "users", []string{"bob", "alice"}, true},
		{"alice", "users", []string{"@users"}, true},
		{"alice", "users", []string{"@wheel", "bob"}, false},
		{"root", "root", []string{"@root"}, true},
		{"nobody", "nogroup", nil, false},
	}
	for _, tt := range tests {
		if got := matchUser(tt.user, tt.group, tt.list); got != tt.want {
			t.Errorf("matchUser(%s, %s, %q) = %v, want %v", tt.user, tt.group, tt.list, got, tt.want)
		}
	}
	p := &Peer{User: "nixbld1", Group: "nixbld"}
	if err := authorize(p, []string{"*"}, []string{"*"}, "nixbld"); err == nil {
		t.Error("a build user (primary group build-users-group) may connect")
	}
}
