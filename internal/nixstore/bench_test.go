package nixstore_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
	"github.com/silo-cache/silo/internal/storepath"
)

// BenchmarkAddTextToStore adds small text files, one path per op (what
// builtins.toFile and .drv writes cost).
func BenchmarkAddTextToStore(b *testing.B) {
	ts := storetest.New(b, false)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ts.Store.AddTextToStore(ctx, "t", []byte(fmt.Sprintf("text %d", i)), nil, nixstore.AddOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueryPathInfo reads one path's info per op (the daemon's
// hottest query).
func BenchmarkQueryPathInfo(b *testing.B) {
	ts := storetest.New(b, false)
	ctx := context.Background()
	var paths []storepath.Path
	for i := 0; i < 100; i++ {
		p := storetest.AddText(b, ts.Store, "t", fmt.Sprint(i))
		paths = append(paths, storetest.AddText(b, ts.Store, "u", fmt.Sprint(i), p))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ts.Store.QueryPathInfo(ctx, paths[i%len(paths)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddToStoreNarGoroot adds the Go toolchain's tree (GOROOT,
// about 15,000 files and 250 MB) from its NAR, read from a file.
func BenchmarkAddToStoreNarGoroot(b *testing.B) {
	goroot := os.Getenv("GOROOT_BENCH")
	if goroot == "" {
		goroot = "/usr/local/go"
	}
	f, err := os.CreateTemp(b.TempDir(), "nar")
	if err != nil {
		b.Fatal(err)
	}
	hw := hash.NewWriter(hash.SHA256)
	if err := nar.Dump(context.Background(), io.MultiWriter(f, hw), goroot); err != nil {
		b.Skipf("no tree to add: %v", err)
	}
	b.SetBytes(int64(hw.Size()))
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ts := storetest.New(b, false)
		p := storetest.RandomPath(b, ts.Store.Dir(), "go")
		f.Seek(0, 0)
		src := bytesBuffered(f)
		b.StartTimer()
		info := &nixstore.PathInfo{Path: p, NarHash: hw.Sum(), NarSize: hw.Size()}
		if err := ts.Store.AddToStoreNar(ctx, info, src, nixstore.AddOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func bytesBuffered(r io.Reader) io.Reader {
	var b bytes.Buffer
	b.ReadFrom(r)
	return &b
}

// BenchmarkOpen opens and closes a store: what every daemon connection
// costs before its first op (layout checks, big lock, database, statements).
func BenchmarkOpen(b *testing.B) {
	ts := storetest.New(b, false)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := nixstore.Open(ctx, ts.Opts)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
