package nar

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// failingWriter fails once it has taken limit bytes.
type failingWriter struct{ n, limit int }

var errDiskFull = errors.New("disk full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n+len(p) > w.limit {
		return 0, errDiskFull
	}
	w.n += len(p)
	return len(p), nil
}

// cancelAfter cancels its context once it has taken limit bytes.
type cancelAfter struct {
	n, limit int
	cancel   func()
}

func (w *cancelAfter) Write(p []byte) (int, error) {
	w.n += len(p)
	if w.n > w.limit {
		w.cancel()
	}
	return len(p), nil
}

func TestDumpStops(t *testing.T) {
	src := filepath.Join(t.TempDir(), "mixed")
	makeTree(t, "mixed", src)
	before := runtime.NumGoroutine()

	err := Dump(context.Background(), &failingWriter{limit: 300 << 10}, src)
	if !errors.Is(err, errDiskFull) || !strings.Contains(err.Error(), "writing NAR") {
		t.Errorf("Dump to a failing writer: error = %v, want one wrapping %v", err, errDiskFull)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = Dump(ctx, &cancelAfter{limit: 200 << 10, cancel: cancel}, src)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Dump with a cancelled context: error = %v, want context.Canceled", err)
	}
	if _, _, err := HashPath(ctx, src); !errors.Is(err, context.Canceled) {
		t.Errorf("HashPath with a cancelled context: error = %v", err)
	}
	err = Restore(ctx, bytes.NewReader(dumpBytes(t, src)), filepath.Join(t.TempDir(), "out"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Restore with a cancelled context: error = %v", err)
	}

	// The dumper's goroutine has exited.
	for i := 0; runtime.NumGoroutine() > before; i++ {
		if i == 100 {
			t.Fatalf("%d goroutines left running, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDumpMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	err := Dump(context.Background(), &bytes.Buffer{}, missing)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("error = %v, want one naming %s", err, missing)
	}
}
