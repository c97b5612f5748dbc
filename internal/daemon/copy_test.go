package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCopySignVerify moves a closure out of the daemon's store and back
// (nix copy both ways, nix-store --export/--import), signs and verifies
// it, optimises and verifies the store, as the real nix-daemon does.
func TestCopySignVerify(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a"), []byte("same bytes\n"), 0o644)
	os.WriteFile(filepath.Join(src, "b"), []byte("same bytes\n"), 0o644)
	// One key for both runs, so that both sign alike.
	keys := newTestStore(t, "")
	key := filepath.Join(t.TempDir(), "key")
	keys.local("nix-store", "--generate-binary-cache-key", "test-1", key, key+".pub")
	script := func(s *testStore) []string {
		other := filepath.Join(s.root, "other")
		otherURI := "local?store=" + s.store + "&real=" + other + "/store&state=" + other + "/state&log=" + other + "/log"
		dep := s.build("dep", "echo dep > $out")
		top := s.build("top", "mkdir $out; echo $dep0 > $out/ref; echo same > $out/x; echo same > $out/y", dep)
		out := []string{
			s.run("nix", "copy", "--no-check-sigs", "--to", otherURI, top),
			s.run("nix-store", "--gc"), storeListing(s),
			s.run("nix", "copy", "--no-check-sigs", "--from", otherURI, top),
			noRegTime(s.run("nix", "path-info", "--json", "-r", top)),
		}
		exported := filepath.Join(s.root, "closure.export")
		exp := s.command(true, "nix-store", "--export", top, dep)
		f, _ := os.Create(exported)
		exp.Stdout = f
		if err := exp.Run(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		s.run("nix-store", "--gc")
		imp := s.command(true, "nix-store", "--import")
		imp.Stdin, _ = os.Open(exported)
		out = append(out, s.runCmd(imp), noRegTime(s.run("nix", "path-info", "--json", "-r", top)))

		pub, _ := os.ReadFile(key + ".pub")
		out = append(out,
			s.run("nix", "store", "sign", "--key-file", key, "-r", top),
			s.run("nix", "store", "sign", "--key-file", key, top), // again: no duplicate
			s.run("nix", "store", "verify", "--trusted-public-keys", string(pub), "--sigs-needed", "1", "-r", top),
			noRegTime(s.run("nix", "path-info", "--json", "--sigs", "-r", top)),
		)
		_, errOut, err := s.try("nix", "store", "verify", "--trusted-public-keys", "other-1:"+strings.Repeat("A", 43)+"=", "--sigs-needed", "1", top)
		out = append(out, "untrusted key: "+strings.TrimSpace(errOut), boolStr(err != nil))

		a := strings.TrimSpace(s.run("nix-store", "--add", src+"/a"))
		b := strings.TrimSpace(s.run("nix-store", "--add", src+"/b"))
		_, errOut, _ = s.try("nix-store", "--optimise")
		out = append(out, strings.TrimSpace(errOut), boolStr(sameInode(a, b)), boolStr(sameInode(top+"/x", top+"/y")))
		o, e, err := s.try("nix-store", "--verify", "--check-contents")
		out = append(out, o+e, boolStr(err != nil))

		// Corrupt a path: verify reports it; repairing needs a substituter
		// or the deriver's build, which neither daemon has here.
		os.Chmod(a, 0o644)
		os.WriteFile(a, []byte("corrupted\n"), 0o644)
		os.Chmod(a, 0o444)
		o, e, err = s.try("nix-store", "--verify", "--check-contents")
		out = append(out, o+e, boolStr(err != nil))
		o, e, err = s.try("nix-store", "--verify", "--check-contents", "--repair")
		// Nix prefixes "error: " to the repair failure (logError); silo's
		// store logs it plainly.
		out = append(out, strings.ReplaceAll(o+e, "error: cannot repair", "cannot repair"), boolStr(err != nil))
		return out
	}
	compareWithNix(t, "", script)
}

func lastLine(s string) string {
	l := lines(s)
	if len(l) == 0 {
		return ""
	}
	return l[len(l)-1]
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func sameInode(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}
