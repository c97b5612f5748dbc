package cache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/nixtest"
)

// nixEnv is a server that the real Nix pushes to with a netrc token.
type nixEnv struct {
	*testEnv
	n     *nixtest.Nix
	netrc string
}

func newNixEnv(t *testing.T) *nixEnv {
	n := nixtest.Require(t)
	e := newEnv(t, Options{})
	tok := e.token("*", meta.PermPush, time.Time{})
	netrc := filepath.Join(t.TempDir(), "netrc")
	if err := os.WriteFile(netrc, []byte("machine 127.0.0.1 password "+tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &nixEnv{testEnv: e, n: n, netrc: netrc}
}

func (e *nixEnv) url(cache string) string { return e.ts.URL + "/" + cache }

func (e *nixEnv) publicKey(cache string) string {
	c, err := e.meta.Cache(context.Background(), cache)
	if err != nil {
		e.t.Fatal(err)
	}
	k, _ := parseKey(c)
	return k.Public().String()
}

// buildClosure builds a dependency and a top path that refers to it.
func buildClosure(n *nixtest.Nix) (dep, top string) {
	dep = n.Build("silo-dep", `echo dependency > $out`)
	top = n.Build("silo-top", `PATH=/bin:/usr/bin
mkdir -p $out/bin $out/share
echo $dep0 > $out/share/ref
echo $out > $out/share/self
printf '#!/bin/sh\necho hi\n' > $out/bin/hello
chmod +x $out/bin/hello
ln -s ../share/ref $out/bin/link
head -c 300000 /dev/urandom > $out/share/blob`, dep)
	return dep, top
}

// Push with nix copy in each compression, then substitute into an empty
// store: the signature verifies and the tree is identical.
func TestNixPushPull(t *testing.T) {
	e := newNixEnv(t)
	n := e.n
	dep, top := buildClosure(n)
	for _, comp := range []string{"zstd", "xz", "none", "bzip2"} {
		t.Run(comp, func(t *testing.T) {
			name := "c-" + comp
			e.cache(name, false)
			n.Run("nix", "copy", "--to", e.url(name)+"?compression="+comp, "--option", "netrc-file", e.netrc, top)
			store := filepath.Join(t.TempDir(), "store")
			n.Run("nix", "copy", "--from", e.url(name), "--to", store, "--option", "netrc-file", e.netrc,
				"--option", "trusted-public-keys", e.publicKey(name), top)
			for _, p := range []string{dep, top} {
				want := n.Run("nix-store", "--dump", p)
				got := n.Run("nix-store", "--dump", filepath.Join(store, p))
				if got != want {
					t.Errorf("%s substituted from the %s cache differs from the original", p, comp)
				}
			}
		})
	}
}

func TestNixRefusals(t *testing.T) {
	e := newNixEnv(t)
	n := e.n
	_, top := buildClosure(n)
	e.cache("priv", false)
	n.Run("nix", "copy", "--to", e.url("priv")+"?compression=zstd", "--option", "netrc-file", e.netrc, top)

	t.Run("wrong key", func(t *testing.T) {
		// The right key's bytes under another name, and another key entirely.
		right := e.publicKey("priv")
		e.cache("other", true)
		for _, key := range []string{"impostor-1:" + strings.SplitN(right, ":", 2)[1], e.publicKey("other")} {
			_, err := n.Try("nix", "copy", "--from", e.url("priv"), "--to", filepath.Join(t.TempDir(), "s"),
				"--option", "netrc-file", e.netrc, "--option", "trusted-public-keys", key, top)
			if err == nil || !strings.Contains(err.Error(), "lacks a valid signature") {
				t.Errorf("substituting with key %s: %v, want a refusal for lacking a valid signature", key, err)
			}
		}
	})
	t.Run("private without token", func(t *testing.T) {
		_, err := n.Try("nix", "copy", "--from", e.url("priv"), "--to", filepath.Join(t.TempDir(), "s"),
			"--option", "trusted-public-keys", e.publicKey("priv"), top)
		if err == nil {
			t.Errorf("substituting from a private cache without a token succeeded")
		}
	})
	t.Run("push without token", func(t *testing.T) {
		e.cache("pub", true)
		_, err := n.Try("nix", "copy", "--to", e.url("pub")+"?compression=zstd", top)
		if err == nil {
			t.Errorf("pushing without a token succeeded")
		}
	})
}

// nix path-info, nix store ls and nix store verify work against the cache.
func TestNixQueries(t *testing.T) {
	e := newNixEnv(t)
	n := e.n
	dep, top := buildClosure(n)
	e.cache("main", false)
	n.Run("nix", "copy", "--to", e.url("main")+"?compression=zstd", "--option", "netrc-file", e.netrc, top)
	auth := []string{"--option", "netrc-file", e.netrc}

	out := n.Run("nix", append([]string{"path-info", "--store", e.url("main"), "-r", top}, auth...)...)
	for _, p := range []string{dep, top} {
		if !strings.Contains(out, p) {
			t.Errorf("nix path-info -r lacks %s:\n%s", p, out)
		}
	}
	out = n.Run("nix", append([]string{"store", "ls", "--store", e.url("main"), "-R", top}, auth...)...)
	for _, f := range []string{"./bin/hello", "./bin/link", "./share/ref", "./share/blob"} {
		if !strings.Contains(out, f) {
			t.Errorf("nix store ls -R lacks %s:\n%s", f, out)
		}
	}
	n.Run("nix", append([]string{"store", "verify", "--store", e.url("main"), "--trusted-public-keys", e.publicKey("main"), "-r", top}, auth...)...)
	if _, err := n.Try("nix", append([]string{"store", "verify", "--store", e.url("main"), "--trusted-public-keys", e.publicKey("main"), "--sigs-needed", "2", top}, auth...)...); err == nil {
		t.Errorf("nix store verify --sigs-needed 2 passed with one signature")
	}
}

// Eight nix copy processes push the same closure at once: all succeed and
// each NAR is stored once.
func TestNixConcurrentPush(t *testing.T) {
	e := newNixEnv(t)
	n := e.n
	paths := []string{n.Build("c0", `echo zero > $out`)}
	for i := 1; i < 5; i++ {
		paths = append(paths, n.Build(fmt.Sprintf("c%d", i), `PATH=/bin:/usr/bin; mkdir $out; echo $dep0 > $out/prev; head -c 100000 /dev/urandom > $out/data`, paths[i-1]))
	}
	top := paths[len(paths)-1]
	e.cache("main", true)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			// Nix's default negative narinfo TTL (the test default is 0):
			// with 0, Nix 2.8 re-checks each path right before uploading it,
			// finds that another client has just pushed it, and crashes
			// draining its NAR source ("coroutine has finished"), a client
			// bug the default setting avoids.
			cmd := n.Command(ctx, "nix", "copy", "--to", e.url("main")+"?compression=zstd", "--option", "netrc-file", e.netrc,
				"--option", "narinfo-cache-negative-ttl", "3600", top)
			cmd.Env = append(cmd.Env, "XDG_CACHE_HOME="+t.TempDir())
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("%v\n%s", err, out)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("nix copy #%d: %v", i, err)
		}
	}
	var nars []string
	for _, k := range e.blobKeys() {
		if strings.HasPrefix(k, "nar/") {
			nars = append(nars, k)
		}
	}
	if len(nars) != len(paths) {
		t.Errorf("%d paths pushed 8 times are stored as %d NAR files: %v", len(paths), len(nars), nars)
	}
	c, _ := e.meta.Cache(context.Background(), "main")
	var parts []string
	for _, p := range paths {
		parts = append(parts, strings.TrimPrefix(p, "/nix/store/")[:32])
	}
	if missing, err := e.meta.Missing(context.Background(), c.ID, parts); err != nil || len(missing) != 0 {
		t.Errorf("after the concurrent pushes the cache lacks %v (%v)", missing, err)
	}
}

