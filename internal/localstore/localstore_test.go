package localstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/storepath"
)

// jsonInfo is one entry of `nix path-info --json` (Nix 2.8).
type jsonInfo struct {
	Path             string   `json:"path"`
	NarHash          string   `json:"narHash"`
	NarSize          uint64   `json:"narSize"`
	References       []string `json:"references"`
	Deriver          string   `json:"deriver,omitempty"`
	RegistrationTime int64    `json:"registrationTime"`
	Ultimate         bool     `json:"ultimate,omitempty"`
	Signatures       []string `json:"signatures,omitempty"`
	CA               string   `json:"ca,omitempty"`
}

func toJSON(info *localstore.PathInfo) jsonInfo {
	j := jsonInfo{
		Path:             info.Path.String(),
		NarHash:          info.NarHash.SRI(),
		NarSize:          info.NarSize,
		References:       []string{},
		Deriver:          info.Deriver.String(),
		RegistrationTime: info.RegistrationTime.Unix(),
		Ultimate:         info.Ultimate,
		CA:               info.CA,
	}
	for _, r := range info.References {
		j.References = append(j.References, r.String())
	}
	for _, s := range info.Sigs {
		j.Signatures = append(j.Signatures, s.String())
	}
	return j
}

// fixture builds a small closure with every kind of field set: an
// input-addressed output with two signatures referencing another output
// and a content-addressed path.
type fixture struct {
	n        *nixtest.Nix
	dep, top string
	ca       string
}

func newFixture(t *testing.T) *fixture {
	n := nixtest.Require(t)
	f := &fixture{n: n}
	file := filepath.Join(t.TempDir(), "hello.txt")
	os.WriteFile(file, []byte("hello\n"), 0o644)
	f.ca = strings.TrimSpace(n.Run("nix-store", "--add", file))
	f.dep = n.Build("dep", "echo $dep0 > $out", f.ca)
	f.top = n.Build("top", "/bin/mkdir $out; echo $dep0 > $out/ref; echo $out > $out/self", f.dep)
	dir := t.TempDir()
	for _, name := range []string{"test-b-1", "test-a-1"} {
		sec := filepath.Join(dir, name+".sec")
		n.Run("nix-store", "--generate-binary-cache-key", name, sec, filepath.Join(dir, name+".pub"))
		n.Run("nix", "store", "sign", "--key-file", sec, f.top)
	}
	return f
}

func (f *fixture) want(t *testing.T) map[string]jsonInfo {
	var infos []jsonInfo
	out := f.n.Run("nix", "path-info", "--json", "--recursive", f.top)
	if err := json.Unmarshal([]byte(out), &infos); err != nil {
		t.Fatalf("nix path-info --json: %v\n%s", err, out)
	}
	m := map[string]jsonInfo{}
	for _, i := range infos {
		m[i.Path] = i
	}
	if len(m) != 3 {
		t.Fatalf("nix path-info --recursive %s: %d paths, want 3", f.top, len(m))
	}
	return m
}

