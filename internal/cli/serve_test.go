package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/nixtest"
)

// server is a running silo serve subprocess.
type server struct {
	cmd *exec.Cmd
	url string
	mu  sync.Mutex
	log bytes.Buffer
}

func (s *server) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// waitLog waits until the server has logged a line containing want.
func (s *server) waitLog(t *testing.T, want string) {
	t.Helper()
	for range 200 {
		if strings.Contains(s.logs(), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("the server never logged %q:\n%s", want, s.logs())
}

func startServe(t *testing.T, bin, dataDir string, extra ...string) *server {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-format", "json"}, extra...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		s.mu.Lock()
		s.log.WriteString(lines.Text() + "\n")
		s.mu.Unlock()
		if strings.Contains(lines.Text(), `"msg":"silo serve listening"`) {
			_, rest, _ := strings.Cut(lines.Text(), `"url":"`)
			s.url, _, _ = strings.Cut(rest, `"`)
			break
		}
	}
	if s.url == "" {
		t.Fatalf("silo serve did not say where it listens:\n%s", s.logs())
	}
	go func() {
		for lines.Scan() {
			s.mu.Lock()
			s.log.WriteString(lines.Text() + "\n")
			s.mu.Unlock()
		}
	}()
	return s
}

func silo(t *testing.T, bin string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("silo %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func status(t *testing.T, method, url, token string, body io.Reader) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	if token != "" {
		req.SetBasicAuth("", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// bigNAR is a NAR of one file of size random bytes, and its Nix-style URL.
func bigNAR(t *testing.T, size int) ([]byte, string) {
	var buf bytes.Buffer
	w := nar.NewWriter(&buf)
	if err := w.WriteHeader(&nar.Header{Type: nar.TypeRegular, Size: int64(size)}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	rand.Read(data)
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), "nar/" + hash.Sum(hash.SHA256, buf.Bytes()).Nix32() + ".nar"
}

// Killing the server in the middle of an upload leaves nothing visible;
// after a restart the upload can be retried, and Nix pushes and pulls.
func TestServeKilledMidUpload(t *testing.T) {
	n := nixtest.Require(t)
	bin := nixtest.SiloBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	silo(t, bin, "init", "--data-dir", data)
	silo(t, bin, "cache", "create", "main", "--public", "--data-dir", data)
	tok := strings.TrimSpace(silo(t, bin, "token", "create", "--cache", "main", "--push", "--data-dir", data))
	srv := startServe(t, bin, data)

	body, url := bigNAR(t, 8<<20)
	host := strings.TrimPrefix(srv.url, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest("PUT", srv.url, nil)
	req.SetBasicAuth("", tok)
	fmt.Fprintf(conn, "PUT /main/%s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n",
		url, host, req.Header.Get("Authorization"), len(body))
	conn.Write(body[:len(body)/2])
	// Wait until the server is writing the upload, then kill it.
	tmp := filepath.Join(data, "blobs", ".tmp")
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir(tmp)
		if len(ents) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never started writing the upload:\n%s", srv.logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.cmd.Process.Signal(syscall.SIGKILL)
	srv.cmd.Wait()

	// Nothing but the temporary file exists.
	filepath.WalkDir(filepath.Join(data, "blobs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.Contains(p, "/.tmp/") {
			t.Errorf("killed upload left a visible blob %s", p)
		}
		return nil
	})
	if out := silo(t, bin, "cache", "list", "--data-dir", data); !strings.Contains(out, "main") || !strings.Contains(out, " 0 B") {
		t.Errorf("cache list after the killed upload:\n%s", out)
	}

	srv = startServe(t, bin, data)
	srv.waitLog(t, "removed unfinished uploads")
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("restart left %d unfinished uploads in %s", len(ents), tmp)
	}
	if st := status(t, "HEAD", srv.url+"/main/"+url, "", nil); st != 404 {
		t.Errorf("HEAD of the killed upload after restart = %d, want 404", st)
	}
	if st := status(t, "PUT", srv.url+"/main/"+url, tok, bytes.NewReader(body)); st != 200 {
		t.Errorf("retried upload = %d, want 200\n%s", st, srv.logs())
	}
	if st := status(t, "HEAD", srv.url+"/main/"+url, "", nil); st != 200 {
		t.Errorf("HEAD of the retried upload = %d, want 200", st)
	}

	// The real Nix pushes and pulls through the restarted server.
	p := n.Build("serve-killed", `PATH=/bin:/usr/bin; head -c 1000000 /dev/urandom > $out`)
	netrc := filepath.Join(t.TempDir(), "netrc")
	os.WriteFile(netrc, []byte("machine 127.0.0.1 password "+tok+"\n"), 0o600)
	n.Run("nix", "copy", "--to", srv.url+"/main?compression=zstd", "--option", "netrc-file", netrc, p)
	info := silo(t, bin, "cache", "info", "main", "--data-dir", data)
	_, key, _ := strings.Cut(info, "Public key:  ")
	key, _, _ = strings.Cut(key, "\n")
	dst := t.TempDir()
	n.Run("nix", "copy", "--from", srv.url+"/main", "--to", dst, "--option", "trusted-public-keys", key, p)
	if got, want := n.Run("nix-store", "--dump", filepath.Join(dst, p)), n.Run("nix-store", "--dump", p); got != want {
		t.Errorf("%s pulled back differs", p)
	}
}

// Admin commands take effect at once while the server runs, and SIGTERM
// stops it cleanly.
func TestServeAdminWhileRunning(t *testing.T) {
	bin := nixtest.SiloBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	srv := startServe(t, bin, data)
	srv.waitLog(t, "silo cache create main")
	if st := status(t, "GET", srv.url+"/team/nix-cache-info", "", nil); st != 404 {
		t.Errorf("cache before creation = %d, want 404", st)
	}
	out := silo(t, bin, "cache", "create", "team", "--data-dir", data, "--priority", "30")
	// The URL is the one the server recorded: where it listens.
	for _, want := range []string{"extra-substituters = " + srv.url + "/team", "extra-trusted-public-keys = ", "netrc-file", "machine 127.0.0.1 password"} {
		if !strings.Contains(out, want) {
			t.Errorf("cache create output lacks %q:\n%s", want, out)
		}
	}
	if st := status(t, "GET", srv.url+"/team/nix-cache-info", "", nil); st != 401 {
		t.Errorf("new private cache without token = %d, want 401", st)
	}
	tok := strings.TrimSpace(silo(t, bin, "token", "create", "--cache", "team", "--pull", "--expires", "1h", "--data-dir", data))
	if st := status(t, "GET", srv.url+"/team/nix-cache-info", tok, nil); st != 200 {
		t.Errorf("new token = %d, want 200", st)
	}
	list := silo(t, bin, "token", "list", "--data-dir", data)
	id := strings.Split(tok, "_")[1]
	if !strings.Contains(list, id) || strings.Contains(list, tok) {
		t.Errorf("token list shows the ID and never the secret:\n%s", list)
	}
	silo(t, bin, "token", "revoke", id, "--data-dir", data)
	if st := status(t, "GET", srv.url+"/team/nix-cache-info", tok, nil); st != 401 {
		t.Errorf("revoked token = %d, want 401", st)
	}
	silo(t, bin, "cache", "delete", "team", "--yes", "--data-dir", data)
	if st := status(t, "GET", srv.url+"/team/nix-cache-info", "", nil); st != 404 {
		t.Errorf("deleted cache = %d, want 404", st)
	}
	// A second server on the same data directory is refused.
	cmd := exec.Command(bin, "serve", "--data-dir", data, "--listen", "127.0.0.1:0")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "another silo serve") {
		t.Errorf("second server on the same data dir: %v\n%s", err, out)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	if err := srv.cmd.Wait(); err != nil {
		t.Errorf("silo serve after SIGTERM: %v, want exit 0\n%s", err, srv.logs())
	}
}

// A unix socket listener, configured by a config file, serves the same protocol.
func TestServeUnixSocket(t *testing.T) {
	bin := nixtest.SiloBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	silo(t, bin, "init", "--data-dir", data)
	silo(t, bin, "cache", "create", "main", "--public", "--data-dir", data)
	sock := filepath.Join(t.TempDir(), "silo.sock")
	// Settings from a config file, keys named as the flags.
	cfg := filepath.Join(t.TempDir(), "silo.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen = %q\ndata-dir = %q\nmax-nar-size = \"1G\"\n", "unix:"+sock, data)), 0o644)
	cmd := exec.Command(bin, "serve", "--config", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	var resp *http.Response
	var err error
	for range 100 {
		if resp, err = client.Get("http://silo/main/nix-cache-info"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "StoreDir: /nix/store") {
		t.Errorf("nix-cache-info over unix socket = %d %q", resp.StatusCode, body)
	}
}

// SIGTERM lets a download in flight finish before the server exits.
func TestServeGracefulShutdown(t *testing.T) {
	bin := nixtest.SiloBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	silo(t, bin, "init", "--data-dir", data)
	silo(t, bin, "cache", "create", "main", "--public", "--data-dir", data)
	tok := strings.TrimSpace(silo(t, bin, "token", "create", "--cache", "main", "--push", "--data-dir", data))
	srv := startServe(t, bin, data, "--compression", "none")

	body, url := bigNAR(t, 48<<20)
	if st := status(t, "PUT", srv.url+"/main/"+url, tok, bytes.NewReader(body)); st != 200 {
		t.Fatalf("PUT NAR = %d\n%s", st, srv.logs())
	}
	hp := strings.Repeat("a", 32)
	info := fmt.Sprintf("StorePath: /nix/store/%s-big\nURL: %s\nCompression: none\nNarHash: %s\nNarSize: %d\nReferences: \n",
		hp, url, hash.Sum(hash.SHA256, body), len(body))
	if st := status(t, "PUT", srv.url+"/main/"+hp+".narinfo", tok, strings.NewReader(info)); st != 200 {
		t.Fatalf("PUT narinfo = %d\n%s", st, srv.logs())
	}
	resp, err := http.Get(srv.url + "/main/" + hp + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, narURL, _ := strings.Cut(string(served), "URL: ")
	narURL, _, _ = strings.Cut(narURL, "\n")

	resp, err = http.Get(srv.url + "/main/" + narURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.waitLog(t, "shutting down")
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(first)+len(rest) != len(body) || !bytes.Equal(append(first, rest...), body) {
		t.Errorf("download across SIGTERM: %d of %d bytes (%v)", len(first)+len(rest), len(body), err)
	}
	if err := srv.cmd.Wait(); err != nil {
		t.Errorf("silo serve after SIGTERM: %v\n%s", err, srv.logs())
	}
}
