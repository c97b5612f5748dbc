package listen

// Hostile clients against a server behind a Guard (issue 8): connections
// that declare a body and never send it, trickle it, or never read the
// answer are cut; connections past the limits get a plain 503; ambiguous
// framing is refused. Legitimate slow clients and idle keep-alive
// connections are not cut.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type guarded struct {
	addr  string
	guard *Guard
	srv   *http.Server
}

// startGuarded serves h on 127.0.0.1 behind a Guard with lim.
func startGuarded(t *testing.T, lim Limits, h http.Handler) *guarded {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGuard(l, lim, slog.New(slog.NewTextHandler(io.Discard, nil)))
	hs := HTTPServer(h, nil, nil)
	go hs.Serve(g)
	t.Cleanup(func() { hs.Close() })
	return &guarded{addr: l.Addr().String(), guard: g, srv: hs}
}

// dialFrom connects to addr from the loopback address from (127.0.0.x).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports whether the server closes c (or resets it) within d,
// reading and discarding whatever it sends.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	io.WriteString(w, "ok\n")
})

// A request that declares a body and never sends it is answered at once
// (the handler does not read it) and its connection closed, even for a
// GET; one whose handler waits for the body is cut after the idle time.
func TestHostileDeclaredBodyNeverSent(t *testing.T) {
	lim := Limits{Rate: Rate{Idle: 300 * time.Millisecond, Min: 1000}}
	s := startGuarded(t, lim, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/read" {
			io.Copy(io.Discard, r.Body)
		}
		io.WriteString(w, "ok\n")
	}))
	for _, path := range []string{"/healthz", "/read"} {
		c := dialFrom(t, "127.0.0.1", s.addr)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", path)
		start := time.Now()
		if !closedWithin(c, 3*time.Second) {
			t.Errorf("GET %s with a body declared and never sent: connection still open after 3s", path)
		}
		t.Logf("%s: closed after %v", path, time.Since(start).Round(time.Millisecond))
	}
}

