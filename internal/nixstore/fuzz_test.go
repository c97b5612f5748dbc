package nixstore_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
)

// FuzzAddToStoreNar feeds arbitrary bytes as a NAR: either the path
// becomes valid and its contents dump back to exactly those bytes, or it
// is refused and the store directory stays empty.
func FuzzAddToStoreNar(f *testing.F) {
	dir := f.TempDir()
	tree := storetest.MakeTree(f, dir, "tree")
	for _, p := range []string{tree, filepath.Join(tree, "a"), filepath.Join(tree, "link")} {
		data, _ := storetest.NarOf(f, p)
		f.Add(data)
		f.Add(data[:len(data)/2])
	}
	ts := storetest.New(f, false)
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		p := storetest.RandomPath(t, ts.Store.Dir(), "fuzz")
		info := &nixstore.PathInfo{Path: p, NarHash: hash.Sum(hash.SHA256, data), NarSize: uint64(len(data))}
		err := ts.Store.AddToStoreNar(ctx, info, bytes.NewReader(data), nixstore.AddOptions{})
		if err != nil {
			if ok, _ := ts.Store.IsValid(ctx, p); ok {
				t.Fatalf("refused (%v) but valid", err)
			}
			if e := ts.Entries(t); len(e) != 0 {
				t.Fatalf("refused (%v) but left %v", err, e)
			}
			return
		}
		var back bytes.Buffer
		if err := nar.Dump(ctx, &back, ts.Store.RealPath(p)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back.Bytes(), data) {
			t.Fatalf("restored tree dumps to a different NAR")
		}
		nixstore.DeletePath(ts.Store.RealPath(p))
		ts.Store.DB().InvalidatePath(ctx, p)
		os.Remove(ts.Store.RealPath(p))
	})
}

// FuzzParseCAMethod: what parses prints back to the same text.
func FuzzParseCAMethod(f *testing.F) {
	for _, s := range []string{"text:sha256", "fixed:sha1", "fixed:r:sha256", "fixed:r:md5", "text:md5", "fixed:", "r:sha256"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := nixstore.ParseCAMethod(s)
		if err != nil {
			return
		}
		if m.String() != s {
			t.Fatalf("%q parses to %v, printed %q", s, m, m.String())
		}
	})
}
