package narinfo

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

func readFile(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func loadKeys(t testing.TB) (signature.SecretKey, *signature.KeySet) {
	t.Helper()
	sk, err := signature.LoadSecretKeyFile(filepath.Join("testdata", "key.sec"))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := signature.ParseKeySet(readFile(t, "key.pub") + " " + readFile(t, "key2.pub"))
	if err != nil {
		t.Fatal(err)
	}
	return sk, ks
}

// TestGolden checks every narinfo the real Nix wrote (testdata/gen.sh):
// printing a parsed file gives it back byte for byte, its signatures verify
// (so Fingerprint is what Nix signed), and signing it again with the same key
// gives Nix's signature exactly.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.narinfo")
	if err != nil || len(files) < 6 {
		t.Fatalf("golden files: %v, %v (run testdata/gen.sh)", files, err)
	}
	sk, ks := loadKeys(t)
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			text := readFile(t, name)
			n, err := ParseString(storepath.DefaultDir, text)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(text, n.String()); diff != "" {
				t.Errorf("String() differs from Nix's file (-nix +silo):\n%s", diff)
			}
			if !n.Verify(ks) {
				t.Errorf("signatures %v do not verify over %q", n.Sigs, n.Fingerprint())
			}
			if n.Verify(signature.NewKeySet()) {
				t.Error("verifies with no trusted keys")
			}
			var nixSig string
			for _, s := range n.Sigs {
				if s.KeyName == sk.Name() {
					nixSig = s.String()
				}
			}
			resigned := *n
			resigned.Sigs = slices.Clone(n.Sigs)
			resigned.Sign(sk)
			if diff := cmp.Diff(n.String(), resigned.String()); diff != "" {
				t.Errorf("re-signing with %s changed the file (-nix +silo):\n%s", sk.Name(), diff)
			}
			fresh := *n
			fresh.Sigs = nil
			fresh.Sign(sk)
			if got := fresh.Sigs[0].String(); got != nixSig {
				t.Errorf("silo's signature %s, Nix's %s", got, nixSig)
			}
			wantCA := strings.HasPrefix(name, "src-")
			if got := n.ContentAddressed(); got != wantCA {
				t.Errorf("ContentAddressed() = %v, want %v", got, wantCA)
			}
		})
	}
}