// A content-addressed path (nix-store --add) carries a CA field, which
// the server checks against the store path before accepting it.
func TestNixContentAddressed(t *testing.T) {
	e := newNixEnv(t)
	n := e.n
	dir := filepath.Join(t.TempDir(), "ca-src")
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "file"), []byte(nixtest.Nonce()), 0o644)
	p := strings.TrimSpace(n.Run("nix-store", "--add", dir))
	e.cache("main", true)
	n.Run("nix", "copy", "--to", e.url("main")+"?compression=zstd", "--option", "netrc-file", e.netrc, p)
	st, info := e.do("GET", "/main/"+strings.TrimPrefix(p, "/nix/store/")[:32]+".narinfo", "", nil)
	if st != 200 || !strings.Contains(info, "CA: fixed:r:sha256:") {
		t.Fatalf("narinfo of a content-addressed path = %d:\n%s", st, info)
	}
	store := filepath.Join(t.TempDir(), "store")
	n.Run("nix", "copy", "--from", e.url("main"), "--to", store, p)
	if got, want := n.Run("nix-store", "--dump", filepath.Join(store, p)), n.Run("nix-store", "--dump", p); got != want {
		t.Errorf("content-addressed path pulled back differs")
	}
}

// nix store copy-log uploads a build log; nix log reads it back.
func TestNixBuildLog(t *testing.T) {
	e := newNixEnv(t)
	n := e.n
	marker := "silo-log-marker-" + nixtest.Nonce()
	out := n.Build("logged", `echo `+marker+`; echo done > $out`)
	e.cache("main", false)
	auth := []string{"--option", "netrc-file", e.netrc}
	// nix log finds the derivation through the output's narinfo.
	n.Run("nix", append([]string{"copy", "--to", e.url("main") + "?compression=zstd", out}, auth...)...)
	n.Run("nix", append([]string{"store", "copy-log", "--to", e.url("main"), out}, auth...)...)
	got := n.Run("nix", append([]string{"log", "--store", e.url("main"), out}, auth...)...)
	if !strings.Contains(got, marker) {
		t.Errorf("nix log from the cache = %q, want it to contain %q", got, marker)
	}
}