// A body trickled below the minimum rate is cut, whatever its idle gaps.
func TestHostileTrickledBodyIsCut(t *testing.T) {
	lim := Limits{Rate: Rate{Idle: 500 * time.Millisecond, Min: 1000}}
	done := make(chan error, 1)
	s := startGuarded(t, lim, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		done <- err
	}))
	c := dialFrom(t, "127.0.0.1", s.addr)
	fmt.Fprintf(c, "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
	start := time.Now()
	go func() {
		for range 1000 { // 10 bytes/s, gaps well under Idle
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the trickled body was read to its end")
		}
		t.Logf("cut after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(5 * time.Second):
		t.Fatal("a body trickled at 10 bytes/s (minimum 1000) still read after 5s")
	}
}

// A response the client never reads is cut, and the handler (holding a
// file, as a NAR download holds its blob) returns, through sendfile or not.
func TestHostileUnreadDownloadIsCut(t *testing.T) {
	file := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(file, bytes.Repeat([]byte("n"), 64<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	lim := Limits{Rate: Rate{Idle: 300 * time.Millisecond, Min: 100 << 10}}
	done := make(chan string, 2)
	s := startGuarded(t, lim, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/file" {
			f, err := os.Open(file)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			http.ServeContent(w, r, "", time.Time{}, f) // sendfile
		} else {
			chunk := bytes.Repeat([]byte("w"), 1<<20)
			for i := 0; i < 64; i++ {
				if _, err := w.Write(chunk); err != nil {
					break
				}
			}
		}
		done <- r.URL.Path
	}))
	for _, path := range []string{"/file", "/writes"} {
		c := dialFrom(t, "127.0.0.1", s.addr)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(4 << 10)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		select {
		case p := <-done:
			if p != path {
				t.Fatalf("handler of %s returned, want %s", p, path)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("GET %s never read by the client: the handler still writes after 10s", path)
		}
	}
}

// A slow but steady client, above the minimum rate, gets the whole
// response, pauses shorter than the idle time included; so does one that
// waits for a slow handler, and a keep-alive connection idle between
// requests for longer than the idle time stays usable.
func TestSlowSteadyClientsAreServed(t *testing.T) {
	lim := Limits{Rate: Rate{Idle: 300 * time.Millisecond, Min: 50 << 10}}
	body := bytes.Repeat([]byte("s"), 2<<20)
	s := startGuarded(t, lim, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow-handler":
			time.Sleep(time.Second) // the server's own time does not count
			io.WriteString(w, "ok\n")
		case "/upload":
			n, err := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%d %v\n", n, err)
		default:
			w.Write(body)
		}
	}))
	c := dialFrom(t, "127.0.0.1", s.addr)
	br := bufio.NewReader(c)
	get := func(path string) *http.Response {
		t.Helper()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp
	}
	resp := get("/big")
	got := 0
	buf := make([]byte, 16<<10)
	for i := 0; ; i++ {
		n, err := resp.Body.Read(buf)
		got += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("slow reader cut after %d bytes: %v", got, err)
		}
		if i%16 == 0 {
			time.Sleep(200 * time.Millisecond) // 256 KiB, then a pause under Idle: ~ 1 MiB/s
		}
	}
	if got != len(body) {
		t.Errorf("slow reader got %d bytes, want %d", got, len(body))
	}
	if resp := get("/slow-handler"); resp.StatusCode != 200 {
		t.Errorf("slow handler: %s", resp.Status)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	time.Sleep(time.Second) // idle between requests, over Idle
	if resp := get("/slow-handler"); resp.StatusCode != 200 {
		t.Errorf("after an idle second: %s", resp.Status)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	// A slow steady upload: 100 KiB/s in bursts with pauses under Idle.
	fmt.Fprintf(c, "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 200<<10)
	for range 20 {
		c.Write(bytes.Repeat([]byte("u"), 10<<10))
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	if string(out) != fmt.Sprintf("%d <nil>\n", 200<<10) {
		t.Errorf("slow steady upload: %q", out)
	}
}

// Past the limit per client address, and past the overall limit, a
// connection is answered 503 and closed; other addresses are still
// served while one address holds its whole share.
func TestHostileConnectionLimits(t *testing.T) {
	lim := Limits{MaxConns: 6, MaxConnsPerAddr: 3, Rate: Rate{Idle: time.Minute}}
	s := startGuarded(t, lim, okHandler)
	// An attacker at 127.0.0.1 holds its three connections with requests
	// that never finish.
	for range 3 {
		c := dialFrom(t, "127.0.0.1", s.addr)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	}
	waitOpen(t, s.guard, 3)
	busy := func(from string) string {
		c := dialFrom(t, from, s.addr)
		c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("from %s: %v", from, err)
		}
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if got := busy("127.0.0.1"); !strings.HasPrefix(got, "503 ") {
		t.Errorf("a fourth connection from the same address: %q, want 503", got)
	}
	// Another client is served meanwhile.
	if got := busy("127.0.0.2"); got != "200 ok" {
		t.Errorf("another address while the first holds its share: %q", got)
	}
	// Fill the server: three more held connections from 127.0.0.3/4.
	for _, from := range []string{"127.0.0.3", "127.0.0.3", "127.0.0.4"} {
		c := dialFrom(t, from, s.addr)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	}
	waitOpen(t, s.guard, 6)
	if got := busy("127.0.0.5"); !strings.HasPrefix(got, "503 ") {
		t.Errorf("past the overall limit: %q, want 503", got)
	}
	if s.guard.Rejected() < 2 {
		t.Errorf("Rejected() = %d, want at least 2", s.guard.Rejected())
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func waitOpen(t *testing.T, g *Guard, n int) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		g.mu.Lock()
		open := g.open
		g.mu.Unlock()
		if open == n {
			return
		}
	}
	t.Fatalf("the guard never counted %d open connections", n)
}

// Thousands of connections that hold requests open cost neither file
// descriptors nor memory beyond the limits: the excess is refused at
// once, and a client from elsewhere is still served.
func TestHostileConnectionFlood(t *testing.T) {
	lim := Limits{MaxConns: 100, MaxConnsPerAddr: 50, Rate: Rate{Idle: time.Minute}}
	s := startGuarded(t, lim, okHandler)
	fds := func() int {
		ents, _ := os.ReadDir("/proc/self/fd")
		return len(ents)
	}
	before := fds()
	heapBefore := heapInUse()
	var conns []net.Conn
	for range 1000 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
		c, err := d.Dial("tcp", s.addr)
		if err != nil {
			break
		}
		fmt.Fprintf(c, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	// The test's own 1000 client sockets are in this process too.
	if server := fds() - before - len(conns); server > 50+64+10 {
		t.Errorf("the server holds %d descriptors for 1000 connections from one address (limit 50)", server)
	}
	// The test's own 1000 client connections live in this heap too.
	if grew := int64(heapInUse()) - int64(heapBefore); grew > 16<<20 {
		t.Errorf("the heap grew by %d MiB for 1000 connections from one address (limit 50)", grew>>20)
	}
	c := dialFrom(t, "127.0.0.2", s.addr)
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("another client during the flood: %v %v", resp, err)
	}
}

// A request with both Content-Length and Transfer-Encoding is refused
// (400) and its connection closed, wherever it comes on a connection;
// requests framed one way or the other before it are served.
func TestHostileContentLengthAndTransferEncoding(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	s := startGuarded(t, Limits{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, r.URL.Path+"="+string(b))
		mu.Unlock()
		io.WriteString(w, "ok\n")
	}))
	good := "PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"PUT /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n" +
		"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
	tests := []struct {
		name, req string
	}{
		{"CL then TE", "PUT /s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"TE then CL", "PUT /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"},
		{"lower case", "PUT /s HTTP/1.1\r\nHost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"HTTP/1.0", "PUT /s HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\nabcd"},
		{"after OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET /s HTTP/1.1\r\nHost: x\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			bodies = nil
			mu.Unlock()
			c := dialFrom(t, "127.0.0.1", s.addr)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, good+tt.req+"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReader(c)
			var statuses []int
			for {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					break
				}
				io.Copy(io.Discard, resp.Body)
				statuses = append(statuses, resp.StatusCode)
			}
			mu.Lock()
			defer mu.Unlock()
			want := "[/a=hello /b=abcde /c=]"
			if fmt.Sprint(bodies) != want {
				t.Errorf("handlers saw %v, want %v", bodies, want)
			}
			if n := len(statuses); n == 0 || statuses[n-1] != 400 && tt.name != "after OPTIONS *" {
				t.Errorf("statuses %v: want 200s, then 400 and the connection closed", statuses)
			}
			for _, b := range bodies {
				if strings.HasPrefix(b, "/s=") || strings.HasPrefix(b, "/after") {
					t.Errorf("a handler served %q", b)
				}
			}
		})
	}
}

// The rate guard also holds over TLS, and a reloaded certificate is
// served to new connections.
func TestTLSReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, certFile, keyFile, 1)
	cert, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGuard(TLS(l, cert), Limits{Rate: Rate{Idle: 300 * time.Millisecond}}, nil)
	hs := HTTPServer(okHandler, nil, nil)
	go hs.Serve(g)
	defer hs.Close()
	serial := func() int64 {
		t.Helper()
		c, err := tlsDial(l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET over TLS: %v %v", resp, err)
		}
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}
	writeCert(t, certFile, keyFile, 2)
	if s := serial(); s != 1 {
		t.Fatalf("before Reload: serial %d, want 1", s)
	}
	if err := cert.Reload(); err != nil {
		t.Fatal(err)
	}
	if s := serial(); s != 2 {
		t.Fatalf("after Reload: serial %d, want 2", s)
	}
	// A broken file leaves the old certificate in use.
	os.WriteFile(certFile, []byte("garbage"), 0o600)
	if err := cert.Reload(); err == nil {
		t.Error("Reload of a broken certificate: no error")
	}
	if s := serial(); s != 2 {
		t.Fatalf("after a failed Reload: serial %d, want 2", s)
	}
	// A TLS client that connects and sends nothing is cut too.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x16, 0x03, 0x01}) // the start of a ClientHello
	if !closedWithin(c, 3*time.Second) {
		t.Error("a stalled TLS handshake is not cut")
	}
}

