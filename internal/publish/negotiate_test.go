package publish

import (
	"net/http"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	const size = 100
	tests := []struct {
		h        string
		from, to uint64
		err      error
	}{
		{h: "bytes=0-9", from: 0, to: 10},
		{h: "bytes=10-", from: 10, to: 100},
		{h: "bytes=99-99", from: 99, to: 100},
		{h: "bytes=50-1000", from: 50, to: 100},
		{h: "bytes=-1", from: 99, to: 100},
		{h: "bytes=-1000", from: 0, to: 100},
		{h: "bytes= 3-4", from: 3, to: 5},
		{h: "bytes=100-", err: errUnsatisfiable},
		{h: "bytes=100-200", err: errUnsatisfiable},
		{h: "bytes=-0", err: errUnsatisfiable},
		{h: "bytes=5-4", err: errIgnoreRange},
		{h: "bytes=0-1,3-4", err: errIgnoreRange},
		{h: "items=0-1", err: errIgnoreRange},
		{h: "bytes=", err: errIgnoreRange},
		{h: "bytes=-", err: errIgnoreRange},
		{h: "bytes=a-b", err: errIgnoreRange},
		{h: "bytes=+1-2", err: errIgnoreRange},
		{h: "bytes=18446744073709551616-", err: errIgnoreRange},
	}
	for _, tt := range tests {
		from, to, err := parseRange(tt.h, size)
		if err != tt.err || from != tt.from || to != tt.to {
			t.Errorf("parseRange(%q) = %d, %d, %v; want %d, %d, %v", tt.h, from, to, err, tt.from, tt.to, tt.err)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-9", "bytes=-5", "bytes=7-", "bytes=1-2,3-4", "bytes=9-1", "bytes=-0"} {
		f.Add(s, uint64(10))
	}
	f.Fuzz(func(t *testing.T, h string, size uint64) {
		if size == 0 {
			return // NARs are never empty
		}
		from, to, err := parseRange(h, size)
		if err == nil && !(from < to && to <= size) {
			t.Fatalf("parseRange(%q, %d) = [%d, %d): not a non-empty range inside the body", h, size, from, to)
		}
	})
}

func TestAcceptsZstd(t *testing.T) {
	tests := []struct {
		h    string
		want bool
	}{
		{"", false},
		{"zstd", true},
		{"gzip, deflate, br, zstd", true},
		{"gzip;q=1.0, ZSTD ; q=0.5", true},
		{"zstd;q=0", false},
		{"zstd;q=0.000", false},
		{"*", false},
		{"gzip", false},
		{"zstdx", false},
	}
	for _, tt := range tests {
		r, _ := http.NewRequest("GET", "/", nil)
		if tt.h != "" {
			r.Header.Set("Accept-Encoding", tt.h)
		}
		if got := acceptsZstd(r); got != tt.want {
			t.Errorf("acceptsZstd(%q) = %v, want %v", tt.h, got, tt.want)
		}
	}
}

const (
	testHashPart = "0c7j7lbfb0kmdb34y0jlsc3pwd1ks5rk"
	testNarHash  = "1fyxa12qj4nz74xyywrrdkyxl1iwsvwbj3c3yn88g5l7aj8pj0c6"
)

func TestParseNARFile(t *testing.T) {
	tests := []struct {
		file       string
		ok         bool
		compressed bool
	}{
		{file: testHashPart + "-" + testNarHash + ".nar", ok: true},
		{file: testHashPart + "-" + testNarHash + ".nar.zst", ok: true, compressed: true},
		{file: testHashPart + "-" + testNarHash + ".nar.xz"},
		{file: testHashPart + ".nar"},
		{file: testNarHash + ".nar"},
		{file: testHashPart + "-" + testNarHash[1:] + ".nar"},
		{file: strings.ToUpper(testHashPart) + "-" + testNarHash + ".nar"},
		{file: testHashPart + "-" + strings.Replace(testNarHash, "1", "e", 1) + ".nar"}, // 'e' is not nix32
	}
	for _, tt := range tests {
		hp, nh, compressed, ok := parseNARFile(tt.file)
		if ok != tt.ok || compressed != tt.compressed || ok && (hp != testHashPart || nh != testNarHash) {
			t.Errorf("parseNARFile(%q) = %q, %q, %v, %v; want ok %v compressed %v", tt.file, hp, nh, compressed, ok, tt.ok, tt.compressed)
		}
	}
}

func FuzzParseNARFile(f *testing.F) {
	f.Add(testHashPart + "-" + testNarHash + ".nar")
	f.Add(testHashPart + "-" + testNarHash + ".nar.zst")
	f.Add(testHashPart + "--" + testNarHash + ".nar")
	f.Fuzz(func(t *testing.T, file string) {
		hp, nh, compressed, ok := parseNARFile(file)
		if !ok {
			return
		}
		back := hp + "-" + nh + ".nar"
		if compressed {
			back += ".zst"
		}
		if back != file {
			t.Fatalf("parseNARFile(%q) = %q, %q, %v: does not rebuild the name", file, hp, nh, compressed)
		}
	})
}
