package daemon

import (
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/worker"
)

// storeEntries lists the store directory, without .links.
func storeEntries(t *testing.T, s *testStore) []string {
	t.Helper()
	ents, err := os.ReadDir(s.store)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != ".links" {
			names = append(names, e.Name())
		}
	}
	return names
}

// expectOnly waits until the store directory holds exactly the base names
// want (cleanup after a dropped connection runs in its goroutine).
func expectOnly(t *testing.T, s *testStore, want ...string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = storeEntries(t, s); slices.Equal(got, want) {
			return
		}
	}
	t.Errorf("store directory holds %q, want %q", got, want)
}

func base(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

func hostileStore(t *testing.T) *testStore {
	s := newTestStore(t, "")
	s.startSilo()
	return s
}

func TestHostileNARs(t *testing.T) {
	s := hostileStore(t)
	c := dialRaw(t, s.sock)
	good := narFile([]byte("good content\n"))
	goodPath := sourcePath(t, s.store, "good", good)
	bad := []struct {
		name    string
		path    string
		hash    string
		size    uint64
		refs    []string
		ca      string
		nar     []byte
		wantErr string
	}{
		{"hash lies", goodPath, sha256Hex([]byte("other")), uint64(len(good)), nil, "", good, "hash mismatch importing path"},
		{"size lies", goodPath, sha256Hex(good), uint64(len(good)) + 8, nil, "", good, "size mismatch importing path"},
		{"CA lies", s.store + "/" + strings.Repeat("a", 32) + "-good", sha256Hex(good), uint64(len(good)), nil,
			"fixed:r:sha256:" + strings.Repeat("0", 52), good, "content-addressed"},
		{"dot-dot entry", goodPath, sha256Hex(narDirWith("..", []byte("x"))), uint64(len(narDirWith("..", []byte("x")))), nil, "", narDirWith("..", []byte("x")), ""},
		{"slash in name", goodPath, sha256Hex(narDirWith("a/b", []byte("x"))), uint64(len(narDirWith("a/b", []byte("x")))), nil, "", narDirWith("a/b", []byte("x")), ""},
		{"truncated NAR", goodPath, sha256Hex(good[:40]), 40, nil, "", good[:40], ""},
		{"invalid reference", goodPath, sha256Hex(good), uint64(len(good)), []string{s.store + "/" + strings.Repeat("b", 32) + "-missing"}, "", good, "is not valid"},
	}
	for _, tt := range bad {
		err := c.addNar(tt.path, tt.hash, tt.size, tt.refs, tt.ca, tt.nar)
		var de *daemonErr
		if !errors.As(err, &de) {
			t.Fatalf("%s: err = %v, want an error from the daemon (and the connection kept)", tt.name, err)
		}
		if !strings.Contains(de.msg, tt.wantErr) {
			t.Errorf("%s: error %q, want it to mention %q", tt.name, de.msg, tt.wantErr)
		}
		if c.isValid(tt.path) {
			t.Fatalf("%s: %s became valid", tt.name, tt.path)
		}
	}
	expectOnly(t, s)
	if _, err := os.Stat(s.root + "/x"); err == nil {
		t.Error("a NAR wrote outside the store")
	}
	// The same connection still adds a good NAR.
	if err := c.addNar(goodPath, sha256Hex(good), uint64(len(good)), nil, "", good); err != nil {
		t.Fatal(err)
	}
	if !c.isValid(goodPath) {
		t.Fatal("good path not valid")
	}
	expectOnly(t, s, base(goodPath))
	if out := s.local("nix-store", "--verify", "--check-contents"); strings.Contains(out, "error") {
		t.Errorf("local nix-store --verify: %s", out)
	}
}

func TestHostileWire(t *testing.T) {
	s := hostileStore(t)
	closed := func(c *rawClient, what string) {
		t.Helper()
		// After the error the daemon hangs up: a read ends with EOF.
		c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, err := c.dec.Uint64(); err != nil {
				if strings.Contains(err.Error(), "timeout") {
					t.Errorf("%s: the daemon kept the connection open", what)
				}
				return
			}
		}
	}
	t.Run("unknown op", func(t *testing.T) {
		c := dialRaw(t, s.sock)
		c.enc.Uint64(99)
		var de *daemonErr
		if err := c.stderr(); !errors.As(err, &de) || de.msg != "invalid operation 99" {
			t.Errorf("err = %v, want invalid operation 99", err)
		}
		closed(c, "unknown op")
	})
	t.Run("oversized string", func(t *testing.T) {
		c := dialRaw(t, s.sock)
		c.enc.Uint64(uint64(worker.OpIsValidPath))
		c.enc.Uint64(1 << 40)
		c.flush()
		closed(c, "oversized string")
	})
	t.Run("oversized count", func(t *testing.T) {
		c := dialRaw(t, s.sock)
		c.enc.Uint64(uint64(worker.OpQueryValidPaths))
		c.enc.Uint64(1 << 60)
		c.flush()
		closed(c, "oversized count")
	})
	t.Run("not a store path", func(t *testing.T) {
		c := dialRaw(t, s.sock)
		c.enc.Uint64(uint64(worker.OpIsValidPath))
		c.enc.String("/etc/passwd")
		if err := c.stderr(); err == nil {
			t.Error("IsValidPath /etc/passwd succeeded")
		}
		closed(c, "bad path")
	})
	t.Run("error during work keeps the connection", func(t *testing.T) {
		c := dialRaw(t, s.sock)
		c.enc.Uint64(uint64(worker.OpQueryPathFromHashPart))
		c.enc.String("short")
		var de *daemonErr
		if err := c.stderr(); !errors.As(err, &de) || de.msg != "invalid hash part" {
			t.Errorf("err = %v, want invalid hash part", err)
		}
		if c.isValid(s.store + "/" + strings.Repeat("c", 32) + "-x") {
			t.Error("a made-up path is valid")
		}
	})
	t.Run("malformed frame", func(t *testing.T) {
		c := dialRaw(t, s.sock)
		nar := narFile([]byte("framed"))
		p := sourcePath(t, s.store, "framed", nar)
		c.enc.Uint64(uint64(worker.OpAddToStoreNar))
		for _, str := range []string{p, "", sha256Hex(nar)} {
			c.enc.String(str)
		}
		c.enc.Strings(nil)
		c.enc.Uint64(0)
		c.enc.Uint64(uint64(len(nar)))
		c.enc.Bool(false)
		c.enc.Strings(nil)
		c.enc.String("")
		c.enc.Bool(false)
		c.enc.Bool(true)
		c.enc.Uint64(1 << 50) // a frame of a petabyte, then silence
		c.enc.Raw(nar[:16])
		if err := c.enc.Flush(); err != nil {
			t.Fatalf("%v; daemon: %s", err, s.stderr)
		}
		time.Sleep(100 * time.Millisecond)
		c.conn.Close()
		c2 := dialRaw(t, s.sock)
		if c2.isValid(p) {
			t.Error("path from a malformed frame became valid")
		}
		expectOnly(t, s)
	})
	t.Run("killed mid-upload", func(t *testing.T) {
		c := dialRaw(t, s.sock)
		content := []byte(strings.Repeat("half an upload ", 10000))
		nar := narFile(content)
		p := sourcePath(t, s.store, "half", nar)
		c.enc.Uint64(uint64(worker.OpAddToStore))
		c.enc.String("half")
		c.enc.String("fixed:r:sha256")
		c.enc.Strings(nil)
		c.enc.Bool(false)
		half := nar[:len(nar)/2]
		c.enc.Uint64(uint64(len(half)))
		c.enc.Raw(half)
		c.flush()
		time.Sleep(200 * time.Millisecond)
		c.conn.Close()
		c2 := dialRaw(t, s.sock)
		if c2.isValid(p) {
			t.Error("half-uploaded path became valid")
		}
		expectOnly(t, s)
	})
}

