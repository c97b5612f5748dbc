package storepath

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nixtest"
)

func mustParse(t testing.TB, d Dir, s string) Path {
	t.Helper()
	p, err := d.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustHash(t testing.TB, s string) hash.Hash {
	t.Helper()
	h, err := hash.Parse(strings.TrimSpace(s))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Vectors printed by the real Nix 2.8 (nix-store --add and friends on a
// file holding "hello\n"), so that the computation is checked even where
// Nix is not installed. TestMakeMatchesNix checks the same against a live Nix.
func TestMakeVectors(t *testing.T) {
	narHash := mustHash(t, "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw") // nix hash path of the file
	flatSHA1 := hash.Sum(hash.SHA1, []byte("hello\n"))
	other, err := NewDir("/other/dir")
	if err != nil {
		t.Fatal(err)
	}
	f := mustParse(t, DefaultDir, "/nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f")
	bashrc := mustParse(t, DefaultDir, "/nix/store/rqixwfyz9mxmf0anjbi9ib9fa6fbclcp-.bashrc")
	otherF := mustParse(t, other, "/other/dir/8qm49s338xgsvrrbnf62cm9bc62vkxxj-f")
	tests := []struct {
		name string
		make func() (Path, error)
		want string
	}{
		{"nix-store --add f", func() (Path, error) { return DefaultDir.MakeSourcePath("f", narHash, nil, false) }, f.String()},
		{"nix-store --add .bashrc", func() (Path, error) { return DefaultDir.MakeSourcePath(".bashrc", narHash, nil, false) }, bashrc.String()},
		{"nix-store --add-fixed sha1 f", func() (Path, error) { return DefaultDir.MakeFixedOutputPath("f", false, flatSHA1, nil, false) },
			"/nix/store/pbqmppvgnnyqxagz7bnmwfdfvr3h43f2-f"},
		{"--add-fixed --recursive sha256 is a source path", func() (Path, error) { return DefaultDir.MakeFixedOutputPath("f", true, narHash, nil, false) }, f.String()},
		{"toFile with two references, given unsorted", func() (Path, error) {
			content := f.String() + " " + bashrc.String()
			return DefaultDir.MakeTextPath("x", hash.Sum(hash.SHA256, []byte(content)), []Path{f, bashrc, f})
		}, "/nix/store/mg4zppskv7qbwhnzr2m8lfg344s8nkad-x"},
		{"store=/other/dir add", func() (Path, error) { return other.MakeSourcePath("f", narHash, nil, false) }, otherF.String()},
		{"store=/other/dir toFile", func() (Path, error) {
			return other.MakeTextPath("x", hash.Sum(hash.SHA256, []byte(otherF.String())), []Path{otherF})
		}, "/other/dir/vqrfsi10pkhd7iixpil41l9qpyq0gmrx-x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.make()
			if err != nil {
				t.Fatal(err)
			}
			if p.String() != tt.want {
				t.Errorf("got %s, want %s", p, tt.want)
			}
		})
	}
}

// TestMakeMatchesNix computes paths with silo and with the real Nix, for
// every way Nix makes a content-addressed path.
func TestMakeMatchesNix(t *testing.T) {
	n := nixtest.Require(t)
	tmp := t.TempDir()
	nonce := nixtest.Nonce()
	file := filepath.Join(tmp, "file-"+nonce)
	if err := os.WriteFile(file, []byte("contents "+nonce+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "dir-"+nonce)
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "exe"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/exe", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	out := func(args ...string) string { return strings.TrimSpace(n.Run(args[0], args[1:]...)) }
	narHash := func(algo, p string) hash.Hash {
		return mustHash(t, algo+":"+out("nix", "hash", "path", "--type", algo, "--base32", p))
	}
	flatHash := func(algo, p string) hash.Hash {
		return mustHash(t, algo+":"+out("nix", "hash", "file", "--type", algo, "--base32", p))
	}
	other, err := NewDir("/other/dir")
	if err != nil {
		t.Fatal(err)
	}
	otherStore := filepath.Join(tmp, "chroot") + "?store=/other/dir"
	fileName, dirName := filepath.Base(file), filepath.Base(dir)

	srcFile := out("nix-store", "--add", file)
	otherSrc := out("nix-store", "--store", otherStore, "--add", file)
	toFileExpr := func(ref string) string {
		return `builtins.toFile "t" "ref: ${builtins.storePath "` + ref + `"}"`
	}
	tests := []struct {
		name string
		nix  []string
		silo func() (Path, error)
	}{
		{"add file", []string{"nix-store", "--add", file}, func() (Path, error) {
			return DefaultDir.MakeSourcePath(fileName, narHash("sha256", file), nil, false)
		}},
		{"add dir", []string{"nix-store", "--add", dir}, func() (Path, error) {
			return DefaultDir.MakeSourcePath(dirName, narHash("sha256", dir), nil, false)
		}},
		{"add-fixed sha256 flat", []string{"nix-store", "--add-fixed", "sha256", file}, func() (Path, error) {
			return DefaultDir.MakeFixedOutputPath(fileName, false, flatHash("sha256", file), nil, false)
		}},
		{"add-fixed sha1 flat", []string{"nix-store", "--add-fixed", "sha1", file}, func() (Path, error) {
			return DefaultDir.MakeFixedOutputPath(fileName, false, flatHash("sha1", file), nil, false)
		}},
		{"add-fixed md5 flat", []string{"nix-store", "--add-fixed", "md5", file}, func() (Path, error) {
			return DefaultDir.MakeFixedOutputPath(fileName, false, flatHash("md5", file), nil, false)
		}},
		{"add-fixed sha256 recursive dir", []string{"nix-store", "--add-fixed", "--recursive", "sha256", dir}, func() (Path, error) {
			return DefaultDir.MakeFixedOutputPath(dirName, true, narHash("sha256", dir), nil, false)
		}},
		{"add-fixed sha512 recursive dir", []string{"nix-store", "--add-fixed", "--recursive", "sha512", dir}, func() (Path, error) {
			return DefaultDir.MakeFixedOutputPath(dirName, true, narHash("sha512", dir), nil, false)
		}},
		{"toFile with a reference", []string{"nix", "eval", "--raw", "--impure", "--expr", toFileExpr(srcFile)}, func() (Path, error) {
			ref := mustParse(t, DefaultDir, srcFile)
			return DefaultDir.MakeTextPath("t", hash.Sum(hash.SHA256, []byte("ref: "+srcFile)), []Path{ref})
		}},
		{"other store dir: add dir", []string{"nix-store", "--store", otherStore, "--add", dir}, func() (Path, error) {
			return other.MakeSourcePath(dirName, narHash("sha256", dir), nil, false)
		}},
		{"other store dir: add-fixed sha1", []string{"nix-store", "--store", otherStore, "--add-fixed", "sha1", file}, func() (Path, error) {
			return other.MakeFixedOutputPath(fileName, false, flatHash("sha1", file), nil, false)
		}},
		{"other store dir: toFile with a reference", []string{"nix", "eval", "--store", otherStore, "--raw", "--impure", "--expr", toFileExpr(otherSrc)}, func() (Path, error) {
			ref := mustParse(t, other, otherSrc)
			return other.MakeTextPath("t", hash.Sum(hash.SHA256, []byte("ref: "+otherSrc)), []Path{ref})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := out(tt.nix...)
			got, err := tt.silo()
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != want {
				t.Errorf("silo computed %s, Nix made %s", got, want)
			}
		})
	}

	// A derivation is a text path whose references are its inputs.
	t.Run("drv", func(t *testing.T) {
		expr := `derivation { name = "t-` + nonce + `"; system = "x86_64-linux"; builder = "/bin/sh"; src = builtins.storePath "` + srcFile +
			`"; dep = builtins.toFile "dep" "` + nonce + `"; }`
		drv := out("nix-instantiate", "--expr", expr)
		contents, err := os.ReadFile(drv)
		if err != nil {
			t.Fatal(err)
		}
		var refs []Path
		for _, r := range strings.Fields(out("nix-store", "--query", "--references", drv)) {
			refs = append(refs, mustParse(t, DefaultDir, r))
		}
		if len(refs) != 2 {
			t.Fatalf("drv has references %v, want 2", refs)
		}
		p := mustParse(t, DefaultDir, drv)
		got, err := DefaultDir.MakeTextPath(p.Name(), hash.Sum(hash.SHA256, contents), refs)
		if err != nil {
			t.Fatal(err)
		}
		if got != p {
			t.Errorf("silo computed %s, Nix made %s", got, p)
		}
		if !p.IsDerivation() {
			t.Errorf("%s: IsDerivation false", p)
		}
	})
}

func TestMakeErrors(t *testing.T) {
	sha256 := hash.Sum(hash.SHA256, nil)
	sha1 := hash.Sum(hash.SHA1, nil)
	ref := mustParse(t, DefaultDir, "/nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f")
	otherRef := mustParse(t, "/other", "/other/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f")
	tests := []struct {
		name string
		make func() (Path, error)
	}{
		{"text with sha1", func() (Path, error) { return DefaultDir.MakeTextPath("x", sha1, nil) }},
		{"source with sha1", func() (Path, error) { return DefaultDir.MakeSourcePath("x", sha1, nil, false) }},
		{"flat with refs", func() (Path, error) { return DefaultDir.MakeFixedOutputPath("x", false, sha256, []Path{ref}, false) }},
		{"recursive sha1 with self", func() (Path, error) { return DefaultDir.MakeFixedOutputPath("x", true, sha1, nil, true) }},
		{"no hash", func() (Path, error) { return DefaultDir.MakeFixedOutputPath("x", true, hash.Hash{}, nil, false) }},
		{"bad name", func() (Path, error) { return DefaultDir.MakeSourcePath("a/b", sha256, nil, false) }},
		{"ref in other dir", func() (Path, error) { return DefaultDir.MakeTextPath("x", sha256, []Path{otherRef}) }},
		{"zero ref", func() (Path, error) { return DefaultDir.MakeTextPath("x", sha256, []Path{{}}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := tt.make(); err == nil {
				t.Errorf("got %s, want an error", p)
			}
		})
	}
}

func TestParse(t *testing.T) {
	const h = "xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c"
	p, err := DefaultDir.Parse("/nix/store/" + h + "-hello-2.12.drv")
	if err != nil {
		t.Fatal(err)
	}
	got := []string{p.String(), p.Base(), p.HashPart(), p.Name(), string(p.Dir())}
	want := []string{"/nix/store/" + h + "-hello-2.12.drv", h + "-hello-2.12.drv", h, "hello-2.12.drv", "/nix/store"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("accessors (-want +got):\n%s", diff)
	}
	if p.IsZero() || !(Path{}).IsZero() || (Path{}).String() != "" {
		t.Error("IsZero wrong")
	}
	q, err := DefaultDir.ParseBase(p.Base())
	if err != nil || q != p {
		t.Errorf("ParseBase(%q) = %v, %v; want %v", p.Base(), q, err, p)
	}

	long := strings.Repeat("a", MaxNameLen)
	valid := []string{
		"/nix/store/" + h + "-" + long,
		"/nix/store/" + h + "-.bashrc", // Nix 2.8 makes these
		"/nix/store/" + h + "-..a",
		"/nix/store/" + h + "-A-Z_a.z+0=9?",
		"/nix/store/" + h + "--",
	}
	for _, s := range valid {
		if _, err := DefaultDir.Parse(s); err != nil {
			t.Errorf("Parse(%q): %v", s, err)
		}
	}

	invalid := []struct{ name, path string }{
		{"empty", ""},
		{"store dir itself", "/nix/store"},
		{"store dir slash", "/nix/store/"},
		{"not in dir", "/nix/other/" + h + "-x"},
		{"dir prefix without slash", "/nix/store" + h + "-x"},
		{"relative", "nix/store/" + h + "-x"},
		{"nested", "/nix/store/" + h + "-x/bin/sh"},
		{"trailing slash", "/nix/store/" + h + "-x/"},
		{"in subdirectory", "/nix/store/sub/" + h + "-x"},
		{"double slash", "/nix/store//" + h + "-x"},
		{"dot dot", "/nix/store/../" + h + "-x"},
		{"no name", "/nix/store/" + h},
		{"empty name", "/nix/store/" + h + "-"},
		{"no dash", "/nix/store/" + h + "_x"},
		{"hash too short", "/nix/store/" + h[1:] + "-x"},
		{"hash too long", "/nix/store/0" + h + "-x"},
		{"hash has e", "/nix/store/e" + h[1:] + "-x"},
		{"hash has o", "/nix/store/o" + h[1:] + "-x"},
		{"hash has u", "/nix/store/u" + h[1:] + "-x"},
		{"hash has t", "/nix/store/t" + h[1:] + "-x"},
		{"hash upper case", "/nix/store/" + strings.ToUpper(h) + "-x"},
		{"name with space", "/nix/store/" + h + "-a b"},
		{"name with slash-free bad char", "/nix/store/" + h + "-a@b"},
		{"name with NUL", "/nix/store/" + h + "-a\x00"},
		{"name with newline", "/nix/store/" + h + "-a\n"},
		{"name with non-ASCII", "/nix/store/" + h + "-é"},
		{"name dot", "/nix/store/" + h + "-."},
		{"name dot dot", "/nix/store/" + h + "-.."},
		{"leading dot dash", "/nix/store/" + h + "-.-x"},
		{"leading dot dot dash", "/nix/store/" + h + "-..-x"},
		{"too long", "/nix/store/" + h + "-" + long + "a"},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DefaultDir.Parse(tt.path)
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want an error", tt.path, p)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestNewDir(t *testing.T) {
	for _, s := range []string{"/nix/store", "/a", "/other/dir"} {
		if d, err := NewDir(s); err != nil || string(d) != s {
			t.Errorf("NewDir(%q) = %q, %v", s, d, err)
		}
	}
	for _, s := range []string{"", "/", "nix/store", "/nix/store/", "/nix//store", "/nix/./store", "/nix/../store"} {
		if d, err := NewDir(s); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("NewDir(%q) = %q, %v; want ErrInvalid", s, d, err)
		}
	}
	// A path in another directory is parsed relative to that directory only.
	other := Dir("/other/dir")
	p := mustParse(t, other, "/other/dir/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f")
	if _, err := DefaultDir.Parse(p.String()); err == nil {
		t.Errorf("DefaultDir.Parse(%s) succeeded", p)
	}
	if q := mustParse(t, DefaultDir, "/nix/store/"+p.Base()); q == p {
		t.Error("paths in different directories compare equal")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"/nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-f",
		"/nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-.bashrc",
		"/nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-..-x",
		"/nix/store/xp0dpr9yz5h0fk5c5lpj7zzqjbdh3w8c-a/b",
		"/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x",
		"/nix/store/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := DefaultDir.Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if p.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, p.String())
		}
		if p.HashPart()+"-"+p.Name() != p.Base() || len(p.HashPart()) != HashLen {
			t.Fatalf("inconsistent parts of %q", s)
		}
		if err := ValidateName(p.Name()); err != nil {
			t.Fatal(err)
		}
		q, err := DefaultDir.ParseBase(p.Base())
		if err != nil || q != p {
			t.Fatalf("ParseBase(%q) = %v, %v", p.Base(), q, err)
		}
	})
}
