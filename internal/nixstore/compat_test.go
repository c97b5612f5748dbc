package nixstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
	"github.com/silo-cache/silo/internal/storepath"
)

// dumpReader streams the NAR of path.
func dumpReader(path string) io.Reader {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(nar.Dump(context.Background(), pw, path)) }()
	return pr
}

// pathInfoJSON is what `nix path-info --json` prints of a path, without
// the fields that differ between two stores holding the same path.
type pathInfoJSON struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    uint64   `json:"narSize"`
	References []string `json:"references"`
	CA         string   `json:"ca"`
	Deriver    string   `json:"deriver"`
	Signatures []string `json:"signatures"`
	Ultimate   bool     `json:"ultimate"`
}

func nixPathInfo(t *testing.T, ts *storetest.Store) []pathInfoJSON {
	t.Helper()
	out, _ := ts.Run("nix", "path-info", "--json", "--all")
	var infos []pathInfoJSON
	if err := json.Unmarshal([]byte(out), &infos); err != nil {
		t.Fatalf("nix path-info --json: %v: %s", err, out)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Path < infos[j].Path })
	return infos
}

// TestAddMatchesNix adds the same contents with silo and with the real Nix,
// each in its own store, by every content-address method: the paths, `nix
// path-info --json` and `nix-store --dump-db` must be the same, and the
// real Nix must verify silo's store with --check-contents.
func TestAddMatchesNix(t *testing.T) {
	ctx := context.Background()
	silo := storetest.New(t, true)
	nixs := storetest.New(t, true)
	src := t.TempDir()
	tree := storetest.MakeTree(t, src, "tree")
	file := filepath.Join(src, "file.txt")
	os.WriteFile(file, []byte("flat contents\n"), 0o644)
	exe := filepath.Join(src, "tool")
	os.WriteFile(exe, []byte("#!/bin/sh\necho hi\n"), 0o755)
	link := filepath.Join(src, "link")
	os.Symlink("/some/target", link)

	adds := []struct {
		nixArgs []string
		src     string
		name    string
		m       nixstore.CAMethod
	}{
		{[]string{"--add", tree}, tree, "tree", nixstore.CAMethod{Recursive: true, Algo: hash.SHA256}},
		{[]string{"--add", exe}, exe, "tool", nixstore.CAMethod{Recursive: true, Algo: hash.SHA256}},
		{[]string{"--add", link}, link, "link", nixstore.CAMethod{Recursive: true, Algo: hash.SHA256}},
		{[]string{"--add-fixed", "sha256", file}, file, "file.txt", nixstore.CAMethod{Algo: hash.SHA256}},
		{[]string{"--add-fixed", "md5", file}, file, "file.txt", nixstore.CAMethod{Algo: hash.MD5}},
		{[]string{"--add-fixed", "sha512", file}, file, "file.txt", nixstore.CAMethod{Algo: hash.SHA512}},
		{[]string{"--add-fixed", "--recursive", "sha1", tree}, tree, "tree", nixstore.CAMethod{Recursive: true, Algo: hash.SHA1}},
	}
	for _, a := range adds {
		var dump io.Reader
		if a.m.Recursive {
			dump = dumpReader(a.src)
		} else {
			f, err := os.Open(a.src)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			dump = f
		}
		info, err := silo.Store.AddToStoreFromDump(ctx, dump, a.name, a.m, nil, nixstore.AddOptions{})
		if err != nil {
			t.Fatalf("silo add %s: %v", a.m, err)
		}
		out, _ := nixs.Run("nix-store", a.nixArgs...)
		if want := strings.TrimSpace(out); info.Path.String() != want {
			t.Errorf("%s of %s: silo made %s, Nix %s", a.m, a.name, info.Path, want)
		}
	}
	// A text file referring to another path (what builtins.toFile makes).
	dep, _ := nixs.Run("nix-store", "--add", exe)
	depPath, _ := silo.Store.ParsePath(strings.TrimSpace(dep))
	text := "#!/bin/sh\nexec " + depPath.String() + "\n"
	info, err := silo.Store.AddTextToStore(ctx, "script", []byte(text), []storepath.Path{depPath}, nixstore.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	expr := `builtins.toFile "script" "#!/bin/sh\nexec ${builtins.storePath ` + depPath.String() + `}\n"`
	out, _ := nixs.Run("nix-instantiate", "--read-write-mode", "--eval", "--expr", expr)
	if want := strings.Trim(strings.TrimSpace(out), `"`); info.Path.String() != want {
		t.Errorf("text with a reference: silo made %s, Nix %s", info.Path, want)
	}

	if d := cmp.Diff(nixPathInfo(t, nixs), nixPathInfo(t, silo)); d != "" {
		t.Errorf("nix path-info --json differs (-Nix's store +silo's):\n%s", d)
	}
	dumpS, _ := silo.Run("nix-store", "--dump-db")
	dumpN, _ := nixs.Run("nix-store", "--dump-db")
	if dumpS != dumpN || dumpS == "" {
		t.Errorf("nix-store --dump-db differs:\nsilo:\n%s\nNix:\n%s", dumpS, dumpN)
	}
	silo.Run("nix-store", "--verify", "--check-contents")
	// Modes and times on disk are the ones Nix gives its own paths.
	for _, e := range nixs.Entries(t) {
		var a, b bytes.Buffer
		stat := func(root string, w *bytes.Buffer) {
			cmd := exec.Command("find", e, "-printf", `%P %y %m %T@ %s %l\n`)
			cmd.Dir, cmd.Stdout = root, w
			if err := cmd.Run(); err != nil {
				t.Fatal(err)
			}
		}
		stat(nixs.Store.RealStoreDir(), &a)
		stat(silo.Store.RealStoreDir(), &b)
		if a.String() != b.String() {
			t.Errorf("%s on disk differs:\nNix:\n%s\nsilo:\n%s", e, a.String(), b.String())
		}
	}
}

// TestSiloReadsNix lets the real Nix add paths and silo read them, then
// silo add a path referring to them, which Nix then reads.
func TestSiloReadsNix(t *testing.T) {
	ctx := context.Background()
	ts := storetest.New(t, true)
	src := t.TempDir()
	tree := storetest.MakeTree(t, src, "tree")
	out, _ := ts.Run("nix-store", "--add", tree)
	p, err := ts.Store.ParsePath(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	info, err := ts.Store.QueryPathInfo(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	_, h := storetest.NarOf(t, tree)
	if info.NarHash != h || info.CA != "fixed:r:sha256:"+h.Nix32() {
		t.Errorf("silo reads %+v", info)
	}
	all, err := ts.Store.QueryAllValidPaths(ctx)
	if err != nil || len(all) != 1 || all[0] != p {
		t.Errorf("all valid paths: %v, %v", all, err)
	}
	q := storetest.AddTree(t, ts.Store, storetest.MakeTree(t, t.TempDir(), "user"), "user", p)
	refs, _ := ts.Run("nix-store", "-q", "--references", q.String())
	if strings.TrimSpace(refs) != p.String() {
		t.Errorf("Nix sees references %q of %s, want %s", refs, q, p)
	}
	referrers, err := ts.Store.QueryReferrers(ctx, p)
	if err != nil || len(referrers) != 1 || referrers[0] != q {
		t.Errorf("referrers of %s: %v, %v", p, referrers, err)
	}
	if got, err := ts.Store.QueryPathFromHashPart(ctx, q.HashPart()); err != nil || got != q {
		t.Errorf("path from hash part: %v, %v", got, err)
	}
	ts.Run("nix-store", "--verify", "--check-contents")
}

// TestLayoutMatchesNix compares what silo's Open creates with what the
// real Nix's LocalStore creates: the same directories, files and modes,
// and a database of the same schema.
func TestLayoutMatchesNix(t *testing.T) {
	silo := storetest.New(t, true)
	nixs := storetest.New(t, true)
	// Replace the Nix store's state by the real Nix's own.
	os.RemoveAll(filepath.Join(nixs.Root, "nix"))
	nixs.Try("nix-store", "-q", "--hash", "/nix/store/00000000000000000000000000000000-x")
	layout := func(root string) string {
		cmd := exec.Command("find", "nix", "-not", "-path", "*/temproots/*", "-not", "-name", "db.sqlite*", "-printf", `%p %y %m %s %l\n`)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		for i, l := range lines { // symlink targets name the root
			lines[i] = strings.ReplaceAll(l, root, "ROOT")
		}
		sort.Strings(lines)
		return strings.Join(lines, "\n")
	}
	if d := cmp.Diff(layout(nixs.Root), layout(silo.Root)); d != "" {
		t.Errorf("layout differs (-Nix +silo):\n%s", d)
	}
	schema := func(root string) string {
		out, err := exec.Command("sqlite3", filepath.Join(root, "nix/var/nix/db/db.sqlite"),
			"select type, name, tbl_name from sqlite_master order by name; pragma table_info(ValidPaths); pragma table_info(Refs); pragma table_info(DerivationOutputs); pragma journal_mode;").Output()
		if err != nil {
			t.Skipf("sqlite3 not available: %v", err)
		}
		return string(out)
	}
	if d := cmp.Diff(schema(nixs.Root), schema(silo.Root)); d != "" {
		t.Errorf("database schema differs (-Nix +silo):\n%s", d)
	}
}

// TestReopenAfterDelete deletes the store and state directories under an
// open store (Nix's tests' clearStore); the next Open re-creates them.
func TestReopenAfterDelete(t *testing.T) {
	ts := storetest.New(t, false)
	storetest.AddText(t, ts.Store, "x", "x")
	os.RemoveAll(filepath.Join(ts.Root, "nix"))
	s := ts.Open(ts.Opts)
	p := storetest.AddText(t, s, "y", "y")
	if ok, err := s.IsValid(context.Background(), p); !ok || err != nil {
		t.Fatalf("%s not valid after re-creating the store: %v", p, err)
	}
}
