package cli

// silo serve and silo publish against hostile clients, as run (issue 8),
// and their TLS, socket and start-up output (issue 9).

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/signature"
)

// The data directory and its files are the owner's only, whatever the
// umask they were made under; wider modes left by an older silo (or by
// hand) are narrowed at start, with a warning.
func TestServeDataDirPrivate(t *testing.T) {
	bin := nixtest.SiloBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	old := syscall.Umask(0)
	srv := startServe(t, bin, data)
	syscall.Umask(old)
	srv.waitLog(t, "silo cache create main")
	silo(t, bin, "cache", "create", "main", "--public", "--data-dir", data)
	tok := strings.TrimSpace(silo(t, bin, "token", "create", "--cache", "main", "--push", "--data-dir", data))
	body, url := bigNAR(t, 1000)
	if st := status(t, "PUT", srv.url+"/main/"+url, tok, strings.NewReader(string(body))); st != 200 {
		t.Fatalf("PUT NAR = %d\n%s", st, srv.logs())
	}
	checkPrivate(t, data)
	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.cmd.Wait()

	// Widen everything, as an older silo under umask 022 left it.
	filepath.WalkDir(data, func(p string, d os.DirEntry, err error) error {
		if d.IsDir() {
			os.Chmod(p, 0o755)
		} else {
			os.Chmod(p, 0o644)
		}
		return nil
	})
	srv = startServe(t, bin, data)
	srv.waitLog(t, "narrowed a data file's mode")
	for _, p := range []string{data, filepath.Join(data, "silo.db"), filepath.Join(data, "blobs")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is still %04o after a restart", p, fi.Mode().Perm())
		}
	}
}

// checkPrivate fails the test for anything under dir that its group or
// others may read.
func checkPrivate(t *testing.T, dir string) {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		if fi.Mode()&os.ModeSocket == 0 && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %04o (made under umask 0); want no access for group and others", p, fi.Mode().Perm())
		}
		n++
		return nil
	})
	if n < 6 {
		t.Errorf("only %d entries under %s", n, dir)
	}
}

// rawConn opens a connection to a server URL's address.
func rawConn(t *testing.T, url string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "http://"), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closes reports whether the server closes c within d.
func closes(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	ne, ok := err.(net.Error)
	return !ok || !ne.Timeout()
}

