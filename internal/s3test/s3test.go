// Package s3test starts a real S3 server for tests: versitygw (Versity's S3
// gateway over a POSIX directory, which checks SigV4 signatures), run as
// an unprivileged user (nobody when the tests run as root) on a temporary
// directory, listening on 127.0.0.1 with random root credentials. One
// server serves the whole test binary; every New call gets a bucket of
// its own.
//
// A package whose tests use it stops the server from TestMain:
//
//	func TestMain(m *testing.M) { code := m.Run(); s3test.Stop(); os.Exit(code) }
//
// A missing versitygw skips a test on a developer machine and fails it
// when CI is set (./test.sh installs it with go install).
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Install is the command that installs the server.
const Install = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Server is a running S3 server.
type Server struct {
	Endpoint  string // "http://127.0.0.1:PORT"
	AccessKey string
	SecretKey string
	Region    string
	dir       string
	cmd       *exec.Cmd
	done      chan struct{}
	log       *os.File
}

var (
	mu        sync.Mutex
	shared    *Server
	startErr  error
	bucketSeq atomic.Int64
)

// Binary returns the path of versitygw, or an error naming the fix. It
// looks at $SILO_VERSITYGW, $PATH, Go's bin directory and /usr/local/bin.
func Binary() (string, error) {
	if p := os.Getenv("SILO_VERSITYGW"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	if gopath := os.Getenv("GOPATH"); gopath != "" {
		dirs = append(dirs, filepath.Join(gopath, "bin"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	dirs = append(dirs, "/usr/local/bin")
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("the S3 server versitygw is not installed (%s, or run ./test.sh)", Install)
}

// Require skips t (or fails it under CI) when versitygw is not installed.
func Require(t testing.TB) {
	t.Helper()
	if _, err := Binary(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %v", err)
		}
		t.Skip(err)
	}
}

// Bucket is a fresh bucket on the shared server.
type Bucket struct {
	*Server
	Name string
}

// URL returns the s3:// URL silo's --blobs takes for the bucket.
func (b *Bucket) URL() string {
	return "s3://" + b.Name + "?endpoint=" + url.QueryEscape(b.Endpoint) + "&region=" + b.Region
}

// Env returns the environment variables that give the bucket's credentials.
func (b *Bucket) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + b.AccessKey, "AWS_SECRET_ACCESS_KEY=" + b.SecretKey}
}

// New returns a new, empty bucket on the shared server, starting the
// server on first use.
func New(t testing.TB) *Bucket {
	t.Helper()
	Require(t)
	srv, err := sharedServer()
	if err != nil {
		t.Fatalf("start the S3 server: %v", err)
	}
	return srv.NewBucket(t)
}

// StartT starts a server of t's own, stopped when t ends (for a package
// without TestMain).
func StartT(t testing.TB) *Server {
	t.Helper()
	Require(t)
	s, err := Start()
	if err != nil {
		t.Fatalf("start the S3 server: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// NewBucket creates a new, empty bucket on srv.
func (srv *Server) NewBucket(t testing.TB) *Bucket {
	t.Helper()
	name := fmt.Sprintf("silo-test-%d-%d", os.Getpid(), bucketSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Client().MakeBucket(ctx, name, minio.MakeBucketOptions{Region: srv.Region}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return &Bucket{Server: srv, Name: name}
}

// Stop stops the shared server, if one was started, and removes its files.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		shared.Stop()
		shared = nil
	}
}

func sharedServer() (*Server, error) {
	mu.Lock()
	defer mu.Unlock()
	if shared == nil && startErr == nil {
		shared, startErr = Start()
	}
	return shared, startErr
}

// Start starts a new server on a new temporary directory.
func Start() (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "silo-s3-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, done: make(chan struct{}), Region: "us-east-1",
		AccessKey: "silo" + random(8), SecretKey: random(20)}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755)
	if os.Geteuid() == 0 {
		if err := os.Chown(root, 65534, 65534); err != nil {
			return nil, err
		}
	}
	if s.log, err = os.Create(filepath.Join(dir, "versitygw.log")); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		args := []string{"--port", addr, "--region", s.Region, "--keep-alive", "--quiet", "posix", root}
		if os.Geteuid() == 0 {
			// Should the test binary die without Stop, the server follows it.
			s.cmd = exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--pdeathsig", "SIGKILL", "--", bin}, args...)...)
		} else {
			s.cmd = exec.Command(bin, args...)
			s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}
		// The root credentials go in the environment, never on a command line.
		s.cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "ROOT_ACCESS_KEY=" + s.AccessKey, "ROOT_SECRET_KEY=" + s.SecretKey}
		s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
		if err := s.cmd.Start(); err != nil {
			return nil, fmt.Errorf("start versitygw: %w", err)
		}
		s.done = make(chan struct{})
		go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(s.cmd, s.done)
		s.Endpoint = "http://" + addr
		err = s.waitReady(addr)
		if err == nil {
			break
		}
		s.kill()
		if attempt == 2 {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

func (s *Server) waitReady(addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("versitygw exited: %s", s.Log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw did not listen on %s within 30s: %s", addr, s.Log())
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func random(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Client returns a minio-go client with the root credentials, for tests
// that look at the bucket directly.
func (s *Server) Client() *minio.Client {
	u, _ := url.Parse(s.Endpoint)
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:       s.Region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		panic(err) // only on a malformed endpoint, which Start never makes
	}
	return c
}

// Core returns the low-level client (multipart uploads and the like).
func (s *Server) Core() *minio.Core { return &minio.Core{Client: s.Client()} }

// Log returns what the server logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "versitygw.log"))
	return strings.TrimSpace(string(b))
}

func (s *Server) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
}

// Stop stops the server and removes its directory.
func (s *Server) Stop() {
	s.kill()
	if s.log != nil {
		s.log.Close()
	}
	os.RemoveAll(s.dir)
}
