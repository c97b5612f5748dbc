// Package metatest is the conformance suite every meta.Store must pass:
// the contract written in package meta's documentation, checked.
package metatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/silo-cache/silo/internal/meta"
)

// Run runs the suite; open returns a new, empty store for each subtest.
func Run(t *testing.T, open func(t *testing.T) meta.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s meta.Store)
	}{
		{"Caches", testCaches},
		{"CacheIDsNotReused", testCacheIDsNotReused},
		{"Tokens", testTokens},
		{"UploadsShareNARs", testUploadsShareNARs},
		{"ConcurrentUploads", testConcurrentUploads},
		{"PathNeedsNAR", testPathNeedsNAR},
		{"PathFirstWriterWins", testPathFirstWriterWins},
		{"ServedNAR", testServedNAR},
		{"Missing", testMissing},
		{"DeleteCacheCascades", testDeleteCacheCascades},
		{"Collect", testCollect},
		{"Logs", testLogs},
		{"LogFirstWriterWins", testLogFirstWriterWins},
		{"LogLimits", testLogLimits},
		{"Usage", testUsage},
		{"Version", testVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tt.fn(t, s)
		})
	}
}

var ctx = context.Background()

// timeEq compares times by instant, as stores may change the location.
var timeEq = cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })

func mustCache(t *testing.T, s meta.Store, name string) meta.Cache {
	t.Helper()
	c, err := s.CreateCache(ctx, meta.Cache{Name: name, Public: true, Priority: 40, SecretKey: name + "-1:c2VjcmV0", StoreDir: "/nix/store"})
	if err != nil {
		t.Fatalf("CreateCache(%q): %v", name, err)
	}
	return c
}

// hashOf makes distinct, well-formed looking hashes for tests.
func hashOf(i int) string { return fmt.Sprintf("sha256:%052d", i) }
func partOf(i int) string { return fmt.Sprintf("%032d", i) }

func narOf(i int, key string) meta.NAR {
	return meta.NAR{NarHash: hashOf(i), NarSize: int64(100 + i), BlobKey: key, Compression: "zstd",
		FileHash: hashOf(1000 + i), FileSize: int64(50 + i), ListingKey: "ls/" + key}
}

func upload(t *testing.T, s meta.Store, cacheID int64, i int, key string) meta.NAR {
	t.Helper()
	n := narOf(i, key)
	u := meta.Upload{CacheID: cacheID, URL: "nar/" + key + ".nar.xz", FileHash: hashOf(2000 + i), FileSize: 60, NarHash: n.NarHash, NarSize: n.NarSize}
	stored, _, err := s.AddUpload(ctx, u, n)
	if err != nil {
		t.Fatalf("AddUpload: %v", err)
	}
	return stored
}

func putPath(t *testing.T, s meta.Store, cacheID int64, i, narI int) meta.Path {
	t.Helper()
	p := meta.Path{CacheID: cacheID, HashPart: partOf(i), StorePath: "/nix/store/" + partOf(i) + "-p", NarHash: hashOf(narI), NarInfo: fmt.Sprintf("StorePath: %d\n", i)}
	if err := s.PutPath(ctx, p); err != nil {
		t.Fatalf("PutPath: %v", err)
	}
	return p
}

