package refscan

import (
	"bytes"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"

func randomHash(r *rand.Rand) string {
	b := make([]byte, HashLen)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

// naive finds the candidates in data the obvious way.
func naive(data []byte, cands []string) []string {
	var out []string
	for _, c := range cands {
		if valid(c) && bytes.Contains(data, []byte(c)) {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

func scanInPieces(cands []string, data []byte, cuts ...int) []string {
	s := New(cands)
	prev := 0
	for _, c := range cuts {
		s.Write(data[prev:c])
		prev = c
	}
	s.Write(data[prev:])
	return s.Found()
}

// TestSplitEverywhere writes a store path in two pieces, cut at every
// offset, and in one-byte writes.
func TestSplitEverywhere(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	h := randomHash(r)
	data := []byte("prefix /nix/store/" + h + "-hello-2.12/bin/hello suffix")
	for cut := 0; cut <= len(data); cut++ {
		if got := scanInPieces([]string{h, randomHash(r)}, data, cut); !cmp.Equal(got, []string{h}) {
			t.Fatalf("cut at %d: found %q, want %q", cut, got, h)
		}
	}
	for first := 0; first <= len(data); first++ {
		for second := first; second <= len(data) && second < first+40; second++ {
			if got := scanInPieces([]string{h}, data, first, second); !cmp.Equal(got, []string{h}) {
				t.Fatalf("cuts at %d and %d: found %q", first, second, got)
			}
		}
	}
	s := New([]string{h})
	for i := range data {
		s.Write(data[i : i+1])
	}
	if got := s.Found(); !cmp.Equal(got, []string{h}) {
		t.Fatalf("byte by byte: found %q", got)
	}
}

func TestScanner(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	a, b, c := randomHash(r), randomHash(r), randomHash(r)
	tests := []struct {
		name  string
		cands []string
		data  string
		want  []string
	}{
		{"none", []string{a}, "nothing here", nil},
		{"one", []string{a, b}, "/nix/store/" + a + "-x", []string{a}},
		{"adjacent", []string{a, b, c}, a + b + c, sorted(a, b, c)},
		{"overlapping run", []string{a[1:] + "0", a}, a + "0", sorted(a, a[1:]+"0")},
		{"sorted and once", []string{c, a}, c + " " + a + " " + c, sorted(a, c)},
		{"upper case is not nix32", []string{a}, strings.ToUpper(a), nil},
		{"prefix only", []string{a}, a[:31], nil},
		{"wrong length candidate ignored", []string{a[:31], "short"}, a, nil},
		{"at the very end", []string{a}, "xx" + a, []string{a}},
		{"binary around", []string{a}, "\x00\xff" + a + "\x00", []string{a}},
		{"near miss", []string{a}, a[:31] + "e", nil}, // 'e' is not in the alphabet
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(tt.cands)
			s.Write([]byte(tt.data))
			if diff := cmp.Diff(tt.want, s.Found()); diff != "" {
				t.Errorf("Found() (-want +got):\n%s", diff)
			}
		})
	}
}

func sorted(s ...string) []string { sort.Strings(s); return s }

// TestManyCandidates scans random data holding some of 10,000 candidates,
// written in random pieces, against the naive search: no misses, and no
// false positives.
func TestManyCandidates(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	var cands []string
	for range 10000 {
		cands = append(cands, randomHash(r))
	}
	var data []byte
	for range 2000 {
		switch r.IntN(4) {
		case 0:
			data = append(data, "/nix/store/"+cands[r.IntN(len(cands))]+"-name"...)
		case 1: // nix32 noise that is no candidate
			data = append(data, randomHash(r)[:r.IntN(HashLen)]...)
		case 2:
			data = append(data, randomHash(r)...)
		default:
			for range r.IntN(100) {
				data = append(data, byte(r.Uint32()))
			}
		}
	}
	want := naive(data, cands)
	if len(want) < 100 {
		t.Fatalf("test data holds only %d candidates", len(want))
	}
	var cuts []int
	for pos := 0; pos < len(data); pos += 1 + r.IntN(70) {
		cuts = append(cuts, pos)
	}
	if diff := cmp.Diff(want, scanInPieces(cands, data, cuts...)); diff != "" {
		t.Errorf("Found() differs from a naive search (-want +got):\n%s", diff)
	}
}

// FuzzScanner compares the scanner, fed in two pieces, with a naive search.
func FuzzScanner(f *testing.F) {
	f.Add([]byte("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x"), 20, 3)
	f.Add([]byte("0123456789abcdfghijklmnpqrsvwxy0123456789abcdfghijklmnpqrsvwxyz"), 31, 30)
	f.Fuzz(func(t *testing.T, data []byte, cut, candAt int) {
		cands := []string{"0123456789abcdfghijklmnpqrsvwxyz"}
		if candAt >= 0 && candAt+HashLen <= len(data) {
			cands = append(cands, string(data[candAt:candAt+HashLen]))
		}
		if cut < 0 || cut > len(data) {
			cut = len(data) / 2
		}
		got := scanInPieces(cands, data, cut)
		want := naive(data, cands)
		// naive may list a duplicate candidate twice.
		want = compact(want)
		if !cmp.Equal(got, want, cmp.Comparer(func(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") })) {
			t.Fatalf("found %q, want %q", got, want)
		}
	})
}

func compact(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func BenchmarkScanner(b *testing.B) {
	r := rand.New(rand.NewPCG(4, 4))
	var cands []string
	for range 1000 {
		cands = append(cands, randomHash(r))
	}
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	copy(data[1000:], cands[5])
	b.SetBytes(int64(len(data)))
	s := New(cands)
	for b.Loop() {
		s.Write(data)
	}
}
