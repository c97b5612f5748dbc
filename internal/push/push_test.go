package push_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/push"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// closure builds a small closure: top → mid → leaf, and top → big (a file
// large enough to spill out of memory while uploading).
type closure struct {
	n                   *nixtest.Nix
	leaf, mid, big, top storepath.Path
	secretFile, pubKey  string
	key                 signature.SecretKey
}

func newClosure(t *testing.T) *closure {
	n := nixtest.Require(t)
	c := &closure{n: n}
	parse := func(s string) storepath.Path {
		p, err := storepath.DefaultDir.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := n.Build("leaf", "echo leaf > $out")
	mid := n.Build("mid", "echo $dep0 > $out", leaf)
	big := n.Build("big", "/usr/bin/head -c 12000000 /dev/urandom > $out")
	top := n.Build("top", "/bin/mkdir $out; echo $dep0 > $out/a; echo $dep1 > $out/b; /bin/ln -s $dep0 $out/link", mid, big)
	c.leaf, c.mid, c.big, c.top = parse(leaf), parse(mid), parse(big), parse(top)
	dir := t.TempDir()
	c.secretFile = filepath.Join(dir, "sec")
	pub := filepath.Join(dir, "pub")
	n.Run("nix-store", "--generate-binary-cache-key", "silo-test-1", c.secretFile, pub)
	b, _ := os.ReadFile(pub)
	c.pubKey = strings.TrimSpace(string(b))
	var err error
	if c.key, err = signature.LoadSecretKeyFile(c.secretFile); err != nil {
		t.Fatal(err)
	}
	return c
}

func openStore(t *testing.T) localstore.Store {
	s, err := localstore.Open(context.Background(), storepath.DefaultDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func doPush(t *testing.T, target push.Target, key *signature.SecretKey, skip *signature.KeySet, roots ...storepath.Path) (push.Result, error) {
	t.Helper()
	return push.Push(context.Background(), roots, push.Options{
		Store:        openStore(t),
		Uploader:     &push.Uploader{Target: target, SigningKey: key},
		Jobs:         4,
		SkipSignedBy: skip,
	})
}

// nixCopyFrom substitutes root from the cache into a fresh chroot store,
// checking signatures with only pubKey trusted.
func (c *closure) nixCopyFrom(t *testing.T, cacheURL, pubKey string, root storepath.Path) error {
	_, err := c.n.Try("nix", "copy", "--from", cacheURL, "--to", t.TempDir(),
		"--option", "trusted-public-keys", pubKey, root.String())
	return err
}

func TestPushFileTargetNixReads(t *testing.T) {
	c := newClosure(t)
	cacheDir := t.TempDir()
	target, err := push.OpenTarget("file://"+cacheDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := doPush(t, target, &c.key, nil, c.top)
	if err != nil {
		t.Fatal(err)
	}
	if res.Closure != 4 || res.Uploaded != 4 || res.Present != 0 {
		t.Errorf("first push: %+v, want 4 paths uploaded", res)
	}
	if err := c.nixCopyFrom(t, "file://"+cacheDir, c.pubKey, c.top); err != nil {
		t.Errorf("nix copy --from the pushed cache: %v", err)
	}
	// Nix refuses the same cache when the key is not trusted: the check is real.
	if err := c.nixCopyFrom(t, "file://"+cacheDir, "other-1:"+strings.Repeat("A", 43)+"=", c.top); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Errorf("nix copy with an untrusted key: %v, want a signature error", err)
	}
	// The narinfos are what Nix expects, and nothing is left half-written.
	ni := readNarInfo(t, filepath.Join(cacheDir, c.big.HashPart()+".narinfo"))
	if ni.Compression != "zstd" || !strings.HasPrefix(ni.URL, "nar/") || ni.FileSize == 0 || !ni.Verify(mustKeySet(t, c.pubKey)) {
		t.Errorf("narinfo of big: %+v", ni)
	}
	entries, _ := filepath.Glob(filepath.Join(cacheDir, "*", ".tmp-*"))
	more, _ := filepath.Glob(filepath.Join(cacheDir, ".tmp-*"))
	if len(entries)+len(more) > 0 {
		t.Errorf("temporary files left in the cache: %v %v", entries, more)
	}

	res, err = doPush(t, target, &c.key, nil, c.top)
	if err != nil || res.Uploaded != 0 || res.Present != 4 {
		t.Errorf("second push: %+v, %v; want everything present", res, err)
	}
}

func readNarInfo(t *testing.T, file string) *narinfo.NarInfo {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ni, err := narinfo.Parse(storepath.DefaultDir, f)
	if err != nil {
		t.Fatal(err)
	}
	return ni
}

func mustKeySet(t *testing.T, keys string) *signature.KeySet {
	ks, err := signature.ParseKeySet(keys)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestPushSkipsSignedUpstream(t *testing.T) {
	c := newClosure(t)
	// Sign mid in the local store with an "upstream" key, as paths
	// substituted from cache.nixos.org are.
	dir := t.TempDir()
	c.n.Run("nix-store", "--generate-binary-cache-key", "upstream-1", filepath.Join(dir, "sec"), filepath.Join(dir, "pub"))
	c.n.Run("nix", "store", "sign", "--key-file", filepath.Join(dir, "sec"), c.mid.String())
	pub, _ := os.ReadFile(filepath.Join(dir, "pub"))
	upstream := mustKeySet(t, string(pub))

	cacheDir := t.TempDir()
	target, _ := push.OpenTarget("file://"+cacheDir, nil)
	res, err := doPush(t, target, &c.key, upstream, c.top)
	if err != nil {
		t.Fatal(err)
	}
	if res.SignedUpstream != 1 || res.Uploaded != 3 {
		t.Errorf("push: %+v, want mid skipped as signed upstream", res)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, c.mid.HashPart()+".narinfo")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mid was pushed although signed upstream")
	}
	// A signature that does not verify does not count.
	bogus := mustKeySet(t, "upstream-1:"+strings.Repeat("A", 43)+"=")
	res, err = doPush(t, target, &c.key, bogus, c.top)
	if err != nil || res.SignedUpstream != 0 || res.Uploaded != 1 {
		t.Errorf("push with a wrong upstream key: %+v, %v; want mid uploaded", res, err)
	}
}

// cacheServer is a minimal Nix HTTP binary cache accepting PUT, with an
// optional silo batch endpoint and bearer token.
type cacheServer struct {
	dir      string
	token    string
	batch    bool
	failNAR  string // a NAR URL whose PUT fails with 500
	mu       sync.Mutex
	requests map[string]int // "METHOD kind" counts
}

func (s *cacheServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rel := strings.TrimPrefix(r.URL.Path, "/cache/")
	kind := "other"
	switch {
	case strings.HasSuffix(rel, ".narinfo"):
		kind = "narinfo"
	case strings.HasPrefix(rel, "nar/"):
		kind = "nar"
	case rel == "_silo/missing":
		kind = "missing"
	}
	s.mu.Lock()
	s.requests[r.Method+" "+kind]++
	s.mu.Unlock()
	s.mu.Lock()
	token := s.token
	s.mu.Unlock()
	if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	if strings.Contains(rel, "..") || !strings.HasPrefix(r.URL.Path, "/cache/") {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	file := filepath.Join(s.dir, rel)
	switch {
	case r.Method == http.MethodPost && kind == "missing" && s.batch:
		body, _ := io.ReadAll(r.Body)
		for _, h := range strings.Fields(string(body)) {
			if _, err := os.Stat(filepath.Join(s.dir, h+".narinfo")); err != nil {
				fmt.Fprintln(w, h)
			}
		}
	case r.Method == http.MethodPut:
		if rel == s.failNAR {
			http.Error(w, "disk full", http.StatusInternalServerError)
			return
		}
		os.MkdirAll(filepath.Dir(file), 0o755)
		data, err := io.ReadAll(r.Body)
		if err != nil || r.ContentLength >= 0 && int64(len(data)) != r.ContentLength {
			http.Error(w, "short body", http.StatusBadRequest)
			return
		}
		os.WriteFile(file, data, 0o644)
		w.WriteHeader(http.StatusCreated)
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		http.ServeFile(w, r, file)
	default:
		http.NotFound(w, r)
	}
}

func (s *cacheServer) count(k string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[k]
}

func TestPushHTTPTarget(t *testing.T) {
	c := newClosure(t)
	for _, batch := range []bool{true, false} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			srv := &cacheServer{dir: t.TempDir(), token: "s3cret", batch: batch, requests: map[string]int{}}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			url := hs.URL + "/cache"

			emptyNetrc := filepath.Join(t.TempDir(), "netrc")
			os.WriteFile(emptyNetrc, nil, 0o600)
			noAuth, err := push.OpenTarget(url, &push.TargetOptions{NetrcFile: emptyNetrc})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := doPush(t, noAuth, &c.key, nil, c.top); !errors.Is(err, push.ErrUnauthorized) {
				t.Errorf("push without token: %v, want ErrUnauthorized", err)
			}

			target, _ := push.OpenTarget(url, &push.TargetOptions{Token: "s3cret"})
			res, err := doPush(t, target, &c.key, nil, c.top)
			if err != nil || res.Uploaded != 4 {
				t.Fatalf("push: %+v, %v", res, err)
			}
			if batch && srv.count("HEAD narinfo") != 0 {
				t.Errorf("%d narinfo HEADs against a server with the batch endpoint", srv.count("HEAD narinfo"))
			}
			if !batch && srv.count("HEAD narinfo") != 4 {
				t.Errorf("%d narinfo HEADs, want 4 (one per path)", srv.count("HEAD narinfo"))
			}
			srv.mu.Lock()
			srv.token = "" // Nix reads the cache anonymously
			srv.mu.Unlock()
			if err := c.nixCopyFrom(t, url, c.pubKey, c.top); err != nil {
				t.Errorf("nix copy --from %s: %v", url, err)
			}
		})
	}
}

// A failed NAR upload leaves neither its narinfo nor the narinfos of the
// paths referring to it; unrelated paths still upload.
func TestPushFailureLeavesNoDanglingNarInfo(t *testing.T) {
	c := newClosure(t)
	store := openStore(t)
	info, err := store.QueryPathInfo(context.Background(), c.mid)
	if err != nil {
		t.Fatal(err)
	}
	// Find mid's NAR URL by pushing it alone to a scratch cache.
	scratch, _ := push.OpenTarget("file://"+t.TempDir(), nil)
	scratch.Init(context.Background(), storepath.DefaultDir)
	ni, err := (&push.Uploader{Target: scratch}).UploadNAR(context.Background(), info, nil)
	if err != nil {
		t.Fatal(err)
	}

	// A cache with the batch endpoint is taken for a silo server and gets
	// the NAR streamed under a name from its NarHash.
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			failNAR := ni.URL
			if batch {
				failNAR = "nar/" + info.NarHash.Nix32() + "-nh.nar.zst"
			}
			srv := &cacheServer{dir: t.TempDir(), batch: batch, failNAR: failNAR, requests: map[string]int{}}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			target, _ := push.OpenTarget(hs.URL+"/cache", nil)
			res, err := doPush(t, target, nil, nil, c.top)
			if err == nil || res.Failed != 2 || res.Uploaded != 2 {
				t.Errorf("push with mid's NAR failing: %+v, %v; want mid and top failed, leaf and big uploaded", res, err)
			}
			for p, want := range map[storepath.Path]bool{c.leaf: true, c.big: true, c.mid: false, c.top: false} {
				_, err := os.Stat(filepath.Join(srv.dir, p.HashPart()+".narinfo"))
				if got := err == nil; got != want {
					t.Errorf("narinfo of %s present = %v, want %v", p.Name(), got, want)
				}
			}
			if n := srv.count("PUT " + "nar"); n < 3+2 { // leaf, big, mid×3 attempts (top's NAR too)
				t.Errorf("%d NAR PUTs, want at least 5 (mid's retried)", n)
			}
		})
	}
}

func TestPushCancelled(t *testing.T) {
	c := newClosure(t)
	cacheDir := t.TempDir()
	target, _ := push.OpenTarget("file://"+cacheDir, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := push.Push(ctx, []storepath.Path{c.top}, push.Options{Store: openStore(t), Uploader: &push.Uploader{Target: target}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("push with a cancelled context: %v, want context.Canceled", err)
	}
	if m, _ := filepath.Glob(filepath.Join(cacheDir, "*.narinfo")); len(m) != 0 {
		t.Errorf("narinfos written by a cancelled push: %v", m)
	}
}