func TestSocketModeAndGroup(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	gid := os.Getgid()
	l, err := ListenSocket(context.Background(), "unix:"+sock, Socket{Mode: 0o660, Group: fmt.Sprint(gid)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}
	for _, bad := range []string{"999", "abc", "0", "1000"} {
		if _, err := ParseSocketMode(bad); err == nil {
			t.Errorf("ParseSocketMode(%q): no error", bad)
		}
	}
	if m, err := ParseSocketMode("0660"); err != nil || m != 0o660 {
		t.Errorf("ParseSocketMode(0660) = %v, %v", m, err)
	}
	if _, err := ListenSocket(context.Background(), "unix:"+sock+"2", Socket{Group: "no-such-group-silo"}); err == nil {
		t.Error("an unknown group: no error")
	}
	if _, err := ListenSocket(context.Background(), "127.0.0.1:0", Socket{Mode: 0o660}); err == nil {
		t.Error("a socket mode on a TCP address: no error")
	}
}

// RaiseFileLimit lifts the soft open-file limit to the hard one, and the
// default connection cap stays well under it.
func TestRaiseFileLimit(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	if rl.Max > 512 {
		low := rl
		low.Cur = 512
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
			t.Fatal(err)
		}
	}
	n, err := RaiseFileLimit()
	if err != nil || n != rl.Max {
		t.Fatalf("RaiseFileLimit() = %d, %v; want the hard limit %d", n, err, rl.Max)
	}
	if c := DefaultMaxConns(); uint64(2*c) >= n {
		t.Errorf("DefaultMaxConns() = %d with %d files: no room for the blobs each may hold", c, n)
	}
}
