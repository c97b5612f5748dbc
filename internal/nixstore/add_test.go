package nixstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// narString encodes a NAR token.
func narString(s string) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(s)))
	b = append(b, s...)
	return append(b, make([]byte, -len(s)&7)...)
}

func narTokens(toks ...string) []byte {
	var b []byte
	for _, t := range toks {
		b = append(b, narString(t)...)
	}
	return b
}

// TestAddToStoreNarRefuses feeds AddToStoreNar bad input: each is refused
// with Nix's message, the path stays invalid, and the store directory is
// left as it was.
func TestAddToStoreNarRefuses(t *testing.T) {
	ctx := context.Background()
	ts := storetest.New(t, false)
	s := ts.Store
	tree := storetest.MakeTree(t, t.TempDir(), "tree")
	good, goodHash := storetest.NarOf(t, tree)
	otherTree := storetest.MakeTree(t, t.TempDir(), "tree")
	os.WriteFile(filepath.Join(otherTree, "a"), []byte("changed\n"), 0o644)
	other, _ := storetest.NarOf(t, otherTree)
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, []byte("contents"), 0o644)
	fileNar, fileHash := storetest.NarOf(t, file)
	missing := storetest.RandomPath(t, s.Dir(), "missing")

	escape := narTokens("nix-archive-1", "(", "type", "directory", "entry", "(", "name", "..", "node",
		"(", "type", "regular", "contents", "x", ")", ")", ")")
	slash := narTokens("nix-archive-1", "(", "type", "directory", "entry", "(", "name", "a/b", "node",
		"(", "type", "regular", "contents", "x", ")", ")", ")")

	// A file declared a terabyte long that sends a few bytes: refused at
	// once, without reserving any space for it.
	huge := append(narTokens("nix-archive-1", "(", "type", "regular", "contents"), binary.LittleEndian.AppendUint64(nil, 1<<40)...)
	huge = append(huge, "just a few bytes"...)

	// A fixed-output CA that does not match the contents.
	wrongCA := hash.Sum(hash.SHA256, []byte("not the contents"))
	caPath, err := s.Dir().MakeFixedOutputPath("f", false, wrongCA, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "f")
	os.WriteFile(caFile, []byte("the real contents"), 0o644)
	caNar, caNarHash := storetest.NarOf(t, caFile)

	tests := []struct {
		name string
		info nixstore.PathInfo
		nar  []byte
		want string
	}{
		{"hash mismatch", nixstore.PathInfo{NarHash: hash.Sum(hash.SHA256, other), NarSize: uint64(len(good))}, good, "hash mismatch importing path"},
		{"size mismatch", nixstore.PathInfo{NarHash: goodHash, NarSize: uint64(len(good)) + 8}, good, "size mismatch importing path"},
		{"truncated", nixstore.PathInfo{NarHash: goodHash, NarSize: uint64(len(good))}, good[:len(good)-50], "truncated"},
		{"dot-dot entry", nixstore.PathInfo{NarHash: hash.Sum(hash.SHA256, escape), NarSize: uint64(len(escape))}, escape, `".." not allowed`},
		{"slash in name", nixstore.PathInfo{NarHash: hash.Sum(hash.SHA256, slash), NarSize: uint64(len(slash))}, slash, "contains '/'"},
		{"huge declared file", nixstore.PathInfo{NarHash: hash.Sum(hash.SHA256, huge), NarSize: 1 << 40}, huge, "truncated"},
		{"not a NAR", nixstore.PathInfo{NarHash: hash.Sum(hash.SHA256, []byte("hello")), NarSize: 5}, []byte("hello"), "not a NAR"},
		{"invalid reference", nixstore.PathInfo{NarHash: fileHash, NarSize: uint64(len(fileNar)), References: []storepath.Path{missing}}, fileNar, "is not valid"},
		{"ca mismatch", nixstore.PathInfo{Path: caPath, NarHash: caNarHash, NarSize: uint64(len(caNar)), CA: "fixed:sha256:" + wrongCA.Nix32()}, caNar, "ca hash mismatch importing path"},
		{"false ca claim", nixstore.PathInfo{NarHash: fileHash, NarSize: uint64(len(fileNar)), CA: "fixed:sha256:" + wrongCA.Nix32()}, fileNar, "claims to be content-addressed but isn't"},
	}
	before := ts.Entries(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := tt.info
			if info.Path.IsZero() {
				info.Path = storetest.RandomPath(t, s.Dir(), "bad")
			}
			err := s.AddToStoreNar(ctx, &info, bytes.NewReader(tt.nar), nixstore.AddOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			if ok, _ := s.IsValid(ctx, info.Path); ok {
				t.Errorf("%s became valid", info.Path)
			}
			if after := ts.Entries(t); strings.Join(after, " ") != strings.Join(before, " ") {
				t.Errorf("store directory changed from %v to %v", before, after)
			}
		})
	}
}