func TestGoldenFields(t *testing.T) {
	n, err := ParseString(storepath.DefaultDir, readFile(t, "silo-golden-xz.narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	d := storepath.DefaultDir
	parse := func(s string) storepath.Path {
		p, err := d.ParseBase(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	h := func(s string) hash.Hash {
		v, err := hash.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	self := parse("3dw2zzl83hca43rh3d1qkkm81iaky2ir-silo-golden")
	want := &NarInfo{
		StorePath:   self,
		URL:         "nar/1776isp9ixqlii7336ffdxcjc1xifj9rcx5wdrmk554231bsk4jz.nar.xz",
		Compression: "xz",
		FileHash:    h("sha256:1776isp9ixqlii7336ffdxcjc1xifj9rcx5wdrmk554231bsk4jz"),
		FileSize:    248,
		NarHash:     h("sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j"),
		NarSize:     280,
		References: []storepath.Path{parse("22gnja3azrxzlflhzbkpf0riscj4y3zh-src"), self,
			parse("yblilphmz7hk8x7xpg2glxa88gp63w4h-silo-golden-dep")},
		Deriver: parse("6ffkixsh8vgrjkaccj069zw0dg8zfdma-silo-golden.drv"),
		Sigs:    n.Sigs,
	}
	if diff := cmp.Diff(want, n, cmp.AllowUnexported(storepath.Path{}, hash.Hash{})); diff != "" {
		t.Errorf("parsed (-want +got):\n%s", diff)
	}
	wantFP := "1;/nix/store/3dw2zzl83hca43rh3d1qkkm81iaky2ir-silo-golden;sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j;280;" +
		"/nix/store/22gnja3azrxzlflhzbkpf0riscj4y3zh-src,/nix/store/3dw2zzl83hca43rh3d1qkkm81iaky2ir-silo-golden,/nix/store/yblilphmz7hk8x7xpg2glxa88gp63w4h-silo-golden-dep"
	if got := n.Fingerprint(); got != wantFP {
		t.Errorf("Fingerprint:\n got %s\nwant %s", got, wantFP)
	}
	// Nix keeps references in a set: the fingerprint does not depend on order.
	shuffled := []storepath.Path{want.References[2], want.References[0], want.References[1], want.References[0]}
	if got := Fingerprint(n.StorePath, n.NarHash, n.NarSize, shuffled); got != wantFP {
		t.Errorf("Fingerprint of shuffled references:\n got %s\nwant %s", got, wantFP)
	}
}

// base is Nix's file that the parse tables below modify.
const (
	baseFile = "silo-golden-none.narinfo"
	basePath = "/nix/store/3dw2zzl83hca43rh3d1qkkm81iaky2ir-silo-golden"
)

// edit returns a function replacing old (which must occur) by new in the base file.
func edit(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("edit: " + old + " not in base narinfo")
		}
		return strings.Replace(s, old, new, 1)
	}
}

func chain(fs ...func(string) string) func(string) string {
	return func(s string) string {
		for _, f := range fs {
			s = f(s)
		}
		return s
	}
}

const sha512Hex = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"

// TestParseTolerated holds inputs Nix accepts, and checks that silo reads
// them as Nix does (compared with nix path-info --json when Nix is here).
func TestParseTolerated(t *testing.T) {
	n := optionalNix(t)
	tests := []struct {
		name   string
		edit   func(string) string
		string string // silo's String() when it is not the input
	}{
		{name: "unknown field", edit: edit("URL:", "X-Unknown: a: b\nURL:")},
		{name: "unknown field with empty name", edit: edit("URL:", ": foo\nURL:")},
		{name: "repeated URL: last wins", edit: edit("URL: nar/", "URL: first\nURL: nar/")},
		{name: "repeated NarSize: last wins", edit: edit("NarSize: 280", "NarSize: 1\nNarSize: 280")},
		{name: "fields in another order", edit: func(s string) string {
			lines := strings.SplitAfter(s, "\n")
			slices.Reverse(lines)
			return strings.Join(lines, "")
		}},
		{name: "no Compression, FileHash, FileSize", edit: chain(edit("Compression: none\n", ""),
			edit("FileHash: sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j\n", ""), edit("FileSize: 280\n", ""))},
		{name: "empty Compression", edit: edit("Compression: none", "Compression: ")},
		{name: "sizes with + and leading zeros", edit: chain(edit("NarSize: 280", "NarSize: +0280"), edit("FileSize: 280", "FileSize: 00280"))},
		{name: "NarHash in base16", edit: edit("NarHash: sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j",
			"NarHash: sha256:32c82756d87cc5d88fb2f4b1123ad0eb46a77de5c4eb6cba2f9ff9fb843b0b85")},
		{name: "NarHash in SRI", edit: edit("NarHash: sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j",
			"NarHash: sha256-MsgnVth8xdiPsvSxEjrQ60anfeXE62y6L5/5+4Q7C4U=")},
		{name: "FileHash sha512", edit: edit("FileHash: sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j", "FileHash: "+sha512Hex)},
		{name: "References with extra spaces", edit: edit("References: ", "References:   ")},
		{name: "References repeated entry", edit: edit("References: 22gnja3azrxzlflhzbkpf0riscj4y3zh-src", "References: 22gnja3azrxzlflhzbkpf0riscj4y3zh-src 22gnja3azrxzlflhzbkpf0riscj4y3zh-src")},
		{name: "empty References before References", edit: edit("References: ", "References: \nReferences: ")},
		{name: "References absent", edit: func(s string) string {
			i := strings.Index(s, "References: ")
			return s[:i] + s[i+strings.Index(s[i:], "\n")+1:]
		}, string: "References: \n"},
		{name: "unknown-deriver", edit: edit("Deriver: 6ffkixsh8vgrjkaccj069zw0dg8zfdma-silo-golden.drv", "Deriver: unknown-deriver")},
		{name: "unknown-deriver after a deriver", edit: edit("Sig:", "Deriver: unknown-deriver\nSig:")},
		{name: "repeated Sig", edit: edit("Sig: golden-1", "Sig: golden-2:G13+keEjvdIYvqc1XxxsOOrcRYT7l7zEO7ne0Y4HWkeSXT+X1fNhP/xQj5wrrpP1q9uo6YhdNl19ia3v6af8BA==\nSig: golden-1")},
		{name: "System", edit: edit("Sig: golden-1", "System: x86_64-linux\nSig: golden-1")},
		{name: "empty CA", edit: func(s string) string { return s + "CA: \n" }},
		{name: "CA in base16 and then another after empty", edit: func(s string) string {
			return s + "CA: \nCA: fixed:r:sha256:32c82756d87cc5d88fb2f4b1123ad0eb46a77de5c4eb6cba2f9ff9fb843b0b85\n"
		}},
		{name: "CA fixed flat sha1", edit: func(s string) string { return s + "CA: fixed:sha1:0a4d55a8d778e5022fab701977c5d840bbc486d0\n" }},
		{name: "CA text", edit: func(s string) string {
			return s + "CA: text:sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j\n"
		}},
		{name: "carriage return in URL", edit: edit("URL: nar/118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j.nar", "URL: nar/x.nar\r")},
	}
	base := readFile(t, baseFile)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.edit(base)
			ni, err := ParseString(storepath.DefaultDir, in)
			if err != nil {
				t.Fatalf("silo rejects what Nix accepts: %v\n%s", err, in)
			}
			again, err := ParseString(storepath.DefaultDir, ni.String())
			if err != nil {
				t.Fatalf("reparse of String(): %v\n%s", err, ni.String())
			}
			if diff := cmp.Diff(ni.String(), again.String()); diff != "" {
				t.Errorf("parse→String→parse not stable:\n%s", diff)
			}
			if tt.string != "" && !strings.Contains(ni.String(), tt.string) {
				t.Errorf("String() lacks %q:\n%s", tt.string, ni.String())
			}
			if n == nil {
				return
			}
			got, err := nixParse(t, n, in)
			if err != nil {
				t.Fatalf("Nix rejects it: %v", err)
			}
			if diff := cmp.Diff(asNix(ni), got); diff != "" {
				t.Errorf("silo and Nix read it differently (-silo +nix):\n%s", diff)
			}
		})
	}
}