func testCaches(t *testing.T, s meta.Store) {
	b := mustCache(t, s, "b")
	a := mustCache(t, s, "a")
	if a.ID == 0 || a.ID == b.ID || a.Created.IsZero() {
		t.Errorf("CreateCache assigned ID %d (other %d), Created %v", a.ID, b.ID, a.Created)
	}
	got, err := s.Cache(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, got, timeEq); diff != "" {
		t.Errorf("Cache(a) (-created +read):\n%s", diff)
	}
	all, err := s.Caches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]meta.Cache{a, b}, all, timeEq); diff != "" {
		t.Errorf("Caches (-want +got):\n%s", diff)
	}
	if _, err := s.CreateCache(ctx, meta.Cache{Name: "a", SecretKey: "x"}); !errors.Is(err, meta.ErrExists) {
		t.Errorf("CreateCache of a taken name: err = %v, want ErrExists", err)
	}
	if _, err := s.Cache(ctx, "nope"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("Cache of a missing name: err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteCache(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cache(ctx, "a"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("Cache after DeleteCache: err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteCache(ctx, "a"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("DeleteCache of a missing cache: err = %v, want ErrNotFound", err)
	}
}

func testCacheIDsNotReused(t *testing.T, s meta.Store) {
	first := mustCache(t, s, "x")
	upload(t, s, first.ID, 1, "k1")
	putPath(t, s, first.ID, 1, 1)
	if err := s.DeleteCache(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	second := mustCache(t, s, "x")
	if second.ID == first.ID {
		t.Fatalf("recreated cache got the deleted cache's ID %d", first.ID)
	}
	if _, err := s.Path(ctx, second.ID, partOf(1)); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("recreated cache sees the deleted cache's path: err = %v", err)
	}
}

func testTokens(t *testing.T, s meta.Store) {
	exp := time.Now().Add(time.Hour).Round(time.Millisecond)
	t1 := meta.Token{ID: "aaaa", Hash: bytes.Repeat([]byte{1}, 32), CachePattern: "*", Perms: meta.PermPull | meta.PermPush, Expires: exp, Created: time.Now().Add(-time.Minute), Note: "ci"}
	t2 := meta.Token{ID: "bbbb", Hash: bytes.Repeat([]byte{2}, 32), CachePattern: "team-*", Perms: meta.PermAdmin, Created: time.Now()}
	for _, tok := range []meta.Token{t2, t1} {
		if err := s.CreateToken(ctx, tok); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
	}
	got, err := s.Token(ctx, "aaaa")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(t1, got, timeEq); diff != "" {
		t.Errorf("Token (-want +got):\n%s", diff)
	}
	all, err := s.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]meta.Token{t1, t2}, all, timeEq); diff != "" {
		t.Errorf("Tokens, oldest first (-want +got):\n%s", diff)
	}
	if err := s.CreateToken(ctx, t1); !errors.Is(err, meta.ErrExists) {
		t.Errorf("CreateToken of a taken ID: err = %v, want ErrExists", err)
	}
	if err := s.DeleteToken(ctx, "aaaa"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Token(ctx, "aaaa"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("Token after DeleteToken: err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteToken(ctx, "aaaa"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("DeleteToken of a missing token: err = %v, want ErrNotFound", err)
	}
}

func testUploadsShareNARs(t *testing.T, s meta.Store) {
	a, b := mustCache(t, s, "a"), mustCache(t, s, "b")
	n1 := narOf(1, "nar/first")
	u1 := meta.Upload{CacheID: a.ID, URL: "nar/x.nar.xz", FileHash: hashOf(7), FileSize: 7, NarHash: n1.NarHash, NarSize: n1.NarSize}
	stored, inserted, err := s.AddUpload(ctx, u1, n1)
	if err != nil || !inserted || stored.BlobKey != "nar/first" {
		t.Fatalf("first AddUpload = %+v, %v, %v; want the NAR inserted", stored, inserted, err)
	}
	// The same NAR, compressed differently, uploaded to another cache.
	n2 := narOf(1, "nar/second")
	u2 := meta.Upload{CacheID: b.ID, URL: "nar/y.nar.zst", FileHash: hashOf(8), FileSize: 8, NarHash: n2.NarHash, NarSize: n2.NarSize}
	stored, inserted, err = s.AddUpload(ctx, u2, n2)
	if err != nil || inserted || stored.BlobKey != "nar/first" {
		t.Fatalf("second AddUpload = %+v, %v, %v; want the first NAR kept", stored, inserted, err)
	}
	got, err := s.Upload(ctx, b.ID, "nar/y.nar.zst")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(u2, got, timeEq, cmpopts.IgnoreFields(meta.Upload{}, "Created")); diff != "" {
		t.Errorf("Upload (-want +got):\n%s", diff)
	}
	if _, err := s.Upload(ctx, a.ID, "nar/y.nar.zst"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("upload is visible in another cache: err = %v", err)
	}
	nar, err := s.NAR(ctx, n1.NarHash)
	if err != nil || nar.BlobKey != "nar/first" {
		t.Errorf("NAR = %+v, %v", nar, err)
	}
	if _, err := s.NAR(ctx, hashOf(99)); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("NAR of a missing hash: err = %v, want ErrNotFound", err)
	}
	// Replacing the upload under the same URL.
	u1.FileSize = 70
	if _, _, err := s.AddUpload(ctx, u1, n1); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Upload(ctx, a.ID, u1.URL); got.FileSize != 70 {
		t.Errorf("AddUpload did not replace the upload: %+v", got)
	}
	if _, _, err := s.AddUpload(ctx, meta.Upload{CacheID: 9999, URL: "nar/z", NarHash: n1.NarHash}, n1); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("AddUpload to a missing cache: err = %v, want ErrNotFound", err)
	}
}