func TestStoresAgreeWithNix(t *testing.T) {
	f := newFixture(t)
	want := f.want(t)
	if len(want[f.top].Signatures) != 2 || want[f.ca].CA == "" {
		t.Fatalf("fixture lacks signatures or a CA: %+v", want)
	}
	sock := f.n.StartDaemon()
	ctx := context.Background()
	db, err := localstore.OpenDB(storepath.DefaultDir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	daemon, err := localstore.DialDaemon(ctx, sock, storepath.DefaultDir)
	if err != nil {
		t.Fatal(err)
	}
	defer daemon.Close()

	top, err := storepath.DefaultDir.Parse(f.top)
	if err != nil {
		t.Fatal(err)
	}
	missing, _ := storepath.DefaultDir.ParseBase("00000000000000000000000000000000-missing")
	for name, s := range map[string]localstore.Store{"db": db, "daemon": daemon} {
		t.Run(name, func(t *testing.T) {
			closure, err := localstore.Closure(ctx, s, []storepath.Path{top, top})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]jsonInfo{}
			pos := map[storepath.Path]int{}
			for i, info := range closure {
				got[info.Path.String()] = toJSON(info)
				pos[info.Path] = i
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("closure differs from nix path-info --json --recursive (-nix +silo):\n%s", diff)
			}
			if len(closure) != len(got) {
				t.Errorf("closure has %d entries for %d paths: duplicates", len(closure), len(got))
			}
			for _, info := range closure {
				for _, r := range info.References {
					if r != info.Path && pos[r] > pos[info.Path] {
						t.Errorf("%s comes before its reference %s", info.Path, r)
					}
				}
			}

			if _, err := s.QueryPathInfo(ctx, missing); !errors.Is(err, localstore.ErrNotFound) {
				t.Errorf("QueryPathInfo(missing) = %v, want ErrNotFound", err)
			}
			if _, err := localstore.Closure(ctx, s, []storepath.Path{top, missing}); !errors.Is(err, localstore.ErrNotFound) {
				t.Errorf("Closure with a missing root = %v, want ErrNotFound", err)
			}
			if p, err := s.QueryPathFromHashPart(ctx, top.HashPart()); err != nil || p != top {
				t.Errorf("QueryPathFromHashPart(%s) = %v, %v; want %s", top.HashPart(), p, err, top)
			}
			if _, err := s.QueryPathFromHashPart(ctx, missing.HashPart()); !errors.Is(err, localstore.ErrNotFound) {
				t.Errorf("QueryPathFromHashPart(zeros) = %v, want ErrNotFound", err)
			}
			if _, err := s.QueryPathFromHashPart(ctx, "short"); err == nil || errors.Is(err, localstore.ErrNotFound) {
				t.Errorf("QueryPathFromHashPart(short) = %v, want an invalid-argument error", err)
			}
		})
	}
}

// The database is read while Nix writes to it: reads neither fail nor block
// builds.
func TestDBWhileNixBuilds(t *testing.T) {
	n := nixtest.Require(t)
	first := n.Build("first", "echo 1 > $out")
	p, _ := storepath.DefaultDir.Parse(first)
	db, err := localstore.OpenDB(storepath.DefaultDir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	queries := 0
	go func() {
		for ctx.Err() == nil {
			if _, err := db.QueryPathInfo(ctx, p); err != nil && ctx.Err() == nil {
				errc <- err
				return
			}
			queries++
		}
		errc <- nil
	}()
	var built []string
	for i := range 3 {
		built = append(built, n.Build("concurrent", "echo "+string(rune('a'+i))+" > $out"))
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("query during builds: %v", err)
	}
	for _, b := range built {
		bp, _ := storepath.DefaultDir.Parse(b)
		if _, err := db.QueryPathInfo(context.Background(), bp); err != nil {
			t.Errorf("path built while the database was open: %v", err)
		}
	}
	t.Logf("%d queries during 3 builds", queries)
}

func TestOpenChoosesSource(t *testing.T) {
	n := nixtest.Require(t)
	sock := n.StartDaemon()
	ctx := context.Background()
	tests := []struct {
		remote string
		want   string
	}{
		{"", "*localstore.DB"},
		{"daemon", "*localstore.Daemon"},
	}
	for _, tt := range tests {
		t.Run("NIX_REMOTE="+tt.remote, func(t *testing.T) {
			t.Setenv("NIX_REMOTE", tt.remote)
			t.Setenv("NIX_DAEMON_SOCKET_PATH", sock)
			s, err := localstore.Open(ctx, storepath.DefaultDir)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := typeName(s); got != tt.want {
				t.Errorf("Open chose %s, want %s", got, tt.want)
			}
		})
	}
	t.Run("daemon down", func(t *testing.T) {
		t.Setenv("NIX_REMOTE", "daemon")
		t.Setenv("NIX_DAEMON_SOCKET_PATH", filepath.Join(t.TempDir(), "none"))
		if _, err := localstore.Open(ctx, storepath.DefaultDir); err == nil || !strings.Contains(err.Error(), "nix-daemon") {
			t.Errorf("Open with no daemon = %v, want an error naming nix-daemon", err)
		}
	})
}

func typeName(s localstore.Store) string {
	switch s.(type) {
	case *localstore.DB:
		return "*localstore.DB"
	case *localstore.Daemon:
		return "*localstore.Daemon"
	}
	return "?"
}
