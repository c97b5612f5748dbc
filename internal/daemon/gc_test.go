package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func storeListing(s *testStore) string {
	ents, _ := os.ReadDir(s.store)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// TestGCMatchesNix collects garbage with roots, indirect roots and
// references, and every action, as the real nix-daemon does.
func TestGCMatchesNix(t *testing.T) {
	src := t.TempDir()
	for i := range 3 {
		os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644)
	}
	sorted := func(s string) string { l := lines(s); slices.Sort(l); return strings.Join(l, "\n") }
	script := func(s *testStore) []string {
		var out []string
		f0 := strings.TrimSpace(s.run("nix-store", "--add", src+"/f0"))
		f1 := strings.TrimSpace(s.run("nix-store", "--add", src+"/f1"))
		s.run("nix-store", "--add", src+"/f2")
		dep := s.build("dep", "echo dep > $out")
		top := s.build("top", "echo $dep0 > $out", dep)
		lone := s.build("lone", "echo lone > $out")
		rootDir := filepath.Join(s.root, "roots")
		os.MkdirAll(rootDir, 0o755)
		out = append(out,
			s.run("nix-store", "--add-root", rootDir+"/top", "-r", top),
			s.run("nix-store", "--add-root", rootDir+"/f0", "-r", f0),
		)
		os.Symlink(f1, filepath.Join(s.state, "gcroots", "direct"))
		out = append(out,
			sorted(s.run("nix-store", "--gc", "--print-roots")),
			sorted(s.run("nix-store", "--gc", "--print-live")),
			sorted(s.run("nix-store", "--gc", "--print-dead")),
			sorted(s.run("nix-store", "-q", "--roots", dep)),
		)
		_, errOut, err := s.try("nix-store", "--delete", dep)
		out = append(out, fmt.Sprintf("delete live: %v %v", err != nil, strings.Contains(errOut, "since it is still alive")))
		out = append(out, s.run("nix-store", "--delete", lone), storeListing(s))
		out = append(out, s.run("nix-store", "--gc"), storeListing(s))
		os.Remove(rootDir + "/top")
		out = append(out, s.run("nix-store", "--gc", "--max-freed", "1"), s.run("nix-store", "--gc"), storeListing(s))
		os.Remove(rootDir + "/f0")
		os.Remove(filepath.Join(s.state, "gcroots", "direct"))
		out = append(out, s.run("nix-collect-garbage"), storeListing(s))
		return out
	}
	compareWithNix(t, "", script)
}

// TestGCWhileAdding collects garbage, through silo and with the real Nix
// in local mode, while a client adds paths: nothing a live connection
// added (and so holds as a temp root) is deleted; once it closes, its
// paths are garbage.
func TestGCWhileAdding(t *testing.T) {
	s := newTestStore(t, "")
	s.startSilo()
	adder := dialRaw(t, s.sock)
	var mu sync.Mutex
	var added []string
	done := make(chan error)
	go func() {
		for i := range 60 {
			p, err := adder.addFile(fmt.Sprintf("busy%d", i), []byte(fmt.Sprintf("content %d\n", i)))
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			added = append(added, p)
			mu.Unlock()
		}
		done <- nil
	}()
	for i := 0; ; i++ {
		var err error
		select {
		case err = <-done:
		default:
			if i%2 == 0 {
				s.run("nix-store", "--gc")
			} else {
				s.local("nix-store", "--gc")
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	s.run("nix-store", "--gc")
	s.local("nix-store", "--gc")
	mu.Lock()
	defer mu.Unlock()
	if len(added) != 60 {
		t.Fatalf("%d paths added", len(added))
	}
	for _, p := range added {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s, temp-rooted by a live connection, was collected: %v", p, err)
		}
	}
	if out := s.run("nix-store", append([]string{"--check-validity"}, added...)...); out != "" {
		t.Errorf("check-validity: %s", out)
	}
	adder.conn.Close()
	// The connection's temp roots are gone with it.
	for try := 0; ; try++ {
		s.run("nix-store", "--gc")
		if _, err := os.Stat(added[0]); err != nil {
			break
		}
		if try > 50 {
			t.Fatalf("%s survives its connection", added[0])
		}
	}
	for _, p := range added {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s not collected", p)
		}
	}
}

// TestAutoGC: with min-free set and (Nix's test hook) little free space,
// adding content through the daemon first collects garbage.
func TestAutoGC(t *testing.T) {
	free := filepath.Join(t.TempDir(), "free")
	os.WriteFile(free, []byte("1000\n"), 0o644)
	t.Setenv("_NIX_TEST_FREE_SPACE_FILE", free)
	s := newTestStore(t, "min-free = 1000000\nmax-free = 2000000000\nmin-free-check-interval = 0\n")
	s.startSilo()
	src := t.TempDir()
	os.WriteFile(src+"/dead", []byte("dead weight\n"), 0o644)
	dead := strings.TrimSpace(s.local("nix-store", "--add", src+"/dead"))
	os.WriteFile(src+"/new", []byte("new content\n"), 0o644)
	added := strings.TrimSpace(s.run("nix-store", "--add", src+"/new"))
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(dead); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead path %s survived the automatic collection; daemon: %s", dead, s.stderr)
		}
	}
	if _, err := os.Stat(added); err != nil {
		t.Errorf("the path being added was collected: %v", err)
	}
}
