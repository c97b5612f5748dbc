package nix32

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/nixtest"
)

// TestGolden checks the digests in testdata/golden.txt, printed by the real
// nix hash to-base32 (testdata/gen.sh).
func TestGolden(t *testing.T) {
	f, err := os.Open("testdata/golden.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		hexStr, want, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			t.Fatalf("bad golden line %q", sc.Text())
		}
		raw, err := hex.DecodeString(hexStr)
		if err != nil {
			t.Fatal(err)
		}
		checkPair(t, raw, want)
		lines++
	}
	if lines < 24 {
		t.Fatalf("only %d golden lines (run testdata/gen.sh)", lines)
	}
}

func checkPair(t *testing.T, raw []byte, want string) {
	t.Helper()
	if got := Encode(raw); got != want {
		t.Errorf("Encode(%x) = %s, Nix says %s", raw, got, want)
	}
	if got := string(AppendEncode([]byte("x"), raw)); got != "x"+want {
		t.Errorf("AppendEncode(%x) = %s", raw, got)
	}
	back, err := Decode(want)
	if err != nil || !bytes.Equal(back, raw) {
		t.Errorf("Decode(%s) = %x, %v; want %x", want, back, err, raw)
	}
	if EncodedLen(len(raw)) != len(want) || DecodedLen(len(want)) != len(raw) {
		t.Errorf("lengths: EncodedLen(%d) = %d, DecodedLen(%d) = %d", len(raw), EncodedLen(len(raw)), len(want), DecodedLen(len(want)))
	}
}

// TestWithNix compares random digests with the live Nix.
func TestWithNix(t *testing.T) {
	n := nixtest.Require(t)
	for _, spec := range []struct {
		algo string
		size int
	}{{"md5", 16}, {"sha1", 20}, {"sha256", 32}, {"sha512", 64}} {
		raw := make([]byte, spec.size)
		rand.Read(raw)
		want := strings.TrimSpace(n.Run("nix", "hash", "to-base32", "--type", spec.algo, hex.EncodeToString(raw)))
		checkPair(t, raw, want)
		// And back: Nix decodes silo's encoding to the same bytes.
		back := strings.TrimSpace(n.Run("nix", "hash", "to-base16", "--type", spec.algo, Encode(raw)))
		if back != hex.EncodeToString(raw) {
			t.Errorf("%s: Nix decodes %s to %s, want %x", spec.algo, Encode(raw), back, raw)
		}
	}
	// Nix rejects what Decode rejects as overflowing.
	for algo, s := range map[string]string{"md5": "8" + strings.Repeat("0", 25), "sha256": "2" + strings.Repeat("0", 51), "sha512": "4" + strings.Repeat("0", 102)} {
		if _, err := Decode(s); err == nil {
			t.Errorf("Decode(%s) accepted an overflow", s)
		}
		if out, err := n.Try("nix", "hash", "to-base16", "--type", algo, s); err == nil {
			t.Errorf("Nix accepts %s %s as %s", algo, s, out)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for size := 0; size <= 70; size++ {
		raw := make([]byte, size)
		rand.Read(raw)
		s := Encode(raw)
		if len(s) != EncodedLen(size) || !IsValid(s) {
			t.Fatalf("size %d: Encode gave %q", size, s)
		}
		back, err := Decode(s)
		if err != nil || !bytes.Equal(back, raw) {
			t.Fatalf("size %d: Decode(Encode(%x)) = %x, %v", size, raw, back, err)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := Encode(bytes.Repeat([]byte{0xab}, 32)) // 52 characters
	tests := []struct{ name, in string }{
		{"length of no encoding", "0"},
		{"one short", valid[1:]},
		{"two long", "00" + valid},
		{"e", "e" + valid[1:]},
		{"o", valid[:10] + "o" + valid[11:]},
		{"u", valid[:51] + "u"},
		{"t", "t" + valid[1:]},
		{"upper case", strings.ToUpper(valid)},
		{"space", " " + valid[1:]},
		{"NUL", "\x00" + valid[1:]},
		{"non-ASCII", "é" + valid[2:]},
		// 52 characters hold 260 bits; the top 4 must be zero for 32 bytes.
		{"overflow 32 bytes", "2" + valid[1:]},
		{"overflow 16 bytes", "8" + strings.Repeat("0", 25)},
		{"overflow 64 bytes", "4" + strings.Repeat("0", 102)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := Decode(tt.in); !errors.Is(err, ErrInvalid) {
				t.Errorf("Decode(%q) = %x, %v; want ErrInvalid", tt.in, b, err)
			}
		})
	}
	// The largest values that do fit.
	for _, s := range []string{"1" + strings.Repeat("z", 51), strings.Repeat("z", 32), "7" + strings.Repeat("z", 25), "3" + strings.Repeat("z", 102)} {
		if _, err := Decode(s); err != nil {
			t.Errorf("Decode(%q): %v", s, err)
		}
	}
}

func TestDecodedLen(t *testing.T) {
	for n := 0; n < 200; n++ {
		d := DecodedLen(n)
		if d >= 0 && EncodedLen(d) != n {
			t.Errorf("DecodedLen(%d) = %d but EncodedLen(%d) = %d", n, d, d, EncodedLen(d))
		}
	}
	for b := 0; b < 100; b++ {
		if DecodedLen(EncodedLen(b)) != b {
			t.Errorf("DecodedLen(EncodedLen(%d)) = %d", b, DecodedLen(EncodedLen(b)))
		}
	}
}

func FuzzNix32Decode(f *testing.F) {
	for _, s := range []string{"", "00", "zz", "7zzzzzzzzzzzzzzzzzzzzzzzzz", "1rqajj460gkzrn32rw96hb3h87mrp40kb8hq1hfd1xldz0j54zap", "2" + strings.Repeat("0", 51), "e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := Decode(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if !IsValid(s) || len(b) != DecodedLen(len(s)) {
			t.Fatalf("Decode(%q) accepted an invalid string", s)
		}
		// Decoding is one-to-one: the encoding is canonical.
		if got := Encode(b); got != s {
			t.Fatalf("Encode(Decode(%q)) = %q", s, got)
		}
		// And Encode inverts it for arbitrary bytes too.
		raw := []byte(s)
		if back, err := Decode(Encode(raw)); err != nil || !bytes.Equal(back, raw) {
			t.Fatalf("Decode(Encode(%x)) = %x, %v", raw, back, err)
		}
	})
}

func ExampleEncode() {
	fmt.Println(Encode([]byte{0x01, 0x00, 0x00, 0x00, 0x00}))
	// Output: 00000001
}
