package publish

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/nixtest"
)

// TestStreamMatchesNix checks narStream against nix-store --dump and
// nar.Dump, hashing and not, whole and in windows, and that its stat
// digest is the same whichever way the tree is read.
func TestStreamMatchesNix(t *testing.T) {
	n := nixtest.Require(t)
	ctx := context.Background()
	paths := []string{
		n.Build("stream-tree", listingScript+"head -c 70000 /dev/urandom > $out/sub/deeper/sendfiled\n"),
		n.Build("stream-file", `printf '1234567' > $out`),
		n.Build("stream-link", `PATH=/usr/bin:/bin; ln -s /some/where $out`),
	}
	for _, p := range paths {
		want := []byte(n.Run("nix-store", "--dump", p))
		var viaDump bytes.Buffer
		if err := nar.Dump(ctx, &viaDump, p); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(viaDump.Bytes(), want) {
			t.Fatalf("%s: nar.Dump differs from nix-store --dump; fix nar first", p)
		}
		size := uint64(len(want))
		full := func(verify bool) (*narStream, []byte) {
			var out bytes.Buffer
			ns, err := streamNAR(ctx, &out, p, window{0, size}, verify)
			if err != nil {
				t.Fatalf("%s: stream (verify %v): %v", p, verify, err)
			}
			if err := ns.out.release(); err != nil {
				t.Fatal(err)
			}
			return ns, out.Bytes()
		}
		hashed, got := full(true)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: hashing stream differs from nix-store --dump", p)
		}
		if h := hashed.hash.Sum(); h != hash.Sum(hash.SHA256, want) {
			t.Errorf("%s: stream hash %s, want the NAR's", p, h)
		}
		fast, got := full(false)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: sendfile stream differs from nix-store --dump", p)
		}
		if hashed.sum() != fast.sum() {
			t.Errorf("%s: stat digest differs between hashing and reading only the window", p)
		}
		if fast.out.off != size {
			t.Errorf("%s: stream counted %d bytes, want %d", p, fast.out.off, size)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range 200 {
			from := rng.Uint64N(size)
			to := from + 1 + rng.Uint64N(size-from)
			if i == 0 {
				from, to = size-1, size
			}
			var out bytes.Buffer
			ns, err := streamNAR(ctx, &out, p, window{from, to}, i%2 == 0)
			if err == nil {
				err = ns.out.release()
			}
			if err != nil {
				t.Fatalf("%s: window [%d, %d): %v", p, from, to, err)
			}
			if !bytes.Equal(out.Bytes(), want[from:to]) {
				t.Fatalf("%s: window [%d, %d) differs from nix-store --dump", p, from, to)
			}
			ns.done()
		}
	}
}

// TestStreamMemory checks that sending a NAR allocates far less than the
// NAR's size, hashing or not, plain or zstd-encoded.
func TestStreamMemory(t *testing.T) {
	n := nixtest.Require(t)
	srv, p, _ := chrootStore(t, n, 16, 4<<20) // a 64 MiB NAR
	hs := httptest.NewServer(srv)
	defer hs.Close()
	_, body := get(t, "GET", hs.URL+"/"+hashPart(p)+".narinfo")
	var u string
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "URL: "); ok {
			u = hs.URL + "/" + v
		}
	}
	for _, tt := range []struct {
		name    string
		headers []string
	}{
		{"first, hashed", nil},
		{"verified, sendfile", nil},
		{"zstd", []string{"Accept-Encoding: zstd"}},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if !completes(t, u, tt.headers...) {
			t.Fatalf("%s: NAR response did not complete", tt.name)
		}
		runtime.ReadMemStats(&after)
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: %d KiB allocated", tt.name, alloc>>10)
		if alloc > 16<<20 {
			t.Errorf("%s: sending a 64 MiB NAR allocated %d MiB", tt.name, alloc>>20)
		}
	}
}
