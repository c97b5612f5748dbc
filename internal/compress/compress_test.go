package compress

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
)

// The golden files were made by the real tools (testdata/gen.sh).
func TestGoldenDecompress(t *testing.T) {
	want, err := os.ReadFile("testdata/small.nar")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file, method string
		unsupported  bool
	}{
		{"small.nar", None, false},
		{"small.nar.xz", XZ, false},
		{"small.nar.zst", Zstd, false},
		{"small.nar.bz2", Bzip2, false},
		{"small.nar.gz", Gzip, false},
		{"small.nar.lz4", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile("testdata/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			method, err := Sniff(data[:SniffLen])
			if tt.unsupported {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("Sniff = %q, %v; want ErrUnsupported", method, err)
				}
				return
			}
			if err != nil || method != tt.method {
				t.Fatalf("Sniff = %q, %v; want %q", method, err, tt.method)
			}
			r, err := NewReader(method, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("decompressed %d bytes (%v), want the %d of small.nar", len(got), err, len(want))
			}
		})
	}
}

// Brotli has no magic number: Nix names it in the narinfo ("br").
func TestGoldenBrotli(t *testing.T) {
	want, _ := os.ReadFile("testdata/small.nar")
	data, err := os.ReadFile("testdata/small.nar.br")
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(Brotli, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("decompressed %d bytes (%v), want the %d of small.nar", len(got), err, len(want))
	}
	data[len(data)/2] ^= 0xff
	r, _ = NewReader(Brotli, bytes.NewReader(data))
	if got, err := io.ReadAll(r); err == nil && bytes.Equal(got, want) {
		t.Error("corrupted brotli data decompressed to the original")
	}
}

func TestRoundTrip(t *testing.T) {
	data, _ := os.ReadFile("testdata/small.nar")
	for _, tt := range []struct {
		method string
		level  int
	}{{Zstd, 0}, {Zstd, 19}, {XZ, 0}, {XZ, 6}, {None, 0}} {
		for range 2 { // twice: the second use comes from the pool
			var buf bytes.Buffer
			w, err := NewWriter(tt.method, &buf, tt.level)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(data[:100])
			w.Write(data[100:])
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			m, err := Sniff(buf.Bytes())
			if err != nil || m != tt.method {
				t.Errorf("%s: Sniff of own output = %q, %v", tt.method, m, err)
			}
			r, err := NewReader(tt.method, &buf)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s level %d: round trip differs (%v)", tt.method, tt.level, err)
			}
		}
	}
}

func TestCorrupt(t *testing.T) {
	for _, f := range []string{"small.nar.xz", "small.nar.zst", "small.nar.bz2", "small.nar.gz"} {
		data, _ := os.ReadFile("testdata/" + f)
		bad := append([]byte(nil), data...)
		bad[len(bad)/2] ^= 0xff
		m, _ := Sniff(bad)
		r, err := NewReader(m, bytes.NewReader(bad))
		if err == nil {
			_, err = io.ReadAll(r)
			r.Close()
		}
		if err == nil {
			t.Errorf("%s with a flipped byte decompressed without error", f)
		}
		// Truncated.
		r, err = NewReader(m, bytes.NewReader(data[:len(data)-10]))
		if err == nil {
			_, err = io.ReadAll(r)
			r.Close()
		}
		if err == nil {
			t.Errorf("%s truncated decompressed without error", f)
		}
	}
}

func TestSniffUnknown(t *testing.T) {
	for _, in := range [][]byte{nil, []byte("hello world, not a nar"), []byte("LZIP\x01")} {
		if m, err := Sniff(in); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Sniff(%q) = %q, %v; want ErrUnsupported", in, m, err)
		}
	}
}

func FuzzSniffAndDecompress(f *testing.F) {
	for _, name := range []string{"small.nar.xz", "small.nar.zst", "small.nar.bz2", "small.nar.gz", "small.nar"} {
		data, _ := os.ReadFile("testdata/" + name)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Sniff(data)
		if err != nil {
			return
		}
		r, err := NewReader(m, bytes.NewReader(data))
		if err != nil {
			return
		}
		defer r.Close()
		io.Copy(io.Discard, io.LimitReader(r, 10<<20))
	})
}
