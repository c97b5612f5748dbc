package hash

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/nixtest"
)

type golden struct {
	file               string
	algo               Algo
	base16, nix32, sri string
}

func readGolden(t *testing.T) []golden {
	t.Helper()
	f, err := os.Open("testdata/golden.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []golden
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 5 {
			t.Fatalf("bad golden line %q", sc.Text())
		}
		a, err := ParseAlgo(fs[1])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, golden{fs[0], a, fs[2], fs[3], fs[4]})
	}
	if len(out) < 12 {
		t.Fatalf("only %d golden lines (run testdata/gen.sh)", len(out))
	}
	return out
}

// TestGolden checks hashes of testdata/inputs as the real nix hash file
// printed them (testdata/gen.sh), in every form, both ways.
func TestGolden(t *testing.T) {
	for _, g := range readGolden(t) {
		t.Run(g.file+"/"+g.algo.String(), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "inputs", g.file))
			if err != nil {
				t.Fatal(err)
			}
			checkForms(t, Sum(g.algo, data), g.algo, g.base16, g.nix32, g.sri)

			w := NewWriter(g.algo)
			for chunk := range slices(data, 7) {
				w.Write(chunk)
			}
			if w.Sum() != Sum(g.algo, data) || w.Size() != uint64(len(data)) {
				t.Errorf("Writer: %v after %d bytes, want %v after %d", w.Sum(), w.Size(), Sum(g.algo, data), len(data))
			}
		})
	}
}

func slices(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			k := min(n, len(b))
			if !yield(b[:k]) {
				return
			}
			b = b[k:]
		}
	}
}

// checkForms checks that h prints as Nix's forms and that every form
// parses back to h.
func checkForms(t *testing.T, h Hash, a Algo, base16, nix32, sri string) {
	t.Helper()
	b64 := strings.TrimPrefix(sri, a.String()+"-")
	got := []string{h.Base16(), h.Nix32(), h.SRI(), h.Base64(), h.String(),
		h.Format(FormatBase16), h.Format(FormatNix32), h.Format(FormatSRI), h.Format(FormatBase64)}
	want := []string{base16, nix32, sri, b64, a.String() + ":" + nix32, base16, nix32, sri, b64}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("printed forms (-nix +silo):\n%s", diff)
	}
	if h.Algo() != a || len(h.Bytes()) != a.Size() {
		t.Errorf("Algo %v, %d bytes", h.Algo(), len(h.Bytes()))
	}
	for _, s := range []string{a.String() + ":" + base16, a.String() + ":" + strings.ToUpper(base16), a.String() + ":" + nix32, a.String() + ":" + b64, sri} {
		if p, err := Parse(s); err != nil || p != h {
			t.Errorf("Parse(%q) = %v, %v", s, p, err)
		}
		if p, err := ParseAs(s, a); err != nil || p != h {
			t.Errorf("ParseAs(%q) = %v, %v", s, p, err)
		}
	}
	for _, s := range []string{base16, nix32, b64} {
		if p, err := ParseAs(s, a); err != nil || p != h {
			t.Errorf("ParseAs(%q, %v) = %v, %v", s, a, p, err)
		}
	}
	if p, err := FromBytes(a, h.Bytes()); err != nil || p != h {
		t.Errorf("FromBytes: %v, %v", p, err)
	}
}

// TestWithNix hashes random data and converts random digests with the
// live Nix.
func TestWithNix(t *testing.T) {
	n := nixtest.Require(t)
	data := make([]byte, 3000)
	rand.Read(data)
	file := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string { return strings.TrimSpace(n.Run("nix", args...)) }
	for _, a := range []Algo{MD5, SHA1, SHA256, SHA512} {
		h := Sum(a, data)
		checkForms(t, h, a,
			run("hash", "file", "--type", a.String(), "--base16", file),
			run("hash", "file", "--type", a.String(), "--base32", file),
			run("hash", "file", "--type", a.String(), "--sri", file))
		// Nix reads silo's forms back to the same hash.
		for _, s := range []string{h.String(), h.SRI(), a.String() + ":" + h.Base64()} {
			if got := run("hash", "to-base16", s); got != h.Base16() {
				t.Errorf("nix hash to-base16 %s = %s, want %s", s, got, h.Base16())
			}
		}
		if got := run("hash", "to-sri", "--type", a.String(), h.Nix32()); got != h.SRI() {
			t.Errorf("nix hash to-sri %s = %s, want %s", h.Nix32(), got, h.SRI())
		}
	}
}