// TestParseRejected holds malformed inputs. nixAccepts marks silo's
// deliberate strictness (see the package doc); the test checks it against
// the real Nix both ways, so the table documents what Nix really does.
func TestParseRejected(t *testing.T) {
	n := optionalNix(t)
	const h32 = "118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j"
	tests := []struct {
		name       string
		edit       func(string) string
		line       int    // 0: the error names no line
		field      string // named in the error
		nixAccepts bool
	}{
		{name: "empty file", edit: func(string) string { return "" }, field: "StorePath, URL, NarHash, NarSize"},
		{name: "no final newline", edit: func(s string) string { return strings.TrimSuffix(s, "\n") }, line: 11},
		{name: "blank line at end", edit: func(s string) string { return s + "\n" }, line: 12},
		// Nix takes the blank line or colon-less line and the next line's name
		// as one unknown field's name: it loses the next field.
		{name: "blank line inside", edit: edit("Compression:", "\nCompression:"), line: 3, nixAccepts: true},
		{name: "line without colon", edit: edit("Compression:", "garbage\nCompression:"), line: 3, nixAccepts: true},
		{name: "blank line before a required field", edit: edit("URL:", "\nURL:"), line: 2},
		{name: "no space after colon", edit: edit("NarSize: 280", "NarSize:\t280"), line: 7, nixAccepts: true},
		{name: "field name with colon", edit: edit("URL:", "A:b: c\nURL:"), line: 2, nixAccepts: true},
		{name: "nothing after colon", edit: edit("URL:", "System:\nURL:"), line: 2},
		{name: "missing StorePath", edit: edit("StorePath: "+basePath+"\n", ""), field: "StorePath"},
		{name: "StorePath bad hash character", edit: edit("StorePath: /nix/store/3dw", "StorePath: /nix/store/edw"), line: 1, field: "StorePath"},
		{name: "StorePath hash too short", edit: edit("StorePath: /nix/store/3dw", "StorePath: /nix/store/dw"), line: 1, field: "StorePath"},
		{name: "StorePath bad name", edit: edit("silo-golden\n", "silo golden\n"), line: 1, field: "StorePath"},
		{name: "StorePath in another directory", edit: edit("StorePath: /nix/store/", "StorePath: /nix/other/"), line: 1, field: "StorePath"},
		{name: "StorePath inside a path", edit: edit("silo-golden\n", "silo-golden/bin\n"), line: 1, field: "StorePath"},
		{name: "StorePath with trailing slash", edit: edit("silo-golden\n", "silo-golden/\n"), line: 1, field: "StorePath", nixAccepts: true},
		{name: "missing URL", edit: edit("URL: nar/"+h32+".nar\n", ""), field: "URL"},
		{name: "empty URL", edit: edit("URL: nar/"+h32+".nar", "URL: "), field: "URL"},
		{name: "FileHash without algorithm", edit: edit("FileHash: sha256:", "FileHash: "), line: 4, field: "FileHash"},
		{name: "FileHash bad character", edit: edit("FileHash: sha256:1", "FileHash: sha256:e"), line: 4, field: "FileHash"},
		{name: "FileHash unknown algorithm", edit: edit("FileHash: sha256:", "FileHash: sha257:"), line: 4, field: "FileHash"},
		{name: "FileSize negative", edit: edit("FileSize: 280", "FileSize: -280"), line: 5, field: "FileSize"},
		{name: "FileSize empty", edit: edit("FileSize: 280", "FileSize: "), line: 5, field: "FileSize"},
		{name: "missing NarHash", edit: edit("NarHash: sha256:"+h32+"\n", ""), field: "NarHash"},
		{name: "NarHash wrong length", edit: edit("NarHash: sha256:1", "NarHash: sha256:"), line: 6, field: "NarHash"},
		{name: "NarHash overflowing nix32", edit: edit("NarHash: sha256:1", "NarHash: sha256:z"), line: 6, field: "NarHash"},
		{name: "NarHash sha512", edit: edit("NarHash: sha256:"+h32, "NarHash: "+sha512Hex), line: 6, field: "NarHash", nixAccepts: true},
		{name: "NarSize zero", edit: edit("NarSize: 280", "NarSize: 0"), field: "NarSize"},
		{name: "NarSize not a number", edit: edit("NarSize: 280", "NarSize: 28O"), line: 7, field: "NarSize"},
		{name: "NarSize with space", edit: edit("NarSize: 280", "NarSize:  280"), line: 7, field: "NarSize"},
		{name: "NarSize overflow", edit: edit("NarSize: 280", "NarSize: 18446744073709551616"), line: 7, field: "NarSize"},
		{name: "NarSize hex", edit: edit("NarSize: 280", "NarSize: 0x118"), line: 7, field: "NarSize"},
		{name: "References full path", edit: edit("References: ", "References: /nix/store/"), line: 8, field: "References"},
		{name: "References bad hash", edit: edit("References: 22g", "References: 22e"), line: 8, field: "References"},
		{name: "References separated by tab", edit: edit("-src 3dw", "-src\t3dw"), line: 8, field: "References"},
		{name: "second References", edit: edit("Deriver:", "References: 22gnja3azrxzlflhzbkpf0riscj4y3zh-src\nDeriver:"), line: 9, field: "References"},
		{name: "empty Deriver", edit: edit("Deriver: 6ffkixsh8vgrjkaccj069zw0dg8zfdma-silo-golden.drv", "Deriver: "), line: 9, field: "Deriver"},
		{name: "Deriver full path", edit: edit("Deriver: ", "Deriver: /nix/store/"), line: 9, field: "Deriver"},
		{name: "Sig without name", edit: edit("Sig: golden-1", "Sig: "), line: 10, field: "Sig", nixAccepts: true},
		{name: "Sig short", edit: edit("Sig: golden-1:oXQZ", "Sig: golden-1:"), line: 10, field: "Sig", nixAccepts: true},
		{name: "CA unknown method", edit: func(s string) string { return s + "CA: fixe:r:sha256:" + h32 + "\n" }, line: 12, field: "CA"},
		{name: "CA text sha1", edit: func(s string) string { return s + "CA: text:sha1:0a4d55a8d778e5022fab701977c5d840bbc486d0\n" }, line: 12, field: "CA"},
		{name: "CA without hash", edit: func(s string) string { return s + "CA: fixed:r:sha256\n" }, line: 12, field: "CA"},
		{name: "CA SRI hash", edit: func(s string) string {
			return s + "CA: fixed:r:sha256:sha256-MsgnVth8xdiPsvSxEjrQ60anfeXE62y6L5/5+4Q7C4U=\n"
		}, line: 12, field: "CA"},
		{name: "second CA", edit: func(s string) string { return s + "CA: fixed:r:sha256:" + h32 + "\nCA: fixed:r:sha256:" + h32 + "\n" }, line: 13, field: "CA"},
	}
	base := readFile(t, baseFile)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.edit(base)
			ni, err := ParseString(storepath.DefaultDir, in)
			if err == nil {
				t.Fatalf("silo accepts it:\n%s\nas\n%s", in, ni)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q does not wrap ErrInvalid", err)
			}
			if tt.line > 0 && !strings.Contains(err.Error(), "line "+strconv.Itoa(tt.line)+":") {
				t.Errorf("error %q does not name line %d", err, tt.line)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %q", err, tt.field)
			}
			if n == nil {
				return
			}
			if _, err := nixParse(t, n, in); (err == nil) != tt.nixAccepts {
				t.Errorf("Nix accepts it: %v, want %v (err %v)", err == nil, tt.nixAccepts, err)
			}
		})
	}

	big := base + "X-Padding: " + strings.Repeat("a", MaxSize) + "\n"
	if _, err := ParseString(storepath.DefaultDir, big); !errors.Is(err, ErrInvalid) {
		t.Errorf("input over MaxSize: got %v", err)
	}
}

