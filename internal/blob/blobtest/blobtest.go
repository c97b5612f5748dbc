// Package blobtest is the conformance suite every blob.Store must pass:
// the contract written in package blob's documentation, checked.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/silo-cache/silo/internal/blob"
)

// Run runs the suite; open returns a new, empty store for each subtest.
func Run(t *testing.T, open func(t *testing.T) blob.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Missing", testMissing},
		{"InvisibleUntilCommit", testInvisibleUntilCommit},
		{"Abort", testAbort},
		{"CommitExistingKey", testCommitExistingKey},
		{"ConcurrentCommits", testConcurrentCommits},
		{"Delete", testDelete},
		{"List", testList},
		{"InvalidKeys", testInvalidKeys},
		{"Seek", testSeek},
		{"CancelledCommit", testCancelledCommit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func put(t *testing.T, s blob.Store, key string, data []byte) {
	t.Helper()
	ctx := context.Background()
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	defer w.Abort()
	// Write in uneven pieces, as streaming callers do.
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 4093)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		rest = rest[n:]
	}
	if err := w.Commit(ctx, key); err != nil {
		t.Fatalf("Commit(%q): %v", key, err)
	}
}

func get(t *testing.T, s blob.Store, key string) []byte {
	t.Helper()
	r, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return data
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func testRoundTrip(t *testing.T, s blob.Store) {
	ctx := context.Background()
	for _, size := range []int{0, 1, 8, 100_000, 3 << 20} {
		key := fmt.Sprintf("nar/roundtrip-%d.nar.zst", size)
		data := random(size)
		put(t, s, key, data)
		if got := get(t, s, key); !bytes.Equal(got, data) {
			t.Errorf("%s: read back %d bytes that differ from the %d written", key, len(got), len(data))
		}
		info, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatalf("Stat(%q): %v", key, err)
		}
		if info.Key != key || info.Size != int64(size) {
			t.Errorf("Stat(%q) = %+v, want key %q size %d", key, info, key, size)
		}
	}
}

func testMissing(t *testing.T, s blob.Store) {
	ctx := context.Background()
	if _, err := s.Open(ctx, "nar/missing"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open of a missing key: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, "nar/missing"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat of a missing key: err = %v, want ErrNotFound", err)
	}
}

