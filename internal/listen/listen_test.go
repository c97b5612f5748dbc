package listen

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestAddr(t *testing.T) {
	ctx := context.Background()
	sock := filepath.Join(t.TempDir(), "sub", "s.sock")
	tests := []struct {
		addr    string
		network string
		wantErr string
	}{
		{addr: "127.0.0.1:0", network: "tcp"},
		{addr: "unix:" + sock, network: "unix"},
		{addr: "unix:", wantErr: "empty socket path"},
		{addr: "8080", wantErr: "want host:port"},
	}
	for _, tt := range tests {
		l, err := Addr(ctx, tt.addr)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Addr(%q) error = %v, want %q", tt.addr, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Addr(%q): %v", tt.addr, err)
		}
		if l.Addr().Network() != tt.network {
			t.Errorf("Addr(%q) network = %s", tt.addr, l.Addr().Network())
		}
		l.Close()
	}
}

func TestUnixSocketLiveAndStale(t *testing.T) {
	ctx := context.Background()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := Addr(ctx, "unix:"+sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Addr(ctx, "unix:"+sock); err == nil || !strings.Contains(err.Error(), "another server") {
		t.Fatalf("second listener on a live socket: err = %v", err)
	}
	// Leave a stale socket file behind: closing a Go unix listener unlinks
	// it, so make one without unlinking.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket file missing: %v", err)
	}
	l2, err := Addr(ctx, "unix:"+sock)
	if err != nil {
		t.Fatalf("listening over a stale socket: %v", err)
	}
	l2.Close()
	regular := filepath.Join(t.TempDir(), "file")
	os.WriteFile(regular, nil, 0o644)
	if _, err := Addr(ctx, "unix:"+regular); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listening over a regular file: err = %v", err)
	}
}

// TestSocketActivation re-executes the test binary with a listening socket
// as fd 3 and LISTEN_FDS=1, as systemd would.
func TestSocketActivation(t *testing.T) {
	if os.Getenv("SILO_TEST_ACTIVATED") == "1" {
		os.Setenv("LISTEN_PID", itoa(os.Getpid()))
		l, err := Listen(context.Background(), "127.0.0.1:1") // addr ignored when activated
		if err != nil {
			t.Fatal(err)
		}
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("activated"))
		c.Close()
		return
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := tl.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSocketActivation$")
	cmd.Env = append(os.Environ(), "SILO_TEST_ACTIVATED=1", "LISTEN_FDS=1")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 9)
	n, _ := c.Read(buf)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("activated child: %v", err)
	}
	if string(buf[:n]) != "activated" {
		t.Fatalf("got %q from the activated child", buf[:n])
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
