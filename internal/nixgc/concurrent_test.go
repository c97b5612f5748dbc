package nixgc_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixgc"
	"github.com/silo-cache/silo/internal/nixstore"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
	"github.com/silo-cache/silo/internal/storepath"
)

func exists(t *testing.T, ts *storetest.Store, p storepath.Path) bool {
	t.Helper()
	valid, err := ts.Store.IsValid(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	_, serr := os.Lstat(ts.Store.RealPath(p))
	if valid != (serr == nil) {
		t.Fatalf("%s: valid %v but on disk: %v", p, valid, serr)
	}
	return valid
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestNixHonoursSiloTempRoots: a path silo holds as a temp root survives
// the real Nix's collector until silo's Store is closed.
func TestNixHonoursSiloTempRoots(t *testing.T) {
	ts := storetest.New(t, true)
	s := ts.Open(ts.Opts)
	held := storetest.AddText(t, s, "held", "held")
	other := ts.Open(ts.Opts)
	loose := storetest.AddText(t, other, "loose", "loose")
	other.Close()

	roots, _ := ts.Run("nix-store", "--gc", "--print-roots")
	if !strings.Contains(roots, "{temp:") || !strings.Contains(roots, held.String()) {
		t.Errorf("Nix does not list silo's temp root:\n%s", roots)
	}
	ts.Run("nix-store", "--gc")
	if !exists(t, ts, held) {
		t.Fatalf("Nix collected %s, a temp root of an open silo store", held)
	}
	if exists(t, ts, loose) {
		t.Fatalf("Nix kept %s, which nothing roots", loose)
	}
	s.Close()
	ts.Run("nix-store", "--gc")
	if exists(t, ts, held) {
		t.Fatalf("Nix kept %s after silo's store closed", held)
	}
}

// TestSiloHonoursNixTempRoots: a path a running Nix process holds as a
// temp root survives silo's collector until the process exits.
func TestSiloHonoursNixTempRoots(t *testing.T) {
	ctx := context.Background()
	ts := storetest.New(t, true)
	s := ts.Open(ts.Opts)
	p := storetest.AddText(t, s, "x", "hi")
	s.Close()

	// builtins.toFile temp-roots its path, then the evaluation blocks
	// reading stdin.
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := ts.Cmd(cctx, "nix-instantiate", "--read-write-mode", "--eval", "--expr",
		`builtins.seq (builtins.toFile "x" "hi") (builtins.readFile /dev/stdin)`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	waitFor(t, "Nix's temp root", func() bool {
		ents, _ := os.ReadDir(filepath.Join(ts.Opts.StateDir, "temproots"))
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(ts.Opts.StateDir, "temproots", e.Name()))
			if bytes.Contains(b, []byte(p.String()+"\x00")) {
				return true
			}
		}
		return false
	})
	res, err := nixgc.CollectGarbage(ctx, ts.Store, nixgc.Options{Action: nixgc.DeleteDead, MaxFreed: nixgc.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(res.Paths, p.String()) || !exists(t, ts, p) {
		t.Fatalf("silo collected %s, a temp root of a running Nix", p)
	}
	stdin.Close()
	cmd.Wait()
	res, err = nixgc.CollectGarbage(ctx, ts.Store, nixgc.Options{Action: nixgc.DeleteDead, MaxFreed: nixgc.Unlimited})
	if err != nil {
		t.Fatal(err)
	}
	if exists(t, ts, p) {
		t.Fatalf("silo kept %s after Nix exited (%v)", p, res.Paths)
	}
}

// syncPoint makes a FIFO a collector blocks on (_NIX_TEST_GC_SYNC) and
// returns its path and a function that releases the collector.
func syncPoint(t *testing.T) (string, func()) {
	fifo := filepath.Join(t.TempDir(), "gc-sync")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("go"))
		f.Close()
	}
	return fifo, release
}

// TestSiloAddsDuringNixGC: while the real Nix collects (holding gc.lock),
// silo adds a path; its temp root goes through Nix's gc-socket, so the
// collection keeps it.
func TestSiloAddsDuringNixGC(t *testing.T) {
	ts := storetest.New(t, true)
	adder := ts.Open(ts.Opts)
	garbage := storetest.AddText(t, adder, "garbage", "garbage")
	adder.Close()
	fifo, release := syncPoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := ts.Cmd(ctx, "nix-store", "--gc")
	cmd.Env = append(cmd.Env, "_NIX_TEST_GC_SYNC="+fifo)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { release(); cmd.Wait() }()
	sock := filepath.Join(ts.Opts.StateDir, "gc-socket", "socket")
	waitFor(t, "Nix's gc-socket", func() bool { _, err := os.Stat(sock); return err == nil })

	s := ts.Open(ts.Opts)
	added, err := s.AddTextToStore(ctx, "during-gc", []byte("added while Nix collects"), nil, nixstore.AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	release()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nix-store --gc: %v\n%s", err, out.String())
	}
	if !exists(t, ts, added.Path) {
		t.Fatalf("Nix's collector deleted %s, added during the collection:\n%s", added.Path, out.String())
	}
	// The collection really ran:
	if exists(t, ts, garbage) {
		t.Errorf("Nix's collector kept garbage %s", garbage)
	}
}

// TestNixAddsDuringSiloGC: while silo collects, the real Nix adds a path;
// its temp root comes through silo's gc-socket, so silo keeps it.
func TestNixAddsDuringSiloGC(t *testing.T) {
	ts := storetest.New(t, true)
	fifo, release := syncPoint(t)
	t.Setenv("_NIX_TEST_GC_SYNC", fifo)
	type result struct {
		res *nixgc.Results
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := nixgc.CollectGarbage(context.Background(), ts.Store, nixgc.Options{Action: nixgc.DeleteDead, MaxFreed: nixgc.Unlimited})
		done <- result{r, err}
	}()
	defer release()
	sock := filepath.Join(ts.Opts.StateDir, "gc-socket", "socket")
	waitFor(t, "silo's gc-socket", func() bool { _, err := os.Stat(sock); return err == nil })
	file := filepath.Join(t.TempDir(), "during-silo-gc")
	os.WriteFile(file, []byte("added while silo collects"), 0o644)
	out, _ := ts.Run("nix-store", "--add", file)
	p, err := ts.Store.ParsePath(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	release()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if slices.Contains(r.res.Paths, p.String()) || !exists(t, ts, p) {
		t.Fatalf("silo's collector deleted %s, added by Nix during the collection", p)
	}
}