// nixView is what nix path-info --json shows of a narinfo.
type nixView struct {
	Path         string   `json:"path"`
	NarHash      string   `json:"narHash"`
	NarSize      uint64   `json:"narSize"`
	References   []string `json:"references"`
	Deriver      string   `json:"deriver,omitempty"`
	Signatures   []string `json:"signatures,omitempty"`
	URL          string   `json:"url,omitempty"`
	DownloadHash string   `json:"downloadHash,omitempty"`
	DownloadSize uint64   `json:"downloadSize,omitempty"`
	CA           string   `json:"ca,omitempty"`
}

// asNix renders n as nix path-info --json shows it: sets sorted.
func asNix(n *NarInfo) nixView {
	v := nixView{Path: n.StorePath.String(), NarHash: n.NarHash.SRI(), NarSize: n.NarSize,
		References: []string{}, URL: n.URL, DownloadSize: n.FileSize, CA: n.CA}
	if !n.Deriver.IsZero() {
		v.Deriver = n.Deriver.String()
	}
	if !n.FileHash.IsZero() {
		v.DownloadHash = n.FileHash.SRI()
	}
	for _, r := range n.References {
		v.References = append(v.References, r.String())
	}
	slices.Sort(v.References)
	v.References = slices.Compact(v.References)
	for _, s := range n.Sigs {
		v.Signatures = append(v.Signatures, s.String())
	}
	slices.Sort(v.Signatures)
	return v
}

