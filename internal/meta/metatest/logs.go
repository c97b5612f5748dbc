package metatest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/silo-cache/silo/internal/meta"
)

func testLogs(t *testing.T, s meta.Store) {
	c := mustCache(t, s, "c")
	l := meta.Log{CacheID: c.ID, Drv: partOf(1) + "-x.drv", BlobKey: "log/a", Size: 10}
	if err := s.PutLog(ctx, l, meta.LogLimits{}); err != nil {
		t.Fatal(err)
	}
	l.BlobKey, l.Size = "log/b", 20
	if err := s.ReplaceLog(ctx, l); err != nil {
		t.Fatal(err)
	}
	got, err := s.Log(ctx, c.ID, l.Drv)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(l, got, cmpopts.IgnoreFields(meta.Log{}, "Created")); diff != "" {
		t.Errorf("Log after replacing (-want +got):\n%s", diff)
	}
	if used, _ := s.BlobInUse(ctx, "log/b"); !used {
		t.Errorf("BlobInUse(log/b) = false")
	}
	if err := s.PutLog(ctx, meta.Log{CacheID: 4242, Drv: "y.drv", BlobKey: "log/c"}, meta.LogLimits{}); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("PutLog into a missing cache: err = %v, want ErrNotFound", err)
	}
	if err := s.ReplaceLog(ctx, meta.Log{CacheID: 4242, Drv: "y.drv", BlobKey: "log/c"}); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("ReplaceLog into a missing cache: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Log(ctx, c.ID, "nope.drv"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("Log of a missing drv: err = %v, want ErrNotFound", err)
	}
}

// A derivation's log is never replaced by PutLog, however many race.
func testLogFirstWriterWins(t *testing.T, s meta.Store) {
	c := mustCache(t, s, "c")
	drv := partOf(1) + "-x.drv"
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.PutLog(ctx, meta.Log{CacheID: c.ID, Drv: drv, BlobKey: fmt.Sprintf("log/%d", i), Size: 1}, meta.LogLimits{Count: 100})
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("writers %d and %d both stored the log", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, meta.ErrExists):
			t.Fatalf("writer %d: err = %v, want nil or ErrExists", i, err)
		}
	}
	if got, err := s.Log(ctx, c.ID, drv); err != nil || got.BlobKey != fmt.Sprintf("log/%d", winner) {
		t.Errorf("log = %+v, %v; want writer %d's", got, err, winner)
	}
}

// PutLog holds a cache's logs to the limits it is given, by count and by
// bytes, atomically (racing writers never pass them), per cache; a
// replaced log's size no longer counts, and a deleted cache's logs count
// for nothing.
func testLogLimits(t *testing.T, s meta.Store) {
	a, b := mustCache(t, s, "a"), mustCache(t, s, "b")
	lim := meta.LogLimits{Count: 5, Bytes: 1000}
	put := func(c meta.Cache, i int, size int64) error {
		return s.PutLog(ctx, meta.Log{CacheID: c.ID, Drv: fmt.Sprintf("%s-%d.drv", partOf(i), i), BlobKey: fmt.Sprint("log/", i), Size: size}, lim)
	}
	// Racing writers: exactly Count succeed.
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = put(a, i, 10) }()
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, meta.ErrLimit):
			t.Fatalf("writer %d: err = %v, want nil or ErrLimit", i, err)
		}
	}
	if ok != 5 {
		t.Fatalf("%d of 12 racing PutLogs succeeded under a limit of 5 logs", ok)
	}
	// Another cache has its own.
	if err := put(b, 100, 990); err != nil {
		t.Fatalf("another cache's first log: %v", err)
	}
	if err := put(b, 101, 11); !errors.Is(err, meta.ErrLimit) {
		t.Errorf("a log passing the byte limit: err = %v, want ErrLimit", err)
	}
	if err := put(b, 102, 10); err != nil {
		t.Errorf("a log reaching the byte limit exactly: %v", err)
	}
	// Replacing the big log with a small one frees its bytes.
	if err := s.ReplaceLog(ctx, meta.Log{CacheID: b.ID, Drv: fmt.Sprintf("%s-%d.drv", partOf(100), 100), BlobKey: "log/small", Size: 1}); err != nil {
		t.Fatal(err)
	}
	if err := put(b, 103, 500); err != nil {
		t.Errorf("after replacing a big log with a small one: %v", err)
	}
	// A deleted and recreated cache starts from nothing.
	if err := s.DeleteCache(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	a2 := mustCache(t, s, "a")
	if err := put(a2, 200, 10); err != nil {
		t.Errorf("first log of a recreated cache: %v", err)
	}
}
