package datamove

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/blob/disk"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/postgres"
	"github.com/silo-cache/silo/internal/meta/sqlite"
	"github.com/silo-cache/silo/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

var ctx = context.Background()

type install struct {
	src      *sqlite.Store
	srcBlobs *disk.Store
	dst      *postgres.Store
	dstBlobs *disk.Store
	cache    meta.Cache
}

func newInstall(t *testing.T) *install {
	dir := t.TempDir()
	src, err := sqlite.Open(ctx, filepath.Join(dir, "silo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	srcBlobs, _ := disk.Open(filepath.Join(dir, "blobs"))
	dst, err := postgres.Open(ctx, pgtest.New(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	dstBlobs, _ := disk.Open(t.TempDir())
	c, err := src.CreateCache(ctx, meta.Cache{Name: "main", SecretKey: "main-1:c2VjcmV0", StoreDir: "/nix/store", Priority: 40})
	if err != nil {
		t.Fatal(err)
	}
	return &install{src: src, srcBlobs: srcBlobs, dst: dst, dstBlobs: dstBlobs, cache: c}
}

func put(t *testing.T, s blob.Store, key, data string) {
	w, _ := s.Create(ctx)
	io.WriteString(w, data)
	if err := w.Commit(ctx, key); err != nil {
		t.Fatal(err)
	}
}

// addPath stores a NAR file, its listing and a path using it in the source.
func (in *install) addPath(t *testing.T, i int, data string) meta.NAR {
	h := hash.Sum(hash.SHA256, []byte(data))
	n := meta.NAR{NarHash: fmt.Sprintf("sha256:%052d", i), NarSize: 1, BlobKey: "nar/" + h.Nix32() + ".nar", Compression: "none",
		FileHash: h.String(), FileSize: int64(len(data)), ListingKey: fmt.Sprintf("ls/%d.ls", i)}
	put(t, in.srcBlobs, n.BlobKey, data)
	put(t, in.srcBlobs, n.ListingKey, "{}")
	if _, _, err := in.src.AddUpload(ctx, meta.Upload{CacheID: in.cache.ID, URL: "u" + fmt.Sprint(i), NarHash: n.NarHash}, n); err != nil {
		t.Fatal(err)
	}
	p := meta.Path{CacheID: in.cache.ID, HashPart: fmt.Sprintf("%032d", i), StorePath: fmt.Sprintf("/nix/store/%032d-p", i), NarHash: n.NarHash, NarInfo: "x"}
	if err := in.src.PutPath(ctx, p); err != nil {
		t.Fatal(err)
	}
	return n
}

func (in *install) move(t *testing.T) (Stats, error) {
	return Move(ctx, in.src, in.srcBlobs, in.dst, in.dstBlobs, Options{Jobs: 3})
}

func TestMoveAndAgain(t *testing.T) {
	in := newInstall(t)
	for i := range 20 {
		in.addPath(t, i, fmt.Sprintf("contents %d", i))
	}
	if err := in.src.PutLog(ctx, meta.Log{CacheID: in.cache.ID, Drv: "x.drv", BlobKey: "log/x", Size: 3}, meta.LogLimits{}); err != nil {
		t.Fatal(err)
	}
	put(t, in.srcBlobs, "log/x", "log")
	st, err := in.move(t)
	if err != nil {
		t.Fatal(err)
	}
	if st.Caches != 1 || st.NARs != 20 || st.Paths != 20 || st.Logs != 1 || st.Blobs != 41 {
		t.Errorf("first move: %+v", st)
	}
	c, err := in.dst.Cache(ctx, "main")
	if err != nil || c.SecretKey != in.cache.SecretKey {
		t.Fatalf("moved cache = %+v, %v", c, err)
	}
	p, err := in.dst.Path(ctx, c.ID, fmt.Sprintf("%032d", 7))
	if err != nil || p.NarInfo != "x" {
		t.Errorf("moved path = %+v, %v", p, err)
	}
	st, err = in.move(t)
	if err != nil {
		t.Fatal(err)
	}
	if st.NARs != 0 || st.Paths != 0 || st.Blobs != 0 || st.PresentNARs != 20 || st.PresentPaths != 20 || st.CachesKept != 1 {
		t.Errorf("second move did work again: %+v", st)
	}
}

// A source file that does not match its record stores nothing at the
// destination: no blob, no NAR, no path.
func TestMoveRefusesCorruptSource(t *testing.T) {
	in := newInstall(t)
	n := in.addPath(t, 1, "the real contents")
	// Corrupt the stored file behind the metadata's back.
	in.srcBlobs.Delete(ctx, n.BlobKey)
	put(t, in.srcBlobs, n.BlobKey, "the fake contents")
	_, err := in.move(t)
	if err == nil || !strings.Contains(err.Error(), "corrupt source") {
		t.Fatalf("move of a corrupt file: %v", err)
	}
	if _, err := in.dstBlobs.Stat(ctx, n.BlobKey); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("the corrupt file was stored at the destination: %v", err)
	}
	if _, err := in.dst.NAR(ctx, n.NarHash); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("the NAR was recorded: %v", err)
	}
}

// A cache of the same name with another key at the destination is not merged.
func TestMoveRefusesForeignCache(t *testing.T) {
	in := newInstall(t)
	if _, err := in.dst.CreateCache(ctx, meta.Cache{Name: "main", SecretKey: "other-1:eA==", StoreDir: "/nix/store"}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.move(t); err == nil || !strings.Contains(err.Error(), "another signing key") {
		t.Errorf("move into a foreign cache: %v", err)
	}
}
