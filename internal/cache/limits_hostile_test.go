package cache

// Limits on what an upload may cost the server, from the security review.

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/blob/disk"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/sqlite"
)

// manyFilesNAR is a NAR of a directory of n empty files with long names:
// it compresses very well, and its listing (stored uncompressed) is large.
func manyFilesNAR(n int) []byte {
	var b narBuilder
	b.str("nix-archive-1", "(", "type", "directory")
	for i := range n {
		b.str("entry", "(", "name", fmt.Sprintf("%s%08d", strings.Repeat("n", 200), i), "node", "(", "type", "regular", "contents", "", ")", ")")
	}
	b.str(")")
	return b.Bytes()
}

// A full blob store is a 507 whichever blob (NAR or listing) hits it, never
// a 400 blaming the client.
func TestHostileFullStoreIs507(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	blobDir := filepath.Join(dir, "blobs")
	os.Mkdir(blobDir, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", blobDir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", blobDir).Run() })
	m, err := sqlite.Open(context.Background(), filepath.Join(dir, "silo.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b, err := disk.Open(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, meta: m, blobs: b}
	e.srv, err = New(Options{Meta: m, Blobs: b, Logger: slog.New(slog.NewTextHandler(testLogOut(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	e.ts = httptestServer(t, e.srv)
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	noise := make([]byte, 3<<20) // incompressible: more than the store holds
	rand.Read(noise)
	u := newUpload(t, "wide", dirNAR("noise", string(noise)), compress.Zstd)
	t.Logf("NAR %d KiB, sent %d KiB", len(u.nar)>>10, len(u.file)>>10)
	if st, body := e.do("PUT", "/main/"+u.url, tok, u.file); st != 507 {
		t.Errorf("upload into a full store = %d %q, want 507", st, body)
	}
}

func httptestServer(t *testing.T, h http.Handler) *httptest.Server {
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

// --max-nar-size must bound what an upload expands to, not only the bytes
// sent: a zstd body of a few KiB expanding to 64 MiB, sent to a server
// allowing 1 MiB, must be refused with 413 and leave nothing stored, so a
// bomb costs no more CPU and no bigger listing blob than an honest upload.
func TestHostileBombOverMaxNARSize(t *testing.T) {
	e := newEnv(t, Options{MaxNARSize: 1 << 20})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	file, narSize := bombNAR(t, compress.Zstd, 64<<20)
	if st, body := e.do("PUT", "/main/nar/bomb.nar.zst", tok, file); st != 413 {
		t.Errorf("a %d-byte body expanding to a %d-byte NAR, limit 1 MiB: %d %q, want 413", len(file), narSize, st, body)
	}
	wide := newUpload(t, "wide", manyFilesNAR(20000), compress.Zstd)
	if st, body := e.do("PUT", "/main/"+wide.url, tok, wide.file); st != 413 {
		t.Errorf("a %d-byte body expanding to a %d-byte NAR, limit 1 MiB: %d %q, want 413", len(wide.file), len(wide.nar), st, body)
	}
	if keys := e.blobKeys(); len(keys) != 0 {
		t.Errorf("stored %v", keys)
	}
}

// An xz body with garbage behind the xz stream must be refused, as it is
// for zstd and gzip ("the compressed stream must end where the NAR ends").
// ulikunitz/xz fails on the garbage in the same Read that returns the NAR's
// last bytes, so this also proves nar.Reader keeps an error that arrives
// with data.
func TestHostileXZTrailingGarbage(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	file := append(compressed(t, compress.XZ, dirNAR("a", "x")), []byte("garbage!")...)
	if st, body := e.do("PUT", "/main/nar/trailing.nar.xz", tok, file); st != 400 {
		t.Errorf("xz body with trailing garbage = %d %q, want 400", st, body)
	}
}