func listAll(t *testing.T, s blob.Store, prefix string) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	var mu sync.Mutex
	err := s.List(context.Background(), prefix, func(i blob.Info) error {
		mu.Lock()
		defer mu.Unlock()
		got[i.Key] = i.Size
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func testInvisibleUntilCommit(t *testing.T, s blob.Store) {
	ctx := context.Background()
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, err := w.Write(random(1000)); err != nil {
		t.Fatal(err)
	}
	if got := listAll(t, s, ""); len(got) != 0 {
		t.Errorf("List before Commit shows %v, want nothing", got)
	}
	if err := w.Commit(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	if got, want := listAll(t, s, ""), map[string]int64{"a/b": 1000}; !cmp.Equal(got, want) {
		t.Errorf("List after Commit: %v", cmp.Diff(want, got))
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Errorf("Write after Commit succeeded")
	}
}

func testAbort(t *testing.T, s blob.Store) {
	ctx := context.Background()
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(random(100))
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if err := w.Commit(ctx, "x/aborted"); err == nil {
		t.Errorf("Commit after Abort succeeded")
	}
	if got := listAll(t, s, ""); len(got) != 0 {
		t.Errorf("List after Abort shows %v, want nothing", got)
	}
	// Abort after Commit keeps the blob.
	put(t, s, "x/kept", []byte("kept"))
	w, _ = s.Create(ctx)
	w.Write([]byte("kept2"))
	if err := w.Commit(ctx, "x/kept2"); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort after Commit: %v", err)
	}
	if got := get(t, s, "x/kept2"); string(got) != "kept2" {
		t.Errorf("after Abort following Commit, blob reads %q", got)
	}
}

func testCommitExistingKey(t *testing.T, s blob.Store) {
	data := random(5000)
	put(t, s, "nar/same", data)
	put(t, s, "nar/same", data)
	if got := get(t, s, "nar/same"); !bytes.Equal(got, data) {
		t.Errorf("blob committed twice reads back wrong")
	}
	if got := listAll(t, s, "nar/"); len(got) != 1 {
		t.Errorf("List after committing a key twice: %v, want one blob", got)
	}
}

func testConcurrentCommits(t *testing.T, s blob.Store) {
	data := random(200_000)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			w, err := s.Create(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer w.Abort()
			if _, err := w.Write(data); err != nil {
				errs <- err
				return
			}
			if err := w.Commit(ctx, "nar/racy"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent commit: %v", err)
	}
	if got := get(t, s, "nar/racy"); !bytes.Equal(got, data) {
		t.Errorf("blob committed concurrently reads back wrong")
	}
}

func testDelete(t *testing.T, s blob.Store) {
	ctx := context.Background()
	put(t, s, "log/a", []byte("x"))
	if err := s.Delete(ctx, "log/a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Open(ctx, "log/a"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open after Delete: err = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "log/a"); err != nil {
		t.Errorf("Delete of a missing blob: %v, want nil", err)
	}
}

func testList(t *testing.T, s blob.Store) {
	want := map[string]int64{}
	for i, key := range []string{"nar/0abc.nar.zst", "nar/0abd.nar.zst", "nar/z.nar", "nar/a", "ls/0abc.ls", "log/x-y.drv", "top"} {
		put(t, s, key, random(i))
		want[key] = int64(i)
	}
	for _, prefix := range []string{"", "nar/", "nar/0ab", "ls/", "log/x", "t", "none/"} {
		wantP := map[string]int64{}
		for k, v := range want {
			if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
				wantP[k] = v
			}
		}
		if got := listAll(t, s, prefix); !cmp.Equal(got, wantP) {
			t.Errorf("List(%q) (-want +got):\n%s", prefix, cmp.Diff(wantP, got))
		}
	}
	// fn's error stops the listing and is returned.
	stop := errors.New("stop")
	calls := 0
	err := s.List(context.Background(), "", func(blob.Info) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("List with failing fn: err = %v after %d calls, want stop after 1", err, calls)
	}
	var keys []string
	for k := range listAll(t, s, "") {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) != len(want) {
		t.Errorf("List(\"\") = %v", keys)
	}
}

func testInvalidKeys(t *testing.T, s blob.Store) {
	ctx := context.Background()
	for _, key := range []string{"", "/abs", "../up", "a/../b", "a//b", ".tmp/x", "a/.hidden", "sp ace", "a/", "back\\slash"} {
		if _, err := s.Open(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Open(%q): err = %v, want ErrInvalidKey", key, err)
		}
		w, err := s.Create(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("x"))
		if err := w.Commit(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Commit(%q): err = %v, want ErrInvalidKey", key, err)
		}
		w.Abort()
	}
	if got := listAll(t, s, ""); len(got) != 0 {
		t.Errorf("invalid keys left blobs: %v", got)
	}
}

func testSeek(t *testing.T, s blob.Store) {
	data := random(100_000)
	put(t, s, "nar/seek", data)
	r, err := s.Open(context.Background(), "nar/seek")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, err := r.Seek(0, io.SeekEnd); err != nil || n != int64(len(data)) {
		t.Fatalf("Seek to end = %d, %v; want %d", n, err, len(data))
	}
	if _, err := r.Seek(50_000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 10)
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, data[50_000:50_010]) {
		t.Errorf("read after Seek = %x, %v; want %x", got, err, data[50_000:50_010])
	}
}

func testCancelledCommit(t *testing.T, s blob.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(random(10))
	cancel()
	if err := w.Commit(ctx, "nar/cancelled"); err == nil {
		t.Errorf("Commit with a cancelled context succeeded")
	}
	w.Abort()
	if got := listAll(t, s, ""); len(got) != 0 {
		t.Errorf("cancelled commit left %v", got)
	}
}
