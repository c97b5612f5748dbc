package derivation

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/storepath"
)

// largeDrv is a derivation the size of a big nixpkgs one (a NixOS system
// or a large Python environment): 300 input derivations, 200 sources, 500
// environment variables with escapes, a 64 KiB script.
func largeDrv(b *testing.B) (*Derivation, []byte, *Hasher) {
	d := &Derivation{Dir: storepath.DefaultDir, Name: "large", Outputs: map[string]Output{},
		InputDrvs: map[storepath.Path][]string{}, Env: map[string]string{},
		Platform: "x86_64-linux", Builder: "/nix/store/00000000000000000000000000000000-bash/bin/bash"}
	h := NewHasher(nil)
	mk := func(i int, name string) storepath.Path {
		hp := nix32.Encode(hash.Sum(hash.SHA256, fmt.Appendf(nil, "%d", i)).Bytes()[:20])
		p, err := storepath.DefaultDir.ParseBase(hp + "-" + name)
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	for i := range 300 {
		p := mk(i, fmt.Sprintf("dep-%d.drv", i))
		d.InputDrvs[p] = []string{"dev", "out"}
		h.Remember(p, DrvHash{Kind: Regular, Hashes: map[string]hash.Hash{
			"out": hash.Sum(hash.SHA256, []byte(p.String())), "dev": hash.Sum(hash.SHA256, []byte(p.String()+"dev"))}})
	}
	for i := range 200 {
		d.InputSrcs = append(d.InputSrcs, mk(1000+i, fmt.Sprintf("src-%d", i)))
	}
	for i := range 500 {
		d.Env[fmt.Sprintf("var%d", i)] = strings.Repeat(fmt.Sprintf("value \"%d\"\n\t", i), 10)
	}
	d.Env["buildCommand"] = strings.Repeat("echo \"$out\" \\\n", 64<<10/14)
	d.Outputs["out"] = Output{Kind: Deferred}
	d.Outputs["dev"] = Output{Kind: Deferred}
	if _, err := h.FillInputAddressed(context.Background(), d); err != nil {
		b.Fatal(err)
	}
	text, err := d.Print()
	if err != nil {
		b.Fatal(err)
	}
	return d, text, h
}

func BenchmarkParse(b *testing.B) {
	_, text, _ := largeDrv(b)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := Parse(storepath.DefaultDir, "large", text, Features{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPrint(b *testing.B) {
	d, text, _ := largeDrv(b)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := d.Print(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHashModulo is hashDerivationModulo of the large derivation with
// its inputs' hashes remembered (the common case in a daemon).
func BenchmarkHashModulo(b *testing.B) {
	d, text, h := largeDrv(b)
	b.SetBytes(int64(len(text)))
	ctx := context.Background()
	for b.Loop() {
		if _, err := h.HashModulo(ctx, d, true); err != nil {
			b.Fatal(err)
		}
	}
}
