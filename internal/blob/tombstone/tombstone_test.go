package tombstone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/blob/disk"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/postgres"
	"github.com/silo-cache/silo/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

var ctx = context.Background()

func setup(t *testing.T) (*Store, *postgres.Store) {
	t.Helper()
	pg, err := postgres.Open(ctx, pgtest.New(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	d, err := disk.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return New(d, pg), pg
}

func put(t *testing.T, s blob.Store, key, data string) {
	t.Helper()
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, data)
	if err := w.Commit(ctx, key); err != nil {
		t.Fatal(err)
	}
}

func exists(s blob.Store, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

func TestDeleteWaitsForReap(t *testing.T) {
	s, pg := setup(t)
	put(t, s, "nar/a", "a")
	put(t, s, "nar/b", "b")
	c, _ := pg.CreateCache(ctx, meta.Cache{Name: "c", SecretKey: "k", StoreDir: "/nix/store"})
	// nar/b is in use by a NAR record.
	n := meta.NAR{NarHash: "sha256:b", BlobKey: "nar/b", ListingKey: "ls/b", Compression: "none"}
	if _, _, err := pg.AddUpload(ctx, meta.Upload{CacheID: c.ID, URL: "u", NarHash: n.NarHash}, n); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"nar/a", "nar/b"} {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if !exists(s, "nar/a") {
		t.Fatal("Delete removed the blob at once")
	}
	if n, err := s.Reap(ctx, time.Hour); err != nil || n != 0 || !exists(s, "nar/a") {
		t.Fatalf("Reap within the grace period = %d, %v", n, err)
	}
	if n, err := s.Reap(ctx, 0); err != nil || n != 1 {
		t.Fatalf("Reap = %d, %v; want 1", n, err)
	}
	if exists(s, "nar/a") || !exists(s, "nar/b") {
		t.Errorf("after Reap: nar/a exists %v (want false), nar/b (in use) exists %v (want true)", exists(s, "nar/a"), exists(s, "nar/b"))
	}
	// Storing a buried key again revives it.
	s.Delete(ctx, "nar/c")
	put(t, s, "nar/c", "c")
	if n, _ := s.Reap(ctx, 0); n != 0 || !exists(s, "nar/c") {
		t.Errorf("Reap deleted a blob stored again after its burial")
	}
	if err := s.Delete(ctx, "../x"); !errors.Is(err, blob.ErrInvalidKey) {
		t.Errorf("Delete of an invalid key: %v", err)
	}
}

// Writers storing keys while a reaper deletes the same keys: every key
// whose Commit returned (and is buried no more) exists afterwards.
func TestReapRacesCommit(t *testing.T) {
	s, _ := setup(t)
	const n = 100
	for i := range n {
		s.Delete(ctx, fmt.Sprintf("nar/k%d", i))
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range n {
			put(t, s, fmt.Sprintf("nar/k%d", i), "x")
		}
	}()
	reaped := 0
	go func() {
		defer wg.Done()
		for range 20 {
			k, err := s.Reap(ctx, 0)
			if err != nil {
				t.Error(err)
			}
			reaped += k
		}
	}()
	wg.Wait()
	for i := range n {
		if !exists(s, fmt.Sprintf("nar/k%d", i)) {
			t.Errorf("nar/k%d was committed but is gone", i)
		}
	}
	t.Logf("%d deletions happened before the commits", reaped)
}
