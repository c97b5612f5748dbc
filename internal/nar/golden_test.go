package nar

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/silo-cache/silo/internal/hash"
)

// goldenNames lists testdata/*.nar (made by testdata/gen.sh with the real Nix).
func goldenNames(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/*.nar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden NARs in testdata (run testdata/gen.sh): %v", err)
	}
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".nar"))
	}
	return names
}

func readGolden(t testing.TB, name, ext string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+ext))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGoldenListing(t *testing.T) {
	for _, name := range goldenNames(t) {
		t.Run(name, func(t *testing.T) {
			narBytes, want := readGolden(t, name, ".nar"), readGolden(t, name, ".ls")
			l, err := List(bytes.NewReader(narBytes))
			if err != nil {
				t.Fatal(err)
			}
			got, err := l.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("List().MarshalJSON() differs from Nix's .ls (-nix +silo):\n%s", diff)
			}
			var streamed bytes.Buffer
			if err := WriteListing(&streamed, bytes.NewReader(narBytes)); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), streamed.String()); diff != "" {
				t.Errorf("WriteListing differs from Nix's .ls (-nix +silo):\n%s", diff)
			}
		})
	}
}

// TestGoldenRoundTrip re-encodes each golden NAR through Reader and Writer,
// and restores it and dumps the result: both must give Nix's bytes back.
func TestGoldenRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, name := range goldenNames(t) {
		t.Run(name, func(t *testing.T) {
			narBytes := readGolden(t, name, ".nar")
			var out bytes.Buffer
			w := NewWriter(&out)
			if err := Copy(w, NewReader(bytes.NewReader(narBytes))); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), narBytes) {
				t.Errorf("Copy changed the NAR: %d bytes in, %d out", len(narBytes), out.Len())
			}

			dir := filepath.Join(t.TempDir(), "out")
			if err := Restore(ctx, bytes.NewReader(narBytes), dir); err != nil {
				t.Fatal(err)
			}
			var dumped bytes.Buffer
			if err := Dump(ctx, &dumped, dir); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dumped.Bytes(), narBytes) {
				t.Errorf("Dump(Restore(nar)) != nar: %d bytes, want %d", dumped.Len(), len(narBytes))
			}
			h, size, err := HashPath(ctx, dir)
			if err != nil {
				t.Fatal(err)
			}
			want, err := hash.ParseAs(strings.TrimSpace(string(readGolden(t, name, ".hash"))), hash.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if h != want || size != uint64(len(narBytes)) {
				t.Errorf("HashPath = %v, %d; want Nix's %v, %d", h, size, want, len(narBytes))
			}
		})
	}
}

func TestReaderHeaders(t *testing.T) {
	r := NewReader(bytes.NewReader(readGolden(t, "mixed", ".nar")))
	var got []string
	for {
		h, err := r.Next()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatal(err)
			}
			break
		}
		if r.Path() == "sub dir/nested/seven-b" {
			b := make([]byte, 10)
			n, _ := r.Read(b)
			if string(b[:n]) != "x" || h.Size != 1 || h.Type != TypeRegular {
				t.Errorf("%+v: contents %q", h, b[:n])
			}
		}
		got = append(got, h.Type.String()+" "+r.Path())
	}
	for _, want := range []string{"directory ", "symlink abs-link", "regular exec", "directory empty-dir", "symlink sub dir/rel-link", "regular \xc3\xa9-\xc3\xa9"} {
		found := false
		for _, g := range got {
			found = found || g == want
		}
		if !found {
			t.Errorf("no %q among headers %q", want, got)
		}
	}
}

func TestWriterRejects(t *testing.T) {
	tests := []struct {
		name    string
		headers []Header
		want    string
	}{
		{"first not root", []Header{{Path: "a", Type: TypeDirectory}}, "want the root"},
		{"unsorted", []Header{{Type: TypeDirectory}, {Path: "b", Type: TypeDirectory}, {Path: "a", Type: TypeDirectory}}, "sorted"},
		{"duplicate", []Header{{Type: TypeDirectory}, {Path: "a", Type: TypeDirectory}, {Path: "a", Type: TypeDirectory}}, "sorted"},
		{"dotdot", []Header{{Type: TypeDirectory}, {Path: "..", Type: TypeDirectory}}, `".." not allowed`},
		{"missing parent", []Header{{Type: TypeDirectory}, {Path: "a/b", Type: TypeDirectory}}, "not open"},
		{"closed parent", []Header{{Type: TypeDirectory}, {Path: "a", Type: TypeDirectory}, {Path: "b", Type: TypeDirectory}, {Path: "a/c", Type: TypeDirectory}}, "not open"},
		{"child of symlink", []Header{{Type: TypeDirectory}, {Path: "a", Type: TypeSymlink, LinkTarget: "/"}, {Path: "a/b", Type: TypeDirectory}}, "not open"},
		{"root file then more", []Header{{Type: TypeSymlink, LinkTarget: "x"}, {Path: "a", Type: TypeDirectory}}, "not a directory"},
		{"empty target", []Header{{Type: TypeSymlink}}, "empty symlink target"},
		{"short contents", []Header{{Type: TypeDirectory}, {Path: "a", Type: TypeRegular, Size: 3}, {Path: "b", Type: TypeRegular}}, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWriter(&bytes.Buffer{})
			var err error
			for i := range tt.headers {
				if err = w.WriteHeader(&tt.headers[i]); err != nil {
					break
				}
			}
			if err == nil {
				err = w.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
