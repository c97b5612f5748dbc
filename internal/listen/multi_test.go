package listen

import (
	"errors"
	"net"
	"path/filepath"
	"testing"
)

// TestMergeAcceptsOnEverySocket: with several activated sockets (TCP and
// unix), a connection to each is accepted; Close closes them all.
func TestMergeAcceptsOnEverySocket(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ul, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	m := merge([]net.Listener{tl, ul})
	if m.Addr() != tl.Addr() {
		t.Errorf("Addr = %v, want the first listener's %v", m.Addr(), tl.Addr())
	}
	for _, l := range []net.Listener{tl, ul} {
		c, err := net.Dial(l.Addr().Network(), l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := m.Accept()
		if err != nil {
			t.Fatalf("accept from %s: %v", l.Addr().Network(), err)
		}
		if a.LocalAddr().Network() != l.Addr().Network() {
			t.Errorf("accepted %s, want a %s connection", a.LocalAddr().Network(), l.Addr().Network())
		}
		a.Close()
	}
	m.Close()
	if _, err := m.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if _, err := net.Dial("tcp", tl.Addr().String()); err == nil {
		t.Error("the TCP socket still accepts after Close")
	}
}
