package derivation

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/storepath"
	"github.com/silo-cache/silo/internal/worker"
)

func TestWireRoundTrip(t *testing.T) {
	for _, set := range goldenSets(t) {
		for _, g := range set.drvs {
			var buf bytes.Buffer
			enc := worker.NewEncoder(&buf)
			if err := WriteBasic(enc, g.drv); err != nil {
				t.Fatal(err)
			}
			if err := enc.Flush(); err != nil {
				t.Fatal(err)
			}
			got, err := ReadBasic(worker.NewDecoder(&buf), g.path, allFeatures)
			if err != nil {
				t.Fatalf("%s: %v", g.path, err)
			}
			want := g.drv.Clone()
			want.InputDrvs = map[storepath.Path][]string{} // not part of the wire form
			a, _ := want.Print()
			b, err := got.Print()
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("%s: wire round trip changed the derivation (%v):\n%s\n%s", g.path, err, a, b)
			}
		}
	}
	// Truncated input is an error at every cut.
	g := goldenDrvs(t, storepath.DefaultDir, "testdata/drv", "testdata/show.json")[0]
	var buf bytes.Buffer
	enc := worker.NewEncoder(&buf)
	WriteBasic(enc, g.drv)
	enc.Flush()
	full := buf.Bytes()
	for cut := 0; cut < len(full); cut += 8 {
		if _, err := ReadBasic(worker.NewDecoder(bytes.NewReader(full[:cut])), g.path, allFeatures); err == nil {
			t.Fatalf("ReadBasic of %d of %d bytes succeeded", cut, len(full))
		}
	}
}

// TestWireWithNix sends a derivation in silo's BasicDerivation encoding to
// the real Nix (nix-store --serve, which reads it with the same
// readDerivation as the daemon's BuildDerivation op) and checks that Nix
// builds exactly that derivation.
func TestWireWithNix(t *testing.T) {
	n := nixtest.Require(t)
	nonce := nixtest.Nonce()
	d := &Derivation{
		Dir: storepath.DefaultDir, Name: "wire-" + nonce,
		Outputs:   map[string]Output{"out": {Kind: Deferred}, "dev": {Kind: Deferred}},
		InputDrvs: map[storepath.Path][]string{},
		Platform:  "x86_64-linux", Builder: "/bin/sh",
		Args: []string{"-c", `echo "$msg" > $out; echo dev > $dev`},
		Env:  map[string]string{"msg": "a \"quoted\"\n\ttabbed message " + nonce, "builder": "/bin/sh", "name": "wire-" + nonce, "system": "x86_64-linux"},
	}
	if _, err := NewHasher(nil).FillInputAddressed(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	drvPath, _, err := d.StorePath()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := n.Command(ctx, "nix-store", "--serve", "--write")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	enc, dec := worker.NewEncoder(stdin), worker.NewDecoder(stdout)
	enc.Uint64(0x390c9deb) // SERVE_MAGIC_1
	enc.Flush()
	if magic, err := dec.Uint64(); err != nil || magic != 0x5452eecb {
		t.Fatalf("serve greeting: %x, %v: %s", magic, err, stderr.String())
	}
	dec.Uint64()      // server version
	enc.Uint64(0x205) // client version 2.5
	enc.Uint64(8)     // cmdBuildDerivation
	enc.String(drvPath.String())
	if err := WriteBasic(enc, d); err != nil {
		t.Fatal(err)
	}
	for range 5 { // maxSilentTime, buildTimeout, maxLogSize, buildRepeat, enforceDeterminism
		enc.Uint64(0)
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	status, err := dec.Uint64()
	if err != nil {
		t.Fatalf("read build result: %v: %s", err, stderr.String())
	}
	msg, _ := dec.String()
	stdin.Close()
	if status != 0 { // BuildResult::Built
		t.Fatalf("nix-store --serve: status %d: %s\n%s", status, msg, stderr.String())
	}
	out, _, _ := d.OutputPath("out")
	got, err := os.ReadFile(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != d.Env["msg"]+"\n" {
		t.Errorf("built %s = %q", out, got)
	}
	dev, _, _ := d.OutputPath("dev")
	if _, err := os.Stat(dev.String()); err != nil {
		t.Error(err)
	}
}
