// Package pgtest starts a throwaway PostgreSQL cluster for tests: Debian's
// own server binaries (initdb, postgres), run as an unprivileged user
// (nobody when the tests run as root) on a data directory in a temporary
// directory, listening only on a unix socket there. One cluster serves
// the whole test binary; every New call gets a database of its own.
//
// A package whose tests use it stops the cluster from TestMain:
//
//	func TestMain(m *testing.M) { code := m.Run(); pgtest.Stop(); os.Exit(code) }
//
// Missing PostgreSQL skips a test on a developer machine and fails it when
// CI is set (./test.sh installs it).
package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a running PostgreSQL server.
type Cluster struct {
	dir     string // holds data/ and the socket
	cmd     *exec.Cmd
	done    chan struct{}
	logFile *os.File
}

var (
	mu       sync.Mutex
	shared   *Cluster
	startErr error
	dbSeq    atomic.Int64
)

// Binaries returns the directory holding initdb and postgres, or an error
// naming the fix.
func Binaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("postgres"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL is not installed (apt-get install -y postgresql, or run ./test.sh)")
}

func version(binDir string) int {
	var v int
	fmt.Sscanf(filepath.Base(filepath.Dir(binDir)), "%d", &v)
	return v
}

// Require skips t (or fails it under CI) when PostgreSQL is not installed.
func Require(t testing.TB) {
	t.Helper()
	if _, err := Binaries(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %v", err)
		}
		t.Skip(err)
	}
}

// New returns the URL of a new, empty database in the shared cluster,
// starting the cluster on first use. The database is dropped when t ends.
func New(t testing.TB) string {
	t.Helper()
	Require(t)
	c, err := sharedCluster()
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	return c.NewDatabase(t)
}

// StartT starts a cluster of t's own, stopped when t ends (for a test
// that cannot share the package's cluster, or a package without TestMain).
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	Require(t)
	c, err := Start(opts)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// NewDatabase creates a new, empty database in c and returns its URL. It
// is dropped when t ends.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	return c.URL(name)
}

// Stop stops the shared cluster, if one was started, and removes its files.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	if shared != nil {
		shared.Stop()
		shared = nil
	}
}

func sharedCluster() (*Cluster, error) {
	mu.Lock()
	defer mu.Unlock()
	if shared == nil && startErr == nil {
		shared, startErr = Start(Options{})
	}
	return shared, startErr
}

// Options configure Start.
type Options struct {
	// Durable keeps fsync and synchronous commits on, as in production
	// (for benchmarks); tests run faster without.
	Durable bool
	// Settings are extra postgres -c settings, "name=value".
	Settings []string
}

// Start initialises and starts a new cluster in a new temporary directory.
func Start(opts Options) (*Cluster, error) {
	bin, err := Binaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "silo-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	// The server runs as nobody when we are root: it refuses to run as root.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(dir, 65534, 65534); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initArgs := []string{"-D", data, "-U", "silo", "--auth=trust", "--encoding=UTF8", "--locale=C"}
	if !opts.Durable {
		initArgs = append(initArgs, "--no-sync")
	}
	if out, err := unprivileged(filepath.Join(bin, "initdb"), initArgs...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	args := []string{"-D", data, "-k", dir, "-c", "listen_addresses=", "-c", "max_connections=300",
		"-c", "shared_buffers=64MB", "-c", "log_min_messages=warning"}
	if !opts.Durable {
		// Tests check that nothing else writes (no background ANALYZE),
		// and need no durability.
		args = append(args, "-c", "autovacuum=off",
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	for _, s := range opts.Settings {
		args = append(args, "-c", s)
	}
	c.cmd = unprivileged(filepath.Join(bin, "postgres"), args...)
	if c.logFile, err = os.Create(filepath.Join(dir, "postgres.log")); err != nil {
		return nil, err
	}
	c.cmd.Stdout, c.cmd.Stderr = c.logFile, c.logFile
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := c.exec(ctx, "SELECT 1")
		if err == nil {
			break
		}
		select {
		case <-c.done:
			log, _ := os.ReadFile(c.logFile.Name())
			return nil, fmt.Errorf("postgres exited: %s", log)
		case <-ctx.Done():
			log, _ := os.ReadFile(c.logFile.Name())
			return nil, fmt.Errorf("postgres did not accept connections within 30s (%v): %s", err, log)
		case <-time.After(50 * time.Millisecond):
		}
	}
	ok = true
	return c, nil
}

// unprivileged returns a command that runs as nobody when we are root.
func unprivileged(name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		// Should the test binary die without Stop, the server follows it.
		cmd = exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--pdeathsig", "SIGQUIT", "--", name}, args...)...)
	} else {
		cmd = exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGQUIT}
		return withEnv(cmd)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	return withEnv(cmd)
}

func withEnv(cmd *exec.Cmd) *exec.Cmd {
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=/"}
	return cmd
}

// URL returns the connection URL of database db (over the unix socket).
func (c *Cluster) URL(db string) string {
	return "postgres:///" + db + "?host=" + c.dir + "&user=silo&sslmode=disable"
}

// Dir returns the cluster's directory (data/, the socket, postgres.log).
func (c *Cluster) Dir() string { return c.dir }

func (c *Cluster) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// Stop stops the server (fast shutdown) and removes the directory.
func (c *Cluster) Stop() {
	if c.cmd != nil && c.cmd.Process != nil {
		// SIGINT is PostgreSQL's fast shutdown: clients are disconnected.
		c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
	}
	if c.logFile != nil {
		c.logFile.Close()
	}
	os.RemoveAll(c.dir)
}

// Log returns what the server logged so far.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
	return strings.TrimSpace(string(b))
}