// TestConcurrentSameAdd adds one path from several clients at once: all
// succeed with the same path, which is valid and whole.
func TestConcurrentSameAdd(t *testing.T) {
	s := hostileStore(t)
	content := []byte(strings.Repeat("same path from many clients\n", 20000))
	var wg sync.WaitGroup
	paths := make([]string, 8)
	errs := make([]error, 8)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialRaw(t, s.sock)
			paths[i], errs[i] = c.addFile("same", content)
		}()
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		if paths[i] != paths[0] {
			t.Errorf("client %d got %s, client 0 %s", i, paths[i], paths[0])
		}
	}
	expectOnly(t, s, base(paths[0]))
	data, err := os.ReadFile(paths[0])
	if err != nil || string(data) != string(content) {
		t.Errorf("content of %s: %v (%d bytes)", paths[0], err, len(data))
	}
	if out := s.local("nix-store", "--verify", "--check-contents"); strings.Contains(out, "error") {
		t.Errorf("local nix-store --verify: %s", out)
	}
}

// TestManyConnections opens and drops connections from many clients at
// once, some hanging up in the middle of a request: every other client's
// requests still succeed (a closed connection's descriptor, reused by the
// kernel for the next one, is never touched again).
func TestManyConnections(t *testing.T) {
	s := hostileStore(t)
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 15 {
				c := dialRaw(t, s.sock) // the first ones open a fresh store at once
				if (g+i)%3 == 0 {       // hang up mid-request
					c.enc.Uint64(uint64(worker.OpIsValidPath))
					c.enc.Uint64(100)
					c.enc.Flush()
					c.conn.Close()
					continue
				}
				c.enc.Uint64(uint64(worker.OpIsValidPath))
				c.enc.String(s.store + "/" + strings.Repeat("d", 32) + "-x")
				if err := c.stderr(); err != nil {
					errs <- err
				} else if _, err := c.dec.Uint64(); err != nil {
					errs <- err
				}
				c.conn.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