// The running server bounds connections per address with a 503, answers
// a request that declares a body it never sends at once, cuts a trickled
// body, and refuses a request with both Content-Length and
// Transfer-Encoding.
func TestServeConnectionGuard(t *testing.T) {
	bin := nixtest.SiloBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	silo(t, bin, "init", "--data-dir", data)
	silo(t, bin, "cache", "create", "main", "--public", "--data-dir", data)
	tok := strings.TrimSpace(silo(t, bin, "token", "create", "--cache", "main", "--push", "--data-dir", data))
	srv := startServe(t, bin, data, "--max-connections-per-ip", "4", "--idle-timeout", "1s", "--min-transfer-rate", "1K", "--upload-idle-timeout", "1s")

	// A GET declaring a body it never sends: answered, and closed.
	c := rawConn(t, srv.url)
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz with a body never sent: %v %v", resp, err)
	}
	if !closes(c, 3*time.Second) {
		t.Error("the connection of a GET with a body never sent stays open")
	}

	// A trickled upload is cut within a few seconds.
	c = rawConn(t, srv.url)
	fmt.Fprintf(c, "PUT /main/nar/trickle.nar HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n", tok)
	go func() {
		for range 200 {
			if _, err := c.Write([]byte{0}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if !closes(c, 8*time.Second) {
		t.Error("a body trickled at 10 bytes/s (minimum 1 KiB/s) is not cut after 8s")
	}

	// Both framings at once: 400, closed.
	c = rawConn(t, srv.url)
	fmt.Fprintf(c, "PUT /main/nar/x.nar HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 400 {
		t.Errorf("Content-Length with Transfer-Encoding: %v %v, want 400", resp, err)
	}

	// Four held connections, then a fifth from the same address: 503.
	time.Sleep(100 * time.Millisecond) // the closed ones are counted out
	for range 4 {
		fmt.Fprintf(rawConn(t, srv.url), "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	}
	time.Sleep(100 * time.Millisecond)
	c = rawConn(t, srv.url)
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 503 {
		t.Errorf("a fifth connection from one address, limit 4: %v %v, want 503", resp, err)
	}
	// The held connections, sending no more of their headers, are cut too.
	time.Sleep(1500 * time.Millisecond)
	if st := status(t, "GET", srv.url+"/healthz", "", nil); st != 200 {
		t.Errorf("after the idle connections were cut: %d", st)
	}
}

// writeTestCert writes a self-signed certificate for 127.0.0.1 with serial
// number serial, and its key.
func writeTestCert(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile+".new", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile+".new", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	os.Rename(certFile+".new", certFile)
	os.Rename(keyFile+".new", keyFile)
}

// serial connects to addr over TLS and returns the certificate's serial.
func serial(t *testing.T, addr string) int64 {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// silo serve over TLS: the real Nix pushes and substitutes with the
// certificate as its CA, and SIGHUP makes the server read a renewed
// certificate without dropping anything.
func TestServeTLS(t *testing.T) {
	n := nixtest.Require(t)
	bin := nixtest.SiloBinary(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeTestCert(t, cert, key, 1)
	data := filepath.Join(dir, "data")
	silo(t, bin, "init", "--data-dir", data)
	silo(t, bin, "cache", "create", "main", "--public", "--data-dir", data)
	tok := strings.TrimSpace(silo(t, bin, "token", "create", "--cache", "main", "--push", "--data-dir", data))
	srv := startServe(t, bin, data, "--tls-cert-file", cert, "--tls-key-file", key)
	if !strings.HasPrefix(srv.url, "https://") {
		t.Fatalf("silo serve with a certificate says it listens at %s", srv.url)
	}
	addr := strings.TrimPrefix(srv.url, "https://")
	if s := serial(t, addr); s != 1 {
		t.Fatalf("certificate serial %d, want 1", s)
	}
	p := n.Build("serve-tls", `PATH=/bin:/usr/bin; echo tls > $out`)
	netrc := filepath.Join(dir, "netrc")
	os.WriteFile(netrc, []byte("machine 127.0.0.1 password "+tok+"\n"), 0o600)
	// Nix 2.8 takes its CA file from NIX_SSL_CERT_FILE over --option ssl-cert-file.
	nixTLS := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := n.Command(ctx, "nix", args...)
		cmd.Env = append(cmd.Env, "NIX_SSL_CERT_FILE="+cert)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nix %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	nixTLS("copy", "--to", srv.url+"/main?compression=zstd", "--option", "netrc-file", netrc, p)

	writeTestCert(t, cert, key, 2)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog(t, "TLS certificate read again")
	if s := serial(t, addr); s != 2 {
		t.Errorf("after SIGHUP: certificate serial %d, want 2", s)
	}
	info := silo(t, bin, "cache", "info", "main", "--data-dir", data)
	_, pub, _ := strings.Cut(info, "Public key:  ")
	pub, _, _ = strings.Cut(pub, "\n")
	dst := t.TempDir()
	nixTLS("copy", "--from", srv.url+"/main", "--to", dst, "--option", "trusted-public-keys", pub, p)
	if got, want := n.Run("nix-store", "--dump", filepath.Join(dst, p)), n.Run("nix-store", "--dump", p); got != want {
		t.Errorf("%s pulled back over TLS differs", p)
	}
	// A broken certificate on SIGHUP keeps the old one.
	os.WriteFile(cert, []byte("broken"), 0o600)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog(t, "still serving the previous one")
	if s := serial(t, addr); s != 2 {
		t.Errorf("after a failed reload: serial %d, want 2", s)
	}
}

// /metrics on the cache address answers admin tokens only; --metrics-listen
// serves everything on an address of its own.
func TestServeMetricsListen(t *testing.T) {
	bin := nixtest.SiloBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	silo(t, bin, "init", "--data-dir", data)
	silo(t, bin, "cache", "create", "secret", "--data-dir", data)
	srv := startServe(t, bin, data, "--metrics-listen", "127.0.0.1:0")
	if st := status(t, "GET", srv.url+"/metrics", "", nil); st != 401 {
		t.Errorf("anonymous /metrics on the cache address = %d, want 401", st)
	}
	srv.waitLog(t, `"msg":"serving metrics"`)
	_, rest, _ := strings.Cut(srv.logs(), `"msg":"serving metrics","url":"`)
	murl, _, _ := strings.Cut(rest, `"`)
	resp, err := http.Get(murl)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `silo_cache_paths{cache="secret"}`) || !strings.Contains(string(body), "silo_connections_refused_total 0") {
		t.Errorf("--metrics-listen %s: %s\n%.500s", murl, resp.Status, body)
	}
}

// Admin commands run in a loop beside a server answering 16 connections
// of narinfo lookups: not one request fails (bench/admin.sh measures it
// at length).
func TestServeAdminCommandsBesideLoad(t *testing.T) {
	bin := nixtest.SiloBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	silo(t, bin, "init", "--data-dir", data)
	silo(t, bin, "cache", "create", "main", "--public", "--data-dir", data)
	srv := startServe(t, bin, data)
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := fmt.Sprintf("%s/main/%032d.narinfo", srv.url, i)
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(u)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != 404 {
					failed.Add(1)
					if err == nil {
						err = fmt.Errorf("status %s", resp.Status)
					}
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for i := range 6 {
		name := fmt.Sprint("c", i)
		silo(t, bin, "cache", "create", name, "--data-dir", data)
		tok := strings.TrimSpace(silo(t, bin, "token", "create", "--cache", name, "--push", "--data-dir", data))
		silo(t, bin, "token", "list", "--data-dir", data)
		silo(t, bin, "token", "revoke", strings.Split(tok, "_")[1], "--data-dir", data)
		silo(t, bin, "cache", "list", "--data-dir", data)
		silo(t, bin, "cache", "info", name, "--data-dir", data)
	}
	close(stop)
	wg.Wait()
	tr.CloseIdleConnections()
	t.Logf("%d lookups answered beside 36 admin commands, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d of %d lookups failed beside admin commands (first: %v)\n%s", failed.Load(), ok.Load()+failed.Load(), firstErr.Load(), srv.logs())
	}
}

// silo publish listens on loopback by default; at start it prints its
// public key and the nix.conf lines clients need; it logs requests as
// silo serve does; a unix socket gets --socket-mode.
func TestPublishStartAndLog(t *testing.T) {
	nixtest.Require(t)
	bin := nixtest.SiloBinary(t)
	code, stdout, _ := runCLI(t, nil, "publish", "--help")
	if code != 0 || !strings.Contains(stdout, "(default 127.0.0.1:5000)") {
		t.Errorf("publish --help does not show a loopback default:\n%s", stdout)
	}
	dir := t.TempDir()
	key, _ := signature.GenerateKey("pub-test-1", rand.Reader)
	keyFile := filepath.Join(dir, "key.sec")
	os.WriteFile(keyFile, []byte(key.String()+"\n"), 0o600)
	cmd := exec.Command(bin, "publish", "--listen", "127.0.0.1:0", "--signing-key-file", keyFile, "--log-level", "debug", "--max-connections-per-ip", "3")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var mu sync.Mutex
	var out strings.Builder
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if _, u, ok := strings.Cut(sc.Text(), "silo publish: serving /nix/store at "); ok {
				urlc <- u
			}
		}
	}()
	var url string
	select {
	case url = <-urlc:
	case <-time.After(10 * time.Second):
		t.Fatal("silo publish did not say where it listens")
	}
	if st := status(t, "GET", url+"/nix-cache-info", "", nil); st != 200 {
		t.Errorf("nix-cache-info = %d", st)
	}
	// Behind the same guard as silo serve: past 3 connections from one
	// address, a 503.
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	for range 3 {
		fmt.Fprintf(rawConn(t, url), "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n")
	}
	time.Sleep(100 * time.Millisecond)
	c := rawConn(t, url)
	fmt.Fprintf(c, "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 503 {
		t.Errorf("a fourth connection to publish from one address, limit 3: %v %v, want 503", resp, err)
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	got := out.String()
	mu.Unlock()
	for _, want := range []string{
		"silo publish: public key " + key.Public().String(),
		"substituters = " + url,
		"trusted-public-keys = " + key.Public().String(),
		"loopback only",
		"level=INFO msg=request id=", "method=GET path=/nix-cache-info status=200",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("publish's output lacks %q:\n%s", want, got)
		}
	}

	sock := filepath.Join(dir, "publish.sock")
	cmd2 := exec.Command(bin, "publish", "--listen", "unix:"+sock, "--socket-mode", "0660", "--socket-group", fmt.Sprint(os.Getgid()))
	if err := cmd2.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd2.Process.Kill(); cmd2.Wait() })
	var fi os.FileInfo
	for range 100 {
		if fi, _ = os.Stat(sock); fi != nil && fi.Mode().Perm() == 0o660 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fi == nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("publish's unix socket: %v, want mode 0660", fi)
	}
}