func testConcurrentUploads(t *testing.T, s meta.Store) {
	c := mustCache(t, s, "c")
	var wg sync.WaitGroup
	var mu sync.Mutex
	inserts := 0
	keys := map[string]bool{}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := narOf(1, fmt.Sprintf("nar/k%d", i))
			u := meta.Upload{CacheID: c.ID, URL: fmt.Sprintf("nar/u%d", i), NarHash: n.NarHash, NarSize: n.NarSize}
			stored, inserted, err := s.AddUpload(ctx, u, n)
			if err != nil {
				t.Errorf("AddUpload %d: %v", i, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if inserted {
				inserts++
			}
			keys[stored.BlobKey] = true
		}()
	}
	wg.Wait()
	if inserts != 1 || len(keys) != 1 {
		t.Errorf("8 concurrent uploads of one NAR: %d inserted, stored keys %v; want exactly one", inserts, keys)
	}
}

func testPathNeedsNAR(t *testing.T, s meta.Store) {
	c := mustCache(t, s, "c")
	p := meta.Path{CacheID: c.ID, HashPart: partOf(1), StorePath: "/nix/store/" + partOf(1) + "-p", NarHash: hashOf(1), NarInfo: "x"}
	if err := s.PutPath(ctx, p); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("PutPath without its NAR: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Path(ctx, c.ID, partOf(1)); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("failed PutPath left a path: err = %v", err)
	}
	upload(t, s, c.ID, 1, "nar/k1")
	if err := s.PutPath(ctx, meta.Path{CacheID: 12345, HashPart: partOf(1), NarHash: hashOf(1)}); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("PutPath into a missing cache: err = %v, want ErrNotFound", err)
	}
	if err := s.PutPath(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := s.Path(ctx, c.ID, partOf(1))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, got, cmpopts.IgnoreFields(meta.Path{}, "Created")); diff != "" || got.Created.IsZero() {
		t.Errorf("Path (-want +got):\n%s", diff)
	}
	// Replacing it with another NAR takes ReplacePath.
	upload(t, s, c.ID, 2, "nar/k2")
	p2 := p
	p2.NarHash, p2.NarInfo = hashOf(2), "y"
	if err := s.PutPath(ctx, p2); !errors.Is(err, meta.ErrExists) {
		t.Errorf("PutPath over an existing path: err = %v, want ErrExists", err)
	}
	if got, _ := s.Path(ctx, c.ID, partOf(1)); got.NarInfo != p.NarInfo {
		t.Errorf("a refused PutPath changed the path: %+v", got)
	}
	if err := s.ReplacePath(ctx, p2); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Path(ctx, c.ID, partOf(1)); got.NarInfo != "y" || got.NarHash != hashOf(2) {
		t.Errorf("ReplacePath did not replace: %+v", got)
	}
	p3 := p2
	p3.HashPart, p3.NarHash = partOf(3), hashOf(99)
	if err := s.ReplacePath(ctx, p3); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("ReplacePath without its NAR: err = %v, want ErrNotFound", err)
	}
	if err := s.ReplacePath(ctx, meta.Path{CacheID: 12345, HashPart: partOf(1), NarHash: hashOf(1)}); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("ReplacePath into a missing cache: err = %v, want ErrNotFound", err)
	}
}

