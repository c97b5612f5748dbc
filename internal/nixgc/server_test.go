package nixgc

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixstore/storetest"
)

// TestRootsServer: a root is acknowledged once recorded, but only after
// its path's deletion (pending) is over; garbage is acknowledged and
// ignored; an endless line ends the connection.
func TestRootsServer(t *testing.T) {
	ts := storetest.New(t, false)
	sh := newShared()
	srv, err := startRootsServer(ts.Store, sh)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	p := storetest.RandomPath(t, ts.Store.Dir(), "x")
	sh.mu.Lock()
	sh.pending[p.HashPart()] = true
	sh.mu.Unlock()

	c, err := net.Dial("unix", filepath.Join(ts.Opts.StateDir, "gc-socket", "socket"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ack := make(chan string, 4)
	go func() {
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				close(ack)
				return
			}
			ack <- string(b)
		}
	}()
	c.Write([]byte(p.String() + "\n"))
	select {
	case a := <-ack:
		t.Fatalf("acknowledged (%q) while the path was being deleted", a)
	case <-time.After(200 * time.Millisecond):
	}
	sh.mu.Lock()
	if !sh.tempRoots[p.HashPart()] {
		t.Error("root not recorded")
	}
	delete(sh.pending, p.HashPart())
	sh.cond.Broadcast()
	sh.mu.Unlock()
	if a := <-ack; a != "1" {
		t.Fatalf("ack %q", a)
	}
	c.Write([]byte("not a store path\n"))
	if a := <-ack; a != "1" {
		t.Fatalf("ack of garbage %q", a)
	}
	c.Write([]byte(strings.Repeat("x", 10000)))
	select {
	case _, ok := <-ack:
		if ok {
			t.Fatal("answered an endless line")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an endless line kept the connection open")
	}
}
