package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/nixtest"
)

// watchFixture is a silo serve with a public cache "main" and a push token
// saved by silo login in the scratch config of n.
type watchFixture struct {
	n    *nixtest.Nix
	url  string
	key  string
	vars map[string]string
}

func newWatchFixture(t *testing.T) *watchFixture {
	n := nixtest.Require(t)
	data := filepath.Join(t.TempDir(), "data")
	runSilo(t, nil, "", "init", "--data-dir", data)
	_, info, _ := runSilo(t, nil, "", "cache", "create", "main", "--public", "--data-dir", data)
	_, key, _ := strings.Cut(info, "Public key:  ")
	key, _, _ = strings.Cut(key, "\n")
	url, _ := serveInProcess(t, data)
	_, tok, _ := runSilo(t, nil, "", "token", "create", "--cache", "main", "--push", "--data-dir", data)
	vars := nixVars(n)
	if code, _, stderr := runSilo(t, vars, tok, "login", "main", url+"/main"); code != 0 {
		t.Fatalf("login: %s", stderr)
	}
	return &watchFixture{n: n, url: url + "/main", key: key, vars: vars}
}

func (f *watchFixture) inCache(p string) bool {
	hp := strings.TrimPrefix(p, "/nix/store/")[:32]
	resp, err := http.Get(f.url + "/" + hp + ".narinfo")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// substitutes checks that the real Nix substitutes paths from the cache,
// verifying the cache's signature.
func (f *watchFixture) substitutes(t *testing.T, paths ...string) {
	t.Helper()
	args := append([]string{"copy", "--from", f.url, "--to", t.TempDir(), "--option", "trusted-public-keys", f.key}, paths...)
	if _, err := f.n.Try("nix", args...); err != nil {
		t.Errorf("nix copy --from the cache: %v", err)
	}
}

// nixFile writes a Nix file building dep and top (which refers to dep),
// fresh for this run.
func nixFile(t *testing.T, name string) string {
	nonce := nixtest.Nonce()
	expr := fmt.Sprintf(`let dep = derivation { name = "%s-dep"; system = builtins.currentSystem; builder = "/bin/sh"; nonce = %q; args = ["-c" "echo dep > $out"]; };
in derivation { name = "%s-top"; system = builtins.currentSystem; builder = "/bin/sh"; inherit dep; args = ["-c" "echo $dep > $out"]; }`, name, nonce, name)
	p := filepath.Join(t.TempDir(), name+".nix")
	os.WriteFile(p, []byte(expr), 0o644)
	return p
}

// TestWatchExec: silo watch-exec pushes what the real Nix builds while the
// command runs (closures, without .drv files), not what was there before,
// and exits with the command's code.
func TestWatchExec(t *testing.T) {
	f := newWatchFixture(t)
	pre := f.n.Build("watch-exec-pre", "echo pre > $out")
	file := nixFile(t, "watch-exec")
	var out, errb bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return f.vars[k] },
		Environ: f.n.Env}
	code := Main(context.Background(), []string{"watch-exec", "--to", "main", "--skip-signed-by", "none", "--",
		"sh", "-c", "nix-build --no-out-link " + file + " && exit 3"}, env)
	if code != 3 {
		t.Fatalf("watch-exec exit %d, want the command's 3:\n%s\n%s", code, out.String(), errb.String())
	}
	top := strings.TrimSpace(out.String())
	if !strings.HasPrefix(top, "/nix/store/") {
		t.Fatalf("nix-build printed %q", top)
	}
	refs := strings.Fields(f.n.Run("nix-store", "--query", "--references", top))
	if len(refs) != 1 {
		t.Fatalf("references of %s: %v", top, refs)
	}
	for _, p := range []string{top, refs[0]} {
		if !f.inCache(p) {
			t.Errorf("%s built under watch-exec is not in the cache:\n%s", p, errb.String())
		}
	}
	if f.inCache(pre) {
		t.Errorf("%s, built before watch-exec, was pushed", pre)
	}
	drv := strings.TrimSpace(f.n.Run("nix-store", "--query", "--deriver", top))
	if f.inCache(drv) {
		t.Errorf("the derivation %s was pushed without --include-drvs", drv)
	}
	// At least these two: paths others add to the store meanwhile are pushed too.
	var pushed int
	if _, after, ok := strings.Cut(errb.String(), "silo watch-exec: pushed "); !ok {
		t.Errorf("no summary:\n%s", errb.String())
	} else if fmt.Sscan(after, &pushed); pushed < 2 {
		t.Errorf("summary says %d paths pushed, want at least 2:\n%s", pushed, errb.String())
	}
	f.substitutes(t, top)

	// Uploads that cannot succeed make a successful command exit 1.
	errb.Reset()
	file2 := nixFile(t, "watch-exec-fail")
	code = Main(context.Background(), []string{"watch-exec", "--to", "http://127.0.0.1:1/none", "--skip-signed-by", "none", "--retries", "2",
		"nix-build", "--no-out-link", file2}, env) // no "--": the command's flags stay its own
	if code != 1 || !strings.Contains(errb.String(), "FAILED") {
		t.Errorf("watch-exec with an unreachable cache: exit %d:\n%s", code, errb.String())
	}
	if code, _, stderr := runSilo(t, f.vars, "", "watch-exec", "--to", "main"); code != 2 || !strings.Contains(stderr, "want a COMMAND") {
		t.Errorf("watch-exec without a command: %d %s", code, stderr)
	}
}

// TestWatchStore: silo watch-store, in both ways of noticing paths,
// pushes what the real Nix builds while it runs, and stops on request.
func TestWatchStore(t *testing.T) {
	f := newWatchFixture(t)
	for _, mode := range []string{"db", "inotify"} {
		t.Run(mode, func(t *testing.T) {
			pre := f.n.Build("watch-store-pre-"+mode, "echo pre > $out")
			ctx, cancel := context.WithCancel(context.Background())
			logs := &lockedBuffer{}
			env := &Env{Stdin: strings.NewReader(""), Stdout: logs, Stderr: logs, Getenv: func(k string) string { return f.vars[k] }}
			done := make(chan int, 1)
			go func() {
				done <- Main(ctx, []string{"watch-store", "--to", "main", "--watch", mode, "--interval", "100ms",
					"--skip-signed-by", "none", "--state", filepath.Join(t.TempDir(), "state")}, env)
			}()
			defer func() {
				cancel()
				if code := <-done; code != 0 {
					t.Errorf("watch-store exit %d:\n%s", code, logs.String())
				}
			}()
			waitUntil(t, "watch-store to start", func() bool { return strings.Contains(logs.String(), "watching the store") })
			top := strings.TrimSpace(f.n.Run("nix-build", "--no-out-link", nixFile(t, "watch-store-"+mode)))
			dep := strings.TrimSpace(f.n.Run("nix-store", "--query", "--references", top))
			waitUntil(t, "the build to reach the cache", func() bool { return f.inCache(top) && f.inCache(dep) })
			if f.inCache(pre) {
				t.Errorf("%s, built before watch-store, was pushed", pre)
			}
			if !strings.Contains(logs.String(), "how="+mode) {
				t.Errorf("watch-store did not use %s:\n%s", mode, logs.String())
			}
			f.substitutes(t, top)
		})
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
