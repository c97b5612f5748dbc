// Package storetest sets up private local stores for tests of the store
// packages, shared by silo (package nixstore) and the real Nix in local
// mode, and runs the real Nix on them.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/storepath"
)

// Store is a private store that silo and, when installed, the real Nix
// both use. By default it is a chroot store: paths are named in
// /nix/store but lie under Root (for Nix: NIX_REMOTE=Root), so that two
// test stores hold the same paths for the same contents. With OwnDir it
// is a store in a directory of its own (NIX_STORE_DIR, NIX_STATE_DIR),
// where the real Nix can also build.
type Store struct {
	T      testing.TB
	Root   string
	OwnDir bool
	Opts   nixstore.Options
	Nix    *nixtest.Nix // nil without withNix
	Store  *nixstore.Store
	// NixConf is appended to the nix.conf the real Nix reads.
	NixConf string
}

// New opens a fresh chroot store. withNix requires the real Nix (the test
// skips without it, or fails under CI).
func New(t testing.TB, withNix bool) *Store { return NewIn(t, withNix, false) }

// NewIn opens a fresh store, a chroot store or (ownDir) one in its own
// store directory.
func NewIn(t testing.TB, withNix, ownDir bool) *Store {
	t.Helper()
	root := t.TempDir()
	ts := &Store{T: t, Root: root, OwnDir: ownDir}
	if ownDir {
		dir, err := storepath.NewDir(filepath.Join(root, "store"))
		if err != nil {
			t.Fatal(err)
		}
		ts.Opts = nixstore.DefaultOptions(dir, filepath.Join(root, "var", "nix"), filepath.Join(root, "var", "log", "nix"))
	} else {
		ts.Opts = nixstore.DefaultOptions(storepath.DefaultDir, filepath.Join(root, "nix", "var", "nix"), filepath.Join(root, "nix", "var", "log", "nix"))
		ts.Opts.RealStoreDir = filepath.Join(root, "nix", "store")
	}
	ts.Opts.FsyncMetadata = false
	ts.Opts.ReservedSize = 0
	if withNix {
		ts.Nix = nixtest.Require(t)
	}
	ts.Store = ts.Open(ts.Opts)
	return ts
}

// Open opens another Store (another connection) on the store.
func (ts *Store) Open(o nixstore.Options) *nixstore.Store {
	ts.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := nixstore.Open(ctx, o)
	if err != nil {
		ts.T.Fatalf("open store: %v", err)
	}
	ts.T.Cleanup(func() { s.Close() })
	return s
}

// Env is the environment for the real Nix in local mode on this store.
func (ts *Store) Env() []string {
	conf := filepath.Join(ts.Root, "etc")
	os.MkdirAll(conf, 0o755)
	os.WriteFile(filepath.Join(conf, "nix.conf"), []byte(nixtest.Config+"fsync-metadata = false\ngc-reserved-space = 0\n"+ts.NixConf), 0o644)
	env := append(ts.Nix.Env(), "NIX_CONF_DIR="+conf)
	if ts.OwnDir {
		return append(env, "NIX_REMOTE=",
			"NIX_STORE_DIR="+string(ts.Opts.StoreDir),
			"NIX_STATE_DIR="+ts.Opts.StateDir,
			"NIX_LOG_DIR="+ts.Opts.LogDir)
	}
	return append(env, "NIX_REMOTE="+ts.Root)
}

// Cmd returns a command running a Nix program on this store.
func (ts *Store) Cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = ts.Env()
	return cmd
}

// Run runs a Nix program on this store and returns its stdout and stderr;
// the test fails if the program does.
func (ts *Store) Run(name string, args ...string) (string, string) {
	ts.T.Helper()
	out, errOut, err := ts.Try(name, args...)
	if err != nil {
		ts.T.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errOut)
	}
	return out, errOut
}

// Try runs a Nix program on this store.
func (ts *Store) Try(name string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := ts.Cmd(ctx, name, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// RealPath returns where a store path (printed by Nix) lies on disk.
func (ts *Store) RealPath(p string) string {
	return ts.Store.RealStoreDir() + strings.TrimPrefix(p, string(ts.Opts.StoreDir))
}

// Entries lists the store directory, without .links, sorted.
func (ts *Store) Entries(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(ts.Store.RealStoreDir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.Name() != ".links" {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}

// MakeTree writes a small tree (files, an executable, a symlink, a
// directory of 70 kB) under dir/name and returns its path.
func MakeTree(t testing.TB, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	for f, c := range map[string]string{"a": "hello\n", "sub/b": "world\n", "sub/deep/c": strings.Repeat("x", 70000)} {
		os.MkdirAll(filepath.Dir(filepath.Join(p, f)), 0o755)
		if err := os.WriteFile(filepath.Join(p, f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(p, "run"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("sub/b", filepath.Join(p, "link"))
	return p
}

// NarOf returns the NAR of path and its SHA-256.
func NarOf(t testing.TB, path string) ([]byte, hash.Hash) {
	t.Helper()
	var b bytes.Buffer
	if err := nar.Dump(context.Background(), &b, path); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), hash.Sum(hash.SHA256, b.Bytes())
}

// RandomPath returns an input-addressed-looking path named name in dir.
func RandomPath(t testing.TB, dir storepath.Dir, name string) storepath.Path {
	var b [20]byte
	rand.Read(b[:])
	p, err := dir.ParseBase(nix32.Encode(b[:]) + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// AddTree adds a copy of the tree at src as an input-addressed path
// named name with the given references, through AddToStoreNar.
func AddTree(t testing.TB, s *nixstore.Store, src, name string, refs ...storepath.Path) storepath.Path {
	t.Helper()
	data, h := NarOf(t, src)
	p := RandomPath(t, s.Dir(), name)
	info := &nixstore.PathInfo{Path: p, NarHash: h, NarSize: uint64(len(data)), References: refs}
	if err := s.AddToStoreNar(context.Background(), info, bytes.NewReader(data), nixstore.AddOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// AddText adds a text file through AddTextToStore.
func AddText(t testing.TB, s *nixstore.Store, name, text string, refs ...storepath.Path) storepath.Path {
	t.Helper()
	info, err := s.AddTextToStore(context.Background(), name, []byte(text), refs, nixstore.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return info.Path
}