// TestAddToStoreNarCancelled cancels an upload half-way (a client killed
// mid-upload): nothing is valid and nothing is left in the store.
func TestAddToStoreNarCancelled(t *testing.T) {
	ts := storetest.New(t, false)
	s := ts.Store
	tree := storetest.MakeTree(t, t.TempDir(), "tree")
	data, h := storetest.NarOf(t, tree)
	p := storetest.RandomPath(t, s.Dir(), "cancelled")
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	go func() {
		pw.Write(data[:len(data)/2])
		cancel()
		time.Sleep(50 * time.Millisecond)
		pw.CloseWithError(errors.New("client went away"))
	}()
	err := s.AddToStoreNar(ctx, &nixstore.PathInfo{Path: p, NarHash: h, NarSize: uint64(len(data))}, pr, nixstore.AddOptions{})
	if err == nil {
		t.Fatal("a cancelled upload succeeded")
	}
	if ok, _ := s.IsValid(context.Background(), p); ok {
		t.Error("a cancelled upload became valid")
	}
	if e := ts.Entries(t); len(e) != 0 {
		t.Errorf("left in the store: %v", e)
	}
}

// TestAddToStoreNarConcurrent adds one path from several goroutines at
// once: they serialise on the path lock, one writes it, all succeed, and
// no lock file or temporary tree is left.
func TestAddToStoreNarConcurrent(t *testing.T) {
	ts := storetest.New(t, false)
	tree := storetest.MakeTree(t, t.TempDir(), "tree")
	data, h := storetest.NarOf(t, tree)
	p := storetest.RandomPath(t, ts.Store.Dir(), "concurrent")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := ts.Open(ts.Opts) // a connection each
			errs[i] = s.AddToStoreNar(context.Background(), &nixstore.PathInfo{Path: p, NarHash: h, NarSize: uint64(len(data))}, bytes.NewReader(data), nixstore.AddOptions{})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("add %d: %v", i, err)
		}
	}
	if e := ts.Entries(t); len(e) != 1 || e[0] != p.Base() {
		t.Errorf("store holds %v, want just %s", e, p.Base())
	}
	got, _, err := nar.HashPath(context.Background(), ts.Store.RealPath(p))
	if err != nil || got != h {
		t.Errorf("contents hash to %v (%v), want %v", got, err, h)
	}
}

// TestPathLocks: a held lock makes TryLockPaths fail and LockPaths wait;
// released with deletion, the lock file is gone and the waiter proceeds.
func TestPathLocks(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "x")
	l, err := nixstore.LockPaths(ctx, []string{p}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := nixstore.TryLockPaths(ctx, []string{p}); ok || err != nil {
		t.Fatalf("locked twice: %v %v", ok, err)
	}
	got := make(chan error, 1)
	waiting := make(chan string, 1)
	go func() {
		l2, err := nixstore.LockPaths(ctx, []string{p}, "waiting for lock on "+p, func(m string) { waiting <- m })
		if err == nil {
			l2.Unlock(true)
		}
		got <- err
	}()
	if m := <-waiting; !strings.Contains(m, "waiting for lock") {
		t.Errorf("wait message %q", m)
	}
	l.Unlock(true)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p + ".lock"); !os.IsNotExist(err) {
		t.Errorf("lock file left: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	l, _ = nixstore.LockPaths(ctx, []string{p}, "", nil)
	if _, err := nixstore.LockPaths(cctx, []string{p}, "", nil); err == nil {
		t.Error("a cancelled wait took the lock")
	}
	l.Unlock(true)
}

// TestCheckSigs: with require-sigs, an input-addressed path needs a
// signature by a trusted key; a content-addressed one needs none.
func TestCheckSigs(t *testing.T) {
	ctx := context.Background()
	key, err := signature.GenerateKey("test-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ts := storetest.New(t, false)
	o := ts.Opts
	o.RequireSigs = true
	o.TrustedKeys = signature.NewKeySet(key.Public())
	s := ts.Open(o)
	data, h := storetest.NarOf(t, storetest.MakeTree(t, t.TempDir(), "t"))
	check := nixstore.AddOptions{CheckSigs: true}

	info := &nixstore.PathInfo{Path: storetest.RandomPath(t, s.Dir(), "unsigned"), NarHash: h, NarSize: uint64(len(data))}
	err = s.AddToStoreNar(ctx, info, bytes.NewReader(data), check)
	if want := "cannot add path '" + info.Path.String() + "' because it lacks a valid signature"; err == nil || err.Error() != want {
		t.Errorf("unsigned: %v, want %q", err, want)
	}
	other, _ := signature.GenerateKey("other-1", rand.Reader)
	info.Sigs = []string{other.Sign(info.Fingerprint()).String()}
	if err := s.AddToStoreNar(ctx, info, bytes.NewReader(data), check); err == nil {
		t.Error("accepted a signature by an untrusted key")
	}
	info.Sigs = append(info.Sigs, key.Sign(info.Fingerprint()).String())
	if err := s.AddToStoreNar(ctx, info, bytes.NewReader(data), check); err != nil {
		t.Errorf("signed by a trusted key: %v", err)
	}
	ca, _ := s.Dir().MakeFixedOutputPath("t", true, h, nil, false)
	caInfo := &nixstore.PathInfo{Path: ca, NarHash: h, NarSize: uint64(len(data)), CA: "fixed:r:sha256:" + h.Nix32()}
	if err := s.AddToStoreNar(ctx, caInfo, bytes.NewReader(data), check); err != nil {
		t.Errorf("content-addressed without signature: %v", err)
	}
}