// nixParse has the real Nix read narinfo text for basePath from a file:// cache.
func nixParse(t *testing.T, n *nixtest.Nix, text string) (nixView, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _ := storepath.DefaultDir.Parse(basePath)
	if err := os.WriteFile(filepath.Join(dir, p.HashPart()+".narinfo"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := n.Try("nix", "path-info", "--json", "--store", "file://"+dir, basePath)
	if err != nil {
		return nixView{}, err
	}
	var views []nixView
	if err := json.Unmarshal([]byte(out), &views); err != nil || len(views) != 1 {
		t.Fatalf("nix path-info --json: %q: %v", out, err)
	}
	return views[0], nil
}

func TestStringOptionalFields(t *testing.T) {
	n, err := ParseString(storepath.DefaultDir, readFile(t, "src-none.narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	n.Compression, n.FileHash, n.FileSize, n.Sigs, n.CA = "", hash.Hash{}, 0, nil, ""
	n.System = "aarch64-linux"
	want := "StorePath: /nix/store/22gnja3azrxzlflhzbkpf0riscj4y3zh-src\n" +
		"URL: nar/0rlbj0c9bfkvnmh8jhd8lz71rdagca86yq0c1pn0kbm74ij21g51.nar\n" +
		"NarHash: sha256:0rlbj0c9bfkvnmh8jhd8lz71rdagca86yq0c1pn0kbm74ij21g51\n" +
		"NarSize: 144\n" +
		"References: \n" +
		"System: aarch64-linux\n"
	if diff := cmp.Diff(want, n.String()); diff != "" {
		t.Errorf("String() (-want +got):\n%s", diff)
	}
	var b strings.Builder
	if _, err := n.WriteTo(&b); err != nil || b.String() != want {
		t.Errorf("WriteTo wrote %q, %v", b.String(), err)
	}
}

func TestSignReplacesSameKey(t *testing.T) {
	sk, ks := loadKeys(t)
	n, err := ParseString(storepath.DefaultDir, readFile(t, baseFile))
	if err != nil {
		t.Fatal(err)
	}
	n.NarSize++ // invalidates both signatures
	if n.Verify(ks) {
		t.Fatal("verifies after NarSize changed")
	}
	n.Sign(sk)
	if len(n.Sigs) != 2 || n.Sigs[0].KeyName != "golden-1" || !n.Verify(ks) {
		t.Errorf("after Sign: sigs %v, verify %v", n.Sigs, n.Verify(ks))
	}
	if n.Verify(signature.NewKeySet(mustPub(t, readFile(t, "key2.pub")))) {
		t.Error("stale golden-2 signature still verifies")
	}
}

func mustPub(t testing.TB, s string) signature.PublicKey {
	t.Helper()
	k, err := signature.ParsePublicKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseCA(t *testing.T) {
	for in, want := range map[string]string{
		"text:sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j":                "text:sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j",
		"fixed:r:sha256:32c82756d87cc5d88fb2f4b1123ad0eb46a77de5c4eb6cba2f9ff9fb843b0b85": "fixed:r:sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j",
		"fixed:sha256:MsgnVth8xdiPsvSxEjrQ60anfeXE62y6L5/5+4Q7C4U=":                       "fixed:sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j",
		"fixed:md5:d41d8cd98f00b204e9800998ecf8427e":                                      "fixed:md5:3y8bwfr609h3lh9ch0izcqq7fl",
	} {
		ca, err := ParseCA(in)
		if err != nil || ca.String() != want {
			t.Errorf("ParseCA(%q) = %v, %v; want %s", in, ca, err, want)
		}
	}
}

// TestWithNix runs the whole cycle against the real Nix: Nix writes a
// narinfo, silo reads it back byte for byte, silo re-signs it with its own
// key, and Nix then substitutes the path from that cache only when it
// trusts silo's key.
func TestWithNix(t *testing.T) {
	n := nixtest.Require(t)
	tmp := t.TempDir()
	dep := n.Build("narinfo-dep", `echo dep > $out`)
	path := n.Build("narinfo-test", `echo $dep0 $out > $out`, dep)
	p, err := storepath.DefaultDir.Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(tmp, "cache")
	n.Run("nix", "copy", "--to", "file://"+cache+"?compression=none", path)
	file := filepath.Join(cache, p.HashPart()+".narinfo")
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := ParseString(storepath.DefaultDir, string(text))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(text), ni.String()); diff != "" {
		t.Errorf("String() differs from Nix's file (-nix +silo):\n%s", diff)
	}
	if len(ni.References) != 2 || ni.Deriver.IsZero() {
		t.Errorf("want 2 references and a deriver:\n%s", text)
	}

	key, err := signature.GenerateKey("silo-narinfo-test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ni.Sigs = nil
	ni.Sign(key)
	for _, q := range []string{path, dep} { // the dep needs a signature too
		qp, _ := storepath.DefaultDir.Parse(q)
		f := filepath.Join(cache, qp.HashPart()+".narinfo")
		if q == dep {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			d, err := ParseString(storepath.DefaultDir, string(b))
			if err != nil {
				t.Fatal(err)
			}
			d.Sign(key)
			if err := os.WriteFile(f, []byte(d.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(f, []byte(ni.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	substitute := func(store, trusted string) error {
		_, err := n.Try("nix", "copy", "--from", "file://"+cache, "--to", filepath.Join(tmp, store),
			"--option", "trusted-public-keys", trusted, path)
		return err
	}
	wrong, err := signature.GenerateKey("silo-narinfo-test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := substitute("wrong", wrong.Public().String()); err == nil {
		t.Error("Nix substituted a path signed by an untrusted key")
	} else if !strings.Contains(err.Error(), "lacks a valid signature") {
		t.Errorf("Nix refused for an unexpected reason: %v", err)
	}
	if err := substitute("right", key.Public().String()); err != nil {
		t.Errorf("Nix refused silo's signature: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{baseFile, "silo-golden-xz.narinfo", "src-none.narinfo", "silo-golden-dep-none.narinfo"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add("StorePath: /nix/store/3dw2zzl83hca43rh3d1qkkm81iaky2ir-x\nURL: u\nNarHash: sha256:118b7f2gpycz5yx6rsy4wmysfipbs0x15cglna7xiibwv1b2gj1j\nNarSize: 1\nCA: \n")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseString(storepath.DefaultDir, s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		out := n.String()
		again, err := ParseString(storepath.DefaultDir, out)
		if err != nil {
			t.Fatalf("cannot reparse String():\n%s\n%v", out, err)
		}
		if again.String() != out {
			t.Fatalf("parse→String→parse not stable:\n%s\n---\n%s", out, again.String())
		}
		if again.Fingerprint() != n.Fingerprint() {
			t.Fatalf("fingerprint changed: %s vs %s", n.Fingerprint(), again.Fingerprint())
		}
	})
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