// Of writers racing to store one path with different NARs, exactly one
// succeeds and the others get ErrExists; the path is the winner's.
func testPathFirstWriterWins(t *testing.T, s meta.Store) {
	c := mustCache(t, s, "c")
	const writers = 8
	for i := range writers {
		upload(t, s, c.ID, 10+i, fmt.Sprintf("nar/k%d", i))
	}
	for round := range 5 {
		hp := partOf(100 + round)
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.PutPath(ctx, meta.Path{CacheID: c.ID, HashPart: hp, StorePath: "/nix/store/" + hp + "-p",
					NarHash: hashOf(10 + i), NarInfo: fmt.Sprint("writer ", i)})
			}()
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: writers %d and %d both stored the path", round, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, meta.ErrExists):
				t.Fatalf("round %d: writer %d: err = %v, want nil or ErrExists", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer stored the path", round)
		}
		if got, err := s.Path(ctx, c.ID, hp); err != nil || got.NarInfo != fmt.Sprint("writer ", winner) || got.NarHash != hashOf(10+winner) {
			t.Errorf("round %d: path = %+v, %v; want writer %d's", round, got, err, winner)
		}
	}
}

func testServedNAR(t *testing.T, s meta.Store) {
	a, b := mustCache(t, s, "a"), mustCache(t, s, "b")
	upload(t, s, a.ID, 1, "nar/k1")
	if _, err := s.ServedNAR(ctx, a.ID, "nar/k1"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("ServedNAR before any path uses it: err = %v, want ErrNotFound", err)
	}
	putPath(t, s, a.ID, 1, 1)
	n, err := s.ServedNAR(ctx, a.ID, "nar/k1")
	if err != nil || n.NarHash != hashOf(1) {
		t.Errorf("ServedNAR = %+v, %v", n, err)
	}
	if _, err := s.ServedNAR(ctx, b.ID, "nar/k1"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("ServedNAR in a cache without the path: err = %v, want ErrNotFound", err)
	}
}

func testMissing(t *testing.T, s meta.Store) {
	c := mustCache(t, s, "c")
	other := mustCache(t, s, "other")
	upload(t, s, c.ID, 1, "nar/k1")
	var ask, want []string
	for i := range 1234 {
		ask = append(ask, partOf(i))
		if i%3 == 0 {
			putPath(t, s, c.ID, i, 1)
		} else {
			want = append(want, partOf(i))
		}
	}
	putPath(t, s, other.ID, 1, 1)
	// Reverse the order: the answer follows the question.
	for i, j := 0, len(ask)-1; i < j; i, j = i+1, j-1 {
		ask[i], ask[j] = ask[j], ask[i]
	}
	for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
		want[i], want[j] = want[j], want[i]
	}
	got, err := s.Missing(ctx, c.ID, ask)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Missing (-want +got):\n%s", diff)
	}
	if got, err := s.Missing(ctx, c.ID, nil); err != nil || len(got) != 0 {
		t.Errorf("Missing(nil) = %v, %v", got, err)
	}
}

func testDeleteCacheCascades(t *testing.T, s meta.Store) {
	a, b := mustCache(t, s, "a"), mustCache(t, s, "b")
	upload(t, s, a.ID, 1, "nar/k1")
	putPath(t, s, a.ID, 1, 1)
	upload(t, s, b.ID, 2, "nar/k2")
	putPath(t, s, b.ID, 2, 2)
	if err := s.PutLog(ctx, meta.Log{CacheID: a.ID, Drv: "x.drv", BlobKey: "log/1", Size: 1}, meta.LogLimits{}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteCache(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Path(ctx, a.ID, partOf(1)); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("path survived its cache: %v", err)
	}
	if _, err := s.Upload(ctx, a.ID, "nar/nar/k1.nar.xz"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("upload survived its cache: %v", err)
	}
	if _, err := s.Log(ctx, a.ID, "x.drv"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("log survived its cache: %v", err)
	}
	keys, err := s.Collect(ctx, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"nar/k1", "ls/nar/k1"}, keys, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("Collect after DeleteCache (-want +got):\n%s", diff)
	}
	if used, err := s.BlobInUse(ctx, "nar/k2"); err != nil || !used {
		t.Errorf("the other cache's NAR: BlobInUse = %v, %v", used, err)
	}
}

