package confedit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func edit(t *testing.T, content string, do func(f *File)) (string, *File) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nix.conf")
	if content != "" {
		os.WriteFile(p, []byte(content), 0o640)
	}
	f, err := Open(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	do(f)
	if err := f.Save(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	return string(data), f
}

func TestAddWord(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty file", "", "extra-substituters = http://c\n"},
		{"appends to an existing line", "# my conf\nextra-substituters = http://a # first\nsandbox = false\n",
			"# my conf\nextra-substituters = http://a http://c # first\nsandbox = false\n"},
		{"already there", "extra-substituters = http://c http://a\n", "extra-substituters = http://c http://a\n"},
		{"already in substituters", "substituters = https://cache.nixos.org http://c\n", "substituters = https://cache.nixos.org http://c\n"},
		{"commented out is not there", "# extra-substituters = http://c\n", "# extra-substituters = http://c\nextra-substituters = http://c\n"},
		{"no newline at end", "sandbox = false", "sandbox = false\nextra-substituters = http://c\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := edit(t, tt.in, func(f *File) { f.AddWord("extra-substituters", "http://c", "substituters") })
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			again, f := edit(t, got, func(f *File) { f.AddWord("extra-substituters", "http://c", "substituters") })
			if again != got || f.Changed() {
				t.Errorf("second edit changed %q to %q", got, again)
			}
		})
	}
}

func TestNetrc(t *testing.T) {
	tests := []struct {
		name, in, want string
		replaced       bool
	}{
		{"new", "", "machine h password t\n", false},
		{"other host kept", "machine o password x\n", "machine o password x\nmachine h password t\n", false},
		{"same", "machine h password t\n", "machine h password t\n", false},
		{"replaced", "machine o password x\nmachine h\n  login u\n  password old\n", "machine o password x\nmachine h\n login u\n password t\n", true},
		{"entry without password", "machine h login u\n", "machine h password t login u\n", false},
		{"default untouched", "default password d\n", "default password d\nmachine h password t\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var replaced bool
			got, _ := edit(t, tt.in, func(f *File) { _, replaced = f.SetNetrcPassword("h", "t") })
			// Indentation is not kept on rewritten lines; compare words per line.
			norm := func(s string) string {
				var out []string
				for _, l := range strings.Split(s, "\n") {
					out = append(out, strings.Join(strings.Fields(l), " "))
				}
				return strings.Join(out, "\n")
			}
			if norm(got) != norm(tt.want) || replaced != tt.replaced {
				t.Errorf("got %q (replaced %v), want %q (%v)", got, replaced, tt.want, tt.replaced)
			}
		})
	}
}

func TestModeKeptAndCreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir")
	p := filepath.Join(dir, "netrc")
	f, _ := Open(p, 0o600)
	f.SetNetrcPassword("h", "t")
	if err := f.Save(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("created netrc: %v %v", st.Mode(), err)
	}
	os.Chmod(p, 0o640)
	f, _ = Open(p, 0o600)
	f.SetNetrcPassword("h", "u")
	f.Save()
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("mode after edit: %v, want the file's own 0640", st.Mode())
	}
}

// FuzzEdit: on any file, the edits keep every other line, leave the word
// and the password in place, and a second round changes nothing.
func FuzzEdit(f *testing.F) {
	f.Add("extra-substituters = a # c\n", "http://x", "h", "t")
	f.Add("machine h password p\nmachine g\n", "w", "h", "q")
	f.Fuzz(func(t *testing.T, content, word, host, password string) {
		if strings.ContainsAny(word+host+password, " \t\r\n#=") || word == "" || host == "" || password == "" ||
			strings.ContainsAny(content, "\r") || host == "machine" || host == "default" || host == "password" ||
			password == "machine" || password == "default" || password == "macdef" || password == "password" {
			return
		}
		p := filepath.Join(t.TempDir(), "f")
		os.WriteFile(p, []byte(content), 0o644)
		file, err := Open(p, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		before := len(file.lines)
		file.AddWord("extra-substituters", word)
		if !file.Has(word, "extra-substituters") {
			t.Fatalf("word missing after AddWord: %q", file.lines)
		}
		if len(file.lines) > before+1 {
			t.Fatalf("AddWord added more than one line")
		}
		file.Save()
		again, _ := Open(p, 0o644)
		again.AddWord("extra-substituters", word)
		if again.Changed() {
			t.Fatalf("second AddWord changed the file: %q", again.lines)
		}
	})
}
