package nar

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestExactReaderStopsAtEnd checks that an exact Reader leaves the bytes
// after the NAR unread, for NARs of every shape and for sources that
// return data in pieces of any size.
func TestExactReaderStopsAtEnd(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	os.WriteFile(filepath.Join(tree, "a"), bytes.Repeat([]byte("x"), 100_000), 0o644)
	os.WriteFile(filepath.Join(tree, "sub", "b"), []byte("hello"), 0o755)
	os.Symlink("a", filepath.Join(tree, "l"))
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("just a file, 27 bytes long."), 0o644)
	for _, src := range []string{tree, file, filepath.Join(tree, "l")} {
		var nar bytes.Buffer
		if err := Dump(context.Background(), &nar, src); err != nil {
			t.Fatal(err)
		}
		trailer := []byte("TRAILING DATA")
		for _, piece := range []int{1, 7, 4096, 1 << 20} {
			in := io.MultiReader(&chunked{bytes.NewReader(nar.Bytes()), piece}, bytes.NewReader(trailer))
			nr := NewExactReader(in)
			var out bytes.Buffer
			w := NewWriter(&out)
			if err := Copy(w, nr); err != nil {
				t.Fatalf("%s, pieces of %d: %v", src, piece, err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), nar.Bytes()) {
				t.Errorf("%s, pieces of %d: copy differs from the NAR", src, piece)
			}
			rest, _ := io.ReadAll(in)
			if !bytes.Equal(rest, trailer) {
				t.Errorf("%s, pieces of %d: left %q after the NAR, want %q", src, piece, rest, trailer)
			}
		}
	}
}

type chunked struct {
	r io.Reader
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}