// TestParseRejects checks malformed hashes. nixAccepts marks inputs the
// real Nix's lenient base64 decoder takes and silo refuses; the test checks
// that claim against the live Nix, so the table documents the difference.
func TestParseRejects(t *testing.T) {
	const (
		b16 = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
		n32 = "00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq"
		b64 = "WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM="
	)
	tests := []struct {
		name       string
		in         string
		as         Algo // ParseAs with this algorithm; 0 for Parse
		nixAccepts bool
	}{
		{name: "empty", in: ""},
		{name: "no algorithm", in: n32},
		{name: "unknown algorithm", in: "sha257:" + n32},
		{name: "upper-case algorithm", in: "SHA256:" + n32},
		{name: "empty digest", in: "sha256:"},
		{name: "empty SRI", in: "sha256-"},
		{name: "base16 one short", in: "sha256:" + b16[1:]},
		{name: "base16 bad character", in: "sha256:g" + b16[1:]},
		{name: "nix32 one short", in: "sha256:" + n32[1:]},
		{name: "nix32 one long", in: "sha256:0" + n32},
		{name: "nix32 letter e", in: "sha256:e" + n32[1:]},
		{name: "nix32 upper case", in: "sha256:" + strings.ToUpper(n32)},
		{name: "nix32 overflow", in: "sha256:z" + n32[1:]},
		{name: "base64 unpadded without SRI", in: "sha256:" + strings.TrimSuffix(b64, "=")},
		{name: "base64 bad character", in: "sha256:*" + b64[1:]},
		{name: "SRI of another size", in: "sha1-" + b64},
		{name: "SRI bad character", in: "sha256-" + b64[:5] + "." + b64[6:]},
		{name: "SRI digest in nix32", in: "sha256-" + n32},
		{name: "wrong algorithm for ParseAs", in: "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709", as: SHA256},
		{name: "bare digest of another size", in: b16, as: SHA1},
		{name: "SRI non-canonical last bits", in: "sha256-" + b64[:42] + "N=", nixAccepts: true},
		{name: "SRI double padding", in: "sha256-" + b64 + "=", nixAccepts: true},
		{name: "SRI garbage after padding", in: "sha256-" + b64 + "xyz", nixAccepts: true},
	}
	n := optionalNix(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				h   Hash
				err error
			)
			if tt.as != 0 {
				h, err = ParseAs(tt.in, tt.as)
			} else {
				h, err = Parse(tt.in)
			}
			if err == nil {
				t.Fatalf("accepted %q as %v", tt.in, h)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if n == nil || tt.in == "" {
				return
			}
			args := []string{"hash", "to-base16", tt.in}
			if tt.as != 0 {
				args = []string{"hash", "to-base16", "--type", tt.as.String(), tt.in}
			}
			if out, err := n.Try("nix", args...); (err == nil) != tt.nixAccepts {
				t.Errorf("Nix accepts it: %v (%q), want %v", err == nil, strings.TrimSpace(out), tt.nixAccepts)
			}
		})
	}
}

// TestParseTolerated: forms Nix accepts that silo must accept too.
func TestParseTolerated(t *testing.T) {
	want, err := Parse("sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM", // SRI without padding
		"sha256:5891B5B522D5DF086D0FF0B110FBD9D21BB4FC7163AF34D08286A2E846F6BE03",
	} {
		if h, err := Parse(s); err != nil || h != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", s, h, err, want)
		}
	}
	if nx := optionalNix(t); nx != nil {
		out := strings.TrimSpace(nx.Run("nix", "hash", "to-base32", "sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM"))
		if out != want.Nix32() {
			t.Errorf("Nix reads unpadded SRI as %s", out)
		}
	}
}

func TestAlgoAndFormat(t *testing.T) {
	for _, a := range []Algo{MD5, SHA1, SHA256, SHA512} {
		p, err := ParseAlgo(a.String())
		if err != nil || p != a || a.New().Size() != a.Size() {
			t.Errorf("ParseAlgo(%s) = %v, %v", a, p, err)
		}
	}
	for _, s := range []string{"", "SHA256", "sha", "blake3", "sha-256"} {
		if _, err := ParseAlgo(s); err == nil {
			t.Errorf("ParseAlgo(%q) succeeded", s)
		}
	}
	for s, want := range map[string]Format{"sri": FormatSRI, "nix32": FormatNix32, "base32": FormatNix32, "base16": FormatBase16, "hex": FormatBase16, "base64": FormatBase64} {
		if f, err := ParseFormat(s); err != nil || f != want {
			t.Errorf("ParseFormat(%q) = %v, %v", s, f, err)
		}
	}
	if _, err := ParseFormat("base58"); err == nil {
		t.Error("ParseFormat(base58) succeeded")
	}
	if _, err := FromBytes(SHA256, make([]byte, 20)); !errors.Is(err, ErrInvalid) {
		t.Errorf("FromBytes with a short digest: %v", err)
	}
	if _, err := FromBytes(0, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("FromBytes with no algorithm: %v", err)
	}
	var zero Hash
	if !zero.IsZero() || zero.String() != "" || Sum(MD5, nil).IsZero() {
		t.Error("IsZero wrong")
	}
}

func FuzzHashParse(f *testing.F) {
	for _, s := range []string{
		"sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq",
		"sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=",
		"sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM",
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs",
		"sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==",
		"sha256:", "-", ":",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if h.IsZero() || len(h.Bytes()) != h.Algo().Size() {
			t.Fatalf("Parse(%q) gave a malformed hash", s)
		}
		for _, form := range []string{h.String(), h.SRI(), h.Algo().String() + ":" + h.Base16(), h.Algo().String() + ":" + h.Base64()} {
			if again, err := Parse(form); err != nil || again != h {
				t.Fatalf("Parse(%q) = %v, %v; want %v (from %q)", form, again, err, h, s)
			}
		}
		for _, bare := range []string{h.Nix32(), h.Base16(), h.Base64()} {
			if again, err := ParseAs(bare, h.Algo()); err != nil || again != h {
				t.Fatalf("ParseAs(%q) = %v, %v", bare, again, err)
			}
		}
		if !bytes.Equal(mustB64(t, h.Base64()), h.Bytes()) {
			t.Fatal("Base64 does not decode to Bytes")
		}
	})
}

func mustB64(t *testing.T, s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// optionalNix returns the real Nix when it can run here (always under CI),
// and nil on a developer machine without it: the table tests that use it
// still check silo's side.
func optionalNix(t *testing.T) *nixtest.Nix {
	if os.Getenv("CI") == "" && (!nixtest.Available() || os.Geteuid() != 0) {
		return nil
	}
	return nixtest.Require(t)
}
