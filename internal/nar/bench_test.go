package nar

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// benchTree returns the Go toolchain's tree (about 236 MB of NAR, 17,000
// files: the size of a big store path), and its NAR size. It is only read.
func benchTree(b *testing.B) (string, int64) {
	root := runtime.GOROOT()
	if _, err := os.Stat(filepath.Join(root, "src")); err != nil {
		b.Skipf("no Go tree at %s to benchmark on", root)
	}
	_, size, err := HashPath(context.Background(), root)
	if err != nil {
		b.Fatal(err)
	}
	return root, int64(size)
}

func BenchmarkDump(b *testing.B) {
	root, size := benchTree(b)
	b.SetBytes(size)
	for b.Loop() {
		if err := Dump(context.Background(), io.Discard, root); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHashPath(b *testing.B) {
	root, size := benchTree(b)
	b.SetBytes(size)
	for b.Loop() {
		if _, _, err := HashPath(context.Background(), root); err != nil {
			b.Fatal(err)
		}
	}
}

// narFile dumps the Go tree to a temporary file once.
func narFile(b *testing.B) (*os.File, int64) {
	root, size := benchTree(b)
	f, err := os.Create(filepath.Join(b.TempDir(), "go.nar"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	if err := Dump(context.Background(), f, root); err != nil {
		b.Fatal(err)
	}
	return f, size
}

func BenchmarkReader(b *testing.B) {
	f, size := narFile(b)
	b.SetBytes(size)
	buf := make([]byte, 256<<10)
	for b.Loop() {
		f.Seek(0, io.SeekStart)
		r := NewReader(f)
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			for {
				if _, err := r.Read(buf); err == io.EOF {
					break
				} else if err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

func BenchmarkWriteListing(b *testing.B) {
	f, size := narFile(b)
	b.SetBytes(size)
	for b.Loop() {
		f.Seek(0, io.SeekStart)
		if err := WriteListing(io.Discard, f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCopy(b *testing.B) {
	narBytes := readGolden(b, "deep", ".nar")
	b.SetBytes(int64(len(narBytes)))
	for b.Loop() {
		w := NewWriter(io.Discard)
		if err := Copy(w, NewReader(bytes.NewReader(narBytes))); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