func testCollect(t *testing.T, s meta.Store) {
	c := mustCache(t, s, "c")
	upload(t, s, c.ID, 1, "nar/used")  // a path uses it
	upload(t, s, c.ID, 2, "nar/fresh") // staged, recent
	putPath(t, s, c.ID, 1, 1)
	// Nothing is old enough yet.
	keys, err := s.Collect(ctx, time.Now().Add(-time.Hour))
	if err != nil || len(keys) != 0 {
		t.Fatalf("Collect of fresh uploads = %v, %v; want nothing", keys, err)
	}
	keys, err = s.Collect(ctx, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"nar/fresh", "ls/nar/fresh"}, keys, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("Collect of expired uploads (-want +got):\n%s", diff)
	}
	if _, err := s.NAR(ctx, hashOf(2)); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("collected NAR is still there: %v", err)
	}
	if _, err := s.NAR(ctx, hashOf(1)); err != nil {
		t.Errorf("NAR used by a path was collected: %v", err)
	}
	if _, err := s.Upload(ctx, c.ID, "nar/nar/used.nar.xz"); err != nil {
		t.Errorf("upload of a committed path was collected: %v", err)
	}
	for key, want := range map[string]bool{"nar/used": true, "ls/nar/used": true, "nar/fresh": false, "log/x": false} {
		if used, err := s.BlobInUse(ctx, key); err != nil || used != want {
			t.Errorf("BlobInUse(%q) = %v, %v; want %v", key, used, err, want)
		}
	}
}

func testUsage(t *testing.T, s meta.Store) {
	a, b := mustCache(t, s, "a"), mustCache(t, s, "b")
	mustCache(t, s, "empty")
	upload(t, s, a.ID, 1, "nar/k1")
	upload(t, s, a.ID, 2, "nar/k2")
	putPath(t, s, a.ID, 1, 1)
	putPath(t, s, a.ID, 2, 2)
	putPath(t, s, a.ID, 3, 2) // a second path with the same NAR
	putPath(t, s, b.ID, 1, 1)
	got, err := s.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []meta.Usage{
		{Cache: "a", Paths: 3, NarBytes: 101 + 102 + 102, StoredBytes: 51 + 52},
		{Cache: "b", Paths: 1, NarBytes: 101, StoredBytes: 51},
		{Cache: "empty"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Usage (-want +got):\n%s", diff)
	}
}

func testVersion(t *testing.T, s meta.Store) {
	version := func() int64 {
		t.Helper()
		v, err := s.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v0 := version()
	if v := version(); v != v0 {
		t.Errorf("Version changed from %d to %d without a write", v0, v)
	}
	writes := []struct {
		name  string
		write func()
	}{
		{"CreateCache", func() { mustCache(t, s, "v") }},
		{"CreateToken", func() {
			s.CreateToken(ctx, meta.Token{ID: "v", Hash: make([]byte, 32), CachePattern: "*", Perms: meta.PermPull})
		}},
		{"DeleteToken", func() { s.DeleteToken(ctx, "v") }},
		{"AddUpload", func() { c, _ := s.Cache(ctx, "v"); upload(t, s, c.ID, 1, "nar/v") }},
		{"PutPath", func() { c, _ := s.Cache(ctx, "v"); putPath(t, s, c.ID, 1, 1) }},
		{"DeleteCache", func() { s.DeleteCache(ctx, "v") }},
	}
	prev := v0
	for _, w := range writes {
		w.write()
		v := version()
		if v == prev {
			t.Errorf("Version unchanged (%d) after %s", v, w.name)
		}
		prev = v
	}
}
