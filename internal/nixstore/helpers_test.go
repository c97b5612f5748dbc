package nixstore

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/storepath"
)

// testStore is a private store that silo and, when installed, the real
// Nix both use. By default it is a chroot store: paths are named in
// /nix/store but lie under root (Nix: --store root), so that two test
// stores have the same paths for the same contents. With ownDir it is a
// store in a directory of its own (Nix: NIX_STORE_DIR, NIX_STATE_DIR).
type testStore struct {
	t      testing.TB
	root   string
	ownDir bool
	opts   Options
	nix    *nixtest.Nix // nil if Nix is not available
	store  *Store
}

// newTestStore opens a fresh chroot store; withNix requires the real Nix
// (it skips, or fails under CI, without it).
func newTestStore(t testing.TB, withNix bool) *testStore {
	return newTestStoreIn(t, withNix, false)
}

func newTestStoreIn(t testing.TB, withNix, ownDir bool) *testStore {
	t.Helper()
	root := t.TempDir()
	ts := &testStore{t: t, root: root, ownDir: ownDir}
	if ownDir {
		dir, err := storepath.NewDir(filepath.Join(root, "store"))
		if err != nil {
			t.Fatal(err)
		}
		ts.opts = DefaultOptions(dir, filepath.Join(root, "var", "nix"), filepath.Join(root, "var", "log", "nix"))
	} else {
		ts.opts = DefaultOptions(storepath.DefaultDir, filepath.Join(root, "nix", "var", "nix"), filepath.Join(root, "nix", "var", "log", "nix"))
		ts.opts.RealStoreDir = filepath.Join(root, "nix", "store")
	}
	ts.opts.FsyncMetadata = false
	ts.opts.ReservedSize = 0
	if withNix {
		ts.nix = nixtest.Require(t)
	}
	ts.store = ts.open(ts.opts)
	return ts
}

func (ts *testStore) open(o Options) *Store {
	ts.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, o)
	if err != nil {
		ts.t.Fatalf("open store: %v", err)
	}
	ts.t.Cleanup(func() { s.Close() })
	return s
}

// nixEnv is the environment for the real Nix in local mode on this store.
func (ts *testStore) nixEnv() []string {
	conf := filepath.Join(ts.root, "etc")
	os.MkdirAll(conf, 0o755)
	os.WriteFile(filepath.Join(conf, "nix.conf"), []byte(nixtest.Config+"fsync-metadata = false\ngc-reserved-space = 0\n"), 0o644)
	env := append(ts.nix.Env(), "NIX_CONF_DIR="+conf)
	if ts.ownDir {
		return append(env, "NIX_REMOTE=",
			"NIX_STORE_DIR="+string(ts.opts.StoreDir),
			"NIX_STATE_DIR="+ts.opts.StateDir,
			"NIX_LOG_DIR="+ts.opts.LogDir)
	}
	return append(env, "NIX_REMOTE="+ts.root)
}

// realPath returns where a path printed by Nix lies on disk.
func (ts *testStore) realPath(p string) string {
	return ts.store.RealStoreDir() + strings.TrimPrefix(p, string(ts.opts.StoreDir))
}

// nixCmd returns a command running a Nix program on this store.
func (ts *testStore) nixCmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = ts.nixEnv()
	return cmd
}

// runNix runs a Nix program on this store and returns stdout and stderr;
// it fails the test if the program fails.
func (ts *testStore) runNix(name string, args ...string) (string, string) {
	ts.t.Helper()
	out, errOut, err := ts.tryNix(name, args...)
	if err != nil {
		ts.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errOut)
	}
	return out, errOut
}

func (ts *testStore) tryNix(name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := ts.nixCmd(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// makeTree writes a small tree under dir/name and returns its path.
func makeTree(t testing.TB, dir, name string) string {
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
