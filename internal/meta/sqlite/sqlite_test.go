package sqlite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/metatest"
)

func TestConformance(t *testing.T) {
	metatest.Run(t, func(t *testing.T) meta.Store {
		s, err := Open(context.Background(), filepath.Join(t.TempDir(), "silo.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// The admin commands write through their own connection while the server
// runs; the server must see their writes on its next call.
func TestTwoProcessesShareTheDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "silo.db")
	server, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	admin, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()

	if _, err := server.Token(ctx, "t1"); err == nil {
		t.Fatal("token exists before it is created")
	}
	if err := admin.CreateToken(ctx, meta.Token{ID: "t1", Hash: make([]byte, 32), CachePattern: "*", Perms: meta.PermPull}); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Token(ctx, "t1"); err != nil {
		t.Errorf("server does not see the admin's new token: %v", err)
	}
	if err := admin.DeleteToken(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Token(ctx, "t1"); err == nil {
		t.Errorf("server still sees the revoked token")
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "silo.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateCache(ctx, meta.Cache{Name: "main", SecretKey: "k"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Cache(ctx, "main"); err != nil {
		t.Errorf("cache lost across reopen: %v", err)
	}
}

// Version answers from the WAL index header while nothing is committed;
// a commit by another process, also right after a checkpoint has reset
// the WAL, must change it on the very next call.
func TestVersionSeesOtherProcessCommits(t *testing.T) {
	if os.Getenv("SILO_SQLITE_WRITER") != "" {
		t.Skip("runs as the writer process")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "silo.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.shm == nil {
		t.Fatal("the WAL index (-shm) was not opened: Version would query every time")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestVersionWriterProcess$")
	cmd.Env = append(os.Environ(), "SILO_SQLITE_WRITER="+path)
	in, _ := cmd.StdinPipe()
	outPipe, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer in.Close()
	out := bufio.NewScanner(outPipe)
	for i := range 30 {
		before, err := s.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := s.Version(ctx); again != before {
			t.Fatalf("write %d: Version changed from %d to %d with no write", i, before, again)
		}
		fmt.Fprintf(in, "%d\n", i)
		if !out.Scan() || out.Text() != fmt.Sprint("wrote ", i) {
			t.Fatalf("writer process: %q %v", out.Text(), out.Err())
		}
		after, err := s.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after == before {
			t.Fatalf("write %d by another process (checkpoint first: %v) not seen: Version still %d", i, i%3 == 0, after)
		}
		if _, err := s.Token(ctx, fmt.Sprint("t", i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
}

// A mapping whose file shrank faults; Version must then fall back to
// querying, not crash the server.
func TestVersionAfterShmFault(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, filepath.Join(dir, "silo.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Swap in a mapping of a file of our own, then truncate that file.
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(other)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := mapFile(f)
	if m == nil {
		t.Fatal("cannot map a file of 8192 bytes")
	}
	syscall.Munmap(s.shm)
	s.shm = m
	if err := os.Truncate(other, 0); err != nil {
		t.Fatal(err)
	}
	before, err := s.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.shm != nil {
		t.Fatal("the faulting mapping is still used")
	}
	if err := s.CreateToken(ctx, meta.Token{ID: "t", Hash: make([]byte, 32), CachePattern: "*", Perms: meta.PermPull}); err != nil {
		t.Fatal(err)
	}
	if after, err := s.Version(ctx); err != nil || after == before {
		t.Errorf("Version after a write, without the mapping: %d, %v (before: %d)", after, err, before)
	}
}

// TestVersionWriterProcess is the other process of
// TestVersionSeesOtherProcessCommits: for each line it reads it creates a
// token (after a truncating checkpoint every third time) and says so.
func TestVersionWriterProcess(t *testing.T) {
	path := os.Getenv("SILO_SQLITE_WRITER")
	if path == "" {
		t.Skip("helper process of TestVersionSeesOtherProcessCommits")
	}
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in := bufio.NewScanner(os.Stdin)
	for i := 0; in.Scan(); i++ {
		if i%3 == 0 {
			if _, err := s.db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CreateToken(ctx, meta.Token{ID: fmt.Sprint("t", i), Hash: make([]byte, 32), CachePattern: "*", Perms: meta.PermPull}); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("wrote %d\n", i)
	}
}

func BenchmarkVersion(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "silo.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for b.Loop() {
		if _, err := s.Version(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// Admin commands open the database, write and close it while the server
// reads it under load. The server must never see an error: no process
// may drop the server's locks on the WAL index (which would let the
// admin process, thinking itself alone, truncate or delete it under the
// server's mappings).
func TestAdminProcessesBesideBusyServer(t *testing.T) {
	if os.Getenv("SILO_SQLITE_ADMIN") != "" {
		t.Skip("runs as the admin process")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "silo.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateCache(ctx, meta.Cache{Name: "main", SecretKey: "k", StoreDir: "/nix/store"}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errc := make(chan error, 64)
	var reads atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := s.Version(ctx)
				if err == nil {
					_, err = s.Cache(ctx, "main")
				}
				if err == nil {
					_, err = s.Path(ctx, 1, "00000000000000000000000000000000")
					if errors.Is(err, meta.ErrNotFound) {
						err = nil
					}
				}
				if err != nil {
					select {
					case errc <- err:
					default:
					}
				}
				reads.Add(1)
			}
		}()
	}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestAdminProcess$")
		cmd.Env = append(os.Environ(), "SILO_SQLITE_ADMIN="+path, fmt.Sprint("SILO_SQLITE_ADMIN_ROUND=", round))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("admin process: %v\n%s", err, out)
		}
	}
	close(stop)
	wg.Wait()
	close(errc)
	n := 0
	for err := range errc {
		n++
		if n <= 5 {
			t.Errorf("server read failed while admin processes ran: %v", err)
		}
	}
	t.Logf("%d server reads beside 3 x 30 admin processes", reads.Load())
}

// TestAdminProcess is the helper of TestAdminProcessesBesideBusyServer:
// 30 times it opens the database, writes, checkpoints and closes it, as
// silo token create and silo cache create do.
func TestAdminProcess(t *testing.T) {
	path := os.Getenv("SILO_SQLITE_ADMIN")
	if path == "" {
		t.Skip("helper process of TestAdminProcessesBesideBusyServer")
	}
	ctx := context.Background()
	for i := range 30 {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("a%s-%d", os.Getenv("SILO_SQLITE_ADMIN_ROUND"), i)
		if err := s.CreateToken(ctx, meta.Token{ID: id, Hash: make([]byte, 32), CachePattern: "*", Perms: meta.PermPull}); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 {
			if _, err := s.db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// The database holds every cache's secret key: whatever the umask, a new
// one is readable by its owner only, and so are its -wal and -shm files.
func TestNewDatabaseIsPrivate(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(context.Background(), filepath.Join(dir, "silo.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateToken(context.Background(), meta.Token{ID: "t", Hash: make([]byte, 32), CachePattern: "*", Perms: meta.PermPull}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "silo.db", "silo.db-wal", "silo.db-shm"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v under umask 0; want no access for group and others", filepath.Join(dir, name), fi.Mode().Perm())
		}
	}
}

// A database of schema 1 (before log_usage) counts its existing logs once
// migrated, so the limits hold for them.
func TestMigrationCountsExistingLogs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "silo.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.CreateCache(ctx, meta.Cache{Name: "c", SecretKey: "k", StoreDir: "/nix/store"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.PutLog(ctx, meta.Log{CacheID: c.ID, Drv: fmt.Sprint(i, ".drv"), BlobKey: "log/x", Size: 100}, meta.LogLimits{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.db.ExecContext(ctx, `DROP TABLE log_usage; PRAGMA user_version = 1`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.PutLog(ctx, meta.Log{CacheID: c.ID, Drv: "3.drv", BlobKey: "log/x", Size: 1}, meta.LogLimits{Count: 3})
	if !errors.Is(err, meta.ErrLimit) {
		t.Errorf("a fourth log under a limit of 3, after migrating: err = %v, want ErrLimit", err)
	}
	if err := s.PutLog(ctx, meta.Log{CacheID: c.ID, Drv: "3.drv", BlobKey: "log/x", Size: 1}, meta.LogLimits{Bytes: 301}); err != nil {
		t.Errorf("within the byte limit after migrating: %v", err)
	}
}
