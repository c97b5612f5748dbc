package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/metatest"
	"github.com/silo-cache/silo/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

func open(t *testing.T, url string) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	metatest.Run(t, func(t *testing.T) meta.Store {
		s, err := Open(context.Background(), pgtest.New(t), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

var ctx = context.Background()

// Two stores on one database stand for two replicas.
func TestVersionAcrossReplicas(t *testing.T) {
	url := pgtest.New(t)
	a, b := open(t, url), open(t, url)
	vb, err := b.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateCache(ctx, meta.Cache{Name: "c", SecretKey: "k", StoreDir: "/nix/store"}); err != nil {
		t.Fatal(err)
	}
	if v, _ := b.Version(ctx); v == vb {
		t.Fatalf("a write through one store left the other's Version at %d", v)
	}
	vb, _ = b.Version(ctx)
	if v, _ := b.Version(ctx); v != vb {
		t.Errorf("Version changed from %d to %d without a write", vb, v)
	}
	// A transaction still open is not a change yet; its commit is.
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM caches WHERE name = 'c'`); err != nil {
		t.Fatal(err)
	}
	v1, _ := b.Version(ctx)
	if _, err := b.Cache(ctx, "c"); err != nil {
		t.Fatalf("uncommitted delete visible: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := b.Version(ctx); v == v1 {
		t.Errorf("Version unchanged (%d) after a commit", v)
	}
}

func TestMigrations(t *testing.T) {
	url := pgtest.New(t)
	if _, err := Open(ctx, url, Options{NoMigrate: true}); err == nil {
		t.Fatal("Open with NoMigrate on an empty database succeeded")
	}
	s := open(t, url)
	if v, err := s.SchemaVersion(ctx); err != nil || v != LatestSchema() {
		t.Fatalf("SchemaVersion after Open = %d, %v; want %d", v, err, LatestSchema())
	}
	from, to, err := s.Migrate(ctx)
	if err != nil || from != to || to != LatestSchema() {
		t.Errorf("second Migrate = %d, %d, %v; want nothing to do", from, to, err)
	}
	if _, err := Open(ctx, url, Options{NoMigrate: true}); err != nil {
		t.Errorf("Open with NoMigrate on a current database: %v", err)
	}
	// A database migrated by a newer silo is refused, not written to.
	if _, err := s.pool.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, LatestSchema()+1); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, url, Options{}); err == nil || !strings.Contains(err.Error(), "upgrade silo") {
		t.Errorf("Open of a newer schema: err = %v, want one saying to upgrade silo", err)
	}
}

// Replicas starting at once migrate once.
func TestConcurrentMigrations(t *testing.T) {
	url := pgtest.New(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(ctx, url, Options{})
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Open: %v", err)
		}
	}
}

func TestLease(t *testing.T) {
	s := open(t, pgtest.New(t))
	if ok, err := s.AcquireLease(ctx, "gc", "a", time.Minute); err != nil || !ok {
		t.Fatalf("first AcquireLease = %v, %v", ok, err)
	}
	if ok, _ := s.AcquireLease(ctx, "gc", "b", time.Minute); ok {
		t.Errorf("a second holder got a lease that is held")
	}
	if ok, _ := s.AcquireLease(ctx, "gc", "a", time.Minute); !ok {
		t.Errorf("the holder could not renew its lease")
	}
	if ok, _ := s.AcquireLease(ctx, "other", "b", time.Minute); !ok {
		t.Errorf("another lease name is not independent")
	}
	if h, _ := s.LeaseHolder(ctx, "gc"); h != "a" {
		t.Errorf("LeaseHolder = %q, want a", h)
	}
	// An expired lease goes to the next asker.
	if ok, _ := s.AcquireLease(ctx, "gc", "a", time.Millisecond); !ok {
		t.Fatal("renew with a short ttl failed")
	}
	time.Sleep(20 * time.Millisecond)
	if ok, _ := s.AcquireLease(ctx, "gc", "b", time.Minute); !ok {
		t.Errorf("an expired lease was not taken over")
	}
	if err := s.ReleaseLease(ctx, "gc", "a"); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.LeaseHolder(ctx, "gc"); h != "b" {
		t.Errorf("a former holder's release dropped the new holder's lease: holder %q", h)
	}
	s.ReleaseLease(ctx, "gc", "b")
	if ok, _ := s.AcquireLease(ctx, "gc", "a", time.Minute); !ok {
		t.Errorf("a released lease could not be taken")
	}
}

func mustCache(t *testing.T, s *Store, name string) meta.Cache {
	t.Helper()
	c, err := s.CreateCache(ctx, meta.Cache{Name: name, SecretKey: "k", StoreDir: "/nix/store"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func nar(i int) meta.NAR {
	return meta.NAR{NarHash: fmt.Sprintf("sha256:%052d", i), NarSize: 1, BlobKey: fmt.Sprintf("nar/%d", i),
		Compression: "none", FileHash: "x", FileSize: 1, ListingKey: fmt.Sprintf("ls/%d", i)}
}

func upload(c meta.Cache, n meta.NAR) meta.Upload {
	return meta.Upload{CacheID: c.ID, URL: "up/" + n.BlobKey, NarHash: n.NarHash, NarSize: n.NarSize}
}

// reap runs Reap with grace 0 and returns what it deleted.
func reap(t *testing.T, s *Store) []string {
	t.Helper()
	var got []string
	if _, err := s.Reap(ctx, 0, func(_ context.Context, k string) error { got = append(got, k); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	return got
}

func TestReap(t *testing.T) {
	s := open(t, pgtest.New(t))
	c := mustCache(t, s, "c")
	n1, n2 := nar(1), nar(2)
	for _, n := range []meta.NAR{n1, n2} {
		if _, _, err := s.AddUpload(ctx, upload(c, n), n); err != nil {
			t.Fatal(err)
		}
	}
	// A grace period not passed yet keeps everything.
	if err := s.Bury(ctx, []string{"nar/1", "ls/1", "log/x"}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Reap(ctx, time.Hour, func(context.Context, string) error { t.Error("deleted within the grace period"); return nil }); err != nil || n != 0 {
		t.Fatalf("Reap within grace = %d, %v", n, err)
	}
	// nar/1 and ls/1 are in use (n1 exists): only log/x goes, and the
	// tombstones of blobs in use are dropped.
	if got := reap(t, s); !cmp.Equal(got, []string{"log/x"}) {
		t.Errorf("Reap deleted %v, want [log/x]", got)
	}
	if n, _ := s.Buried(ctx); n != 0 {
		t.Errorf("%d tombstones left, want 0", n)
	}
	// A revived key is not deleted.
	s.Bury(ctx, []string{"nar/9"})
	if err := s.Revive(ctx, "nar/9"); err != nil {
		t.Fatal(err)
	}
	if got := reap(t, s); len(got) != 0 {
		t.Errorf("Reap deleted revived blobs %v", got)
	}
	// A failing delete keeps the tombstone for the next round.
	s.Bury(ctx, []string{"nar/8"})
	if _, err := s.Reap(ctx, 0, func(context.Context, string) error { return errors.New("S3 down") }); err == nil {
		t.Errorf("Reap hid a failed delete")
	}
	if got := reap(t, s); !cmp.Equal(got, []string{"nar/8"}) {
		t.Errorf("after a failed delete, Reap deleted %v, want [nar/8]", got)
	}
}

// A writer that looked a NAR up before a collection removed it, and
// records an upload of it after its files were deleted, must not bring
// back a NAR without bytes.
func TestAddUploadAfterReap(t *testing.T) {
	s := open(t, pgtest.New(t))
	c := mustCache(t, s, "c")
	n := nar(1)
	if _, _, err := s.AddUpload(ctx, upload(c, n), n); err != nil {
		t.Fatal(err)
	}
	stale, err := s.NAR(ctx, n.NarHash) // what the writer read
	if err != nil {
		t.Fatal(err)
	}
	keys, err := s.Collect(ctx, time.Now().Add(time.Hour))
	if err != nil || len(keys) != 2 {
		t.Fatalf("Collect = %v, %v", keys, err)
	}
	s.Bury(ctx, keys)
	// Before the reap the files still exist: the upload revives them.
	if _, inserted, err := s.AddUpload(ctx, upload(c, stale), stale); err != nil || !inserted {
		t.Fatalf("AddUpload before the reap = %v, %v", inserted, err)
	}
	if got := reap(t, s); len(got) != 0 {
		t.Fatalf("Reap deleted the files of a NAR uploaded again: %v", got)
	}
	keys, _ = s.Collect(ctx, time.Now().Add(time.Hour))
	s.Bury(ctx, keys)
	if got := reap(t, s); len(got) != 2 {
		t.Fatalf("Reap deleted %v, want the NAR's two files", got)
	}
	_, _, err = s.AddUpload(ctx, upload(c, stale), stale)
	if !errors.Is(err, ErrBlobGone) {
		t.Fatalf("AddUpload of a NAR whose files were reaped: err = %v, want ErrBlobGone", err)
	}
	if _, err := s.NAR(ctx, n.NarHash); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("the refused upload left a NAR record: %v", err)
	}
	// A writer that stores the bytes again (Revive, as blob Commit does) may.
	s.Revive(ctx, n.BlobKey)
	s.Revive(ctx, n.ListingKey)
	if _, inserted, err := s.AddUpload(ctx, upload(c, n), n); err != nil || !inserted {
		t.Errorf("AddUpload after storing the files again = %v, %v", inserted, err)
	}
}

// Collections racing with commits on other replicas never leave a path
// whose NAR is gone: either the path commits and the NAR stays, or the
// commit fails with ErrNotFound.
func TestCollectRacesPutPath(t *testing.T) {
	url := pgtest.New(t)
	a, b := open(t, url), open(t, url)
	c := mustCache(t, a, "c")
	const n = 200
	for i := range n {
		nr := nar(i)
		u := upload(c, nr)
		u.Created = time.Now().Add(-time.Hour)
		if _, _, err := a.AddUpload(ctx, u, nr); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	committed := map[int]bool{}
	go func() {
		defer wg.Done()
		for i := range n {
			p := meta.Path{CacheID: c.ID, HashPart: fmt.Sprintf("%032d", i), StorePath: "x", NarHash: nar(i).NarHash, NarInfo: "x"}
			err := a.PutPath(ctx, p)
			if err == nil {
				committed[i] = true
			} else if !errors.Is(err, meta.ErrNotFound) {
				t.Errorf("PutPath: %v", err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 20 {
			if _, err := b.Collect(ctx, time.Now()); err != nil {
				t.Errorf("Collect: %v", err)
			}
		}
	}()
	wg.Wait()
	for i := range n {
		_, err := a.NAR(ctx, nar(i).NarHash)
		if committed[i] && err != nil {
			t.Errorf("path %d committed but its NAR is gone: %v", i, err)
		}
	}
	t.Logf("%d of %d paths committed before their uploads were collected", len(committed), n)
}
