package substitute

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"net/http"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/nixstore/storetest"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// closure makes a -> b -> c (c has a self-reference) in dir.
func closure(t *testing.T, dir storepath.Dir) (a, b, c *item) {
	c = makeItem(t, dir, "c", "leaf")
	c.info.References = []storepath.Path{c.info.Path}
	b = makeItem(t, dir, "b", "middle", c.info.Path)
	a = makeItem(t, dir, "a", "top", b.info.Path, c.info.Path)
	return a, b, c
}

// Every compression Nix writes caches with, over HTTP and file://: the
// closure becomes valid, references first, with the NAR's contents.
func TestRealiseClosure(t *testing.T) {
	for _, method := range []string{compress.XZ, compress.Zstd, compress.Bzip2, compress.Brotli, compress.Gzip, compress.None} {
		for _, viaFile := range []bool{false, true} {
			name := method + map[bool]string{false: "-http", true: "-file"}[viaFile]
			t.Run(name, func(t *testing.T) {
				tc := newTestCache(t, storepath.DefaultDir, method, "")
				a, b, c := closure(t, tc.storeDir)
				for _, it := range []*item{a, b, c} {
					tc.add(it, true)
				}
				uri := tc.url()
				if viaFile {
					uri = tc.fileURL()
				}
				e := newEnv(t, config(keysOf(tc), uri))
				res := e.realise(wants(a)...)
				if len(res) != 1 || res[0].Status != Substituted || res[0].Err != nil {
					t.Fatalf("Realise = %+v\n%s", res, e.log.text())
				}
				for _, it := range []*item{a, b, c} {
					if !e.valid(it.info.Path) {
						t.Errorf("%s is not valid", it.info.Path)
					}
					got, _ := os.ReadFile(filepath.Join(e.store.RealPath(it.info.Path), "file"))
					if !bytes.Contains(it.nar, got) || len(got) == 0 {
						t.Errorf("%s/file = %q", it.info.Path, got)
					}
				}
				info, err := e.store.QueryPathInfo(context.Background(), a.info.Path)
				if err != nil || len(info.Sigs) != 1 || info.Ultimate || len(info.References) != 2 {
					t.Errorf("path info of a: %+v, %v", info, err)
				}
				acts := e.log.activities()
				for _, it := range []*item{a, b, c} {
					if want := "copying path '" + it.info.Path.String() + "' from '" + strings.TrimSuffix(uri, "/") + "'"; !strings.Contains(acts, want) {
						t.Errorf("no activity %q in:\n%s", want, acts)
					}
				}
				// Again: already valid, nothing downloaded.
				if res := e.realise(wants(a)...); res[0].Status != AlreadyValid {
					t.Errorf("second Realise = %+v", res)
				}
				if left := e.storeLeftovers(a.info.Path, b.info.Path, c.info.Path); len(left) != 0 {
					t.Errorf("store holds more than the closure: %v", left)
				}
			})
		}
	}
}

// A substitute signed by an untrusted key is refused before the download
// with Nix's warning; the next cache (signed with a trusted key) serves it.
func TestUntrustedSignature(t *testing.T) {
	bad := newTestCache(t, storepath.DefaultDir, compress.Zstd, "StoreDir: /nix/store\nPriority: 10\n")
	good := newTestCache(t, storepath.DefaultDir, compress.Zstd, "StoreDir: /nix/store\nPriority: 20\n")
	it := makeItem(t, bad.storeDir, "p", "signed")
	bad.add(it, true)
	good.add(it, true)

	e := newEnv(t, config(keysOf(good), bad.url()))
	res := e.realise(wants(it)...)
	if res[0].Status != NoSubstituters || e.valid(it.info.Path) {
		t.Fatalf("with only the untrusted cache: %+v", res)
	}
	want := "the substitute for '" + it.info.Path.String() + "' from '" + bad.url() + "' is not signed by any of the keys in 'trusted-public-keys'"
	if !strings.Contains(e.log.text(), want) {
		t.Errorf("no warning %q in:\n%s", want, e.log.text())
	}
	if n := bad.hitCount("/" + it.ni.URL); n != 0 {
		t.Errorf("the untrusted NAR was downloaded %d times", n)
	}
	if msg := res[0].Err.Error(); msg != "path '"+it.info.Path.String()+"' is required, but there is no substituter that can build it" {
		t.Errorf("error = %q", msg)
	}

	e = newEnv(t, config(keysOf(good), good.url(), bad.url()))
	if res := e.realise(wants(it)...); res[0].Status != Substituted {
		t.Fatalf("with both caches: %+v\n%s", res, e.log.text())
	}
	if bad.hitCount("/"+it.ni.URL) != 0 || good.hitCount("/"+it.ni.URL) != 1 {
		t.Errorf("NAR downloads: bad %d, good %d", bad.hitCount("/"+it.ni.URL), good.hitCount("/"+it.ni.URL))
	}

	// A signature that does not match the narinfo (the NarHash changed
	// after signing) is no signature.
	forged := newTestCache(t, storepath.DefaultDir, compress.Zstd, "")
	forged.add(it, true, func(ni *narinfo.NarInfo) { ni.NarSize++ })
	e = newEnv(t, config(keysOf(forged), forged.url()))
	if res := e.realise(wants(it)...); res[0].Status != NoSubstituters {
		t.Errorf("forged signature: %+v", res)
	}
}

// ?trusted=1 caches and require-sigs = false take unsigned paths; the
// store still checks the NAR.
func TestTrustedCacheAndNoRequireSigs(t *testing.T) {
	tc := newTestCache(t, storepath.DefaultDir, compress.XZ, "")
	it := makeItem(t, tc.storeDir, "unsigned", "x")
	tc.add(it, false)
	e := newEnv(t, config(signature.NewKeySet(), tc.url()+"?trusted=1"))
	if res := e.realise(wants(it)...); res[0].Status != Substituted {
		t.Fatalf("trusted cache: %+v\n%s", res, e.log.text())
	}
	cfg := config(signature.NewKeySet(), tc.fileURL())
	cfg.RequireSigs = false
	e = newEnv(t, cfg)
	o := e.ts.Opts
	o.RequireSigs = false // the store's require-sigs, which the daemon passes on
	e.s = e.pool.NewSession(e.ts.Open(o), e.log)
	e.s.Configure(cfg)
	if res := e.realise(wants(it)...); res[0].Status != Substituted {
		t.Fatalf("require-sigs = false: %+v\n%s", res, e.log.text())
	}
	e = newEnv(t, config(signature.NewKeySet(), tc.fileURL()))
	if res := e.realise(wants(it)...); res[0].Status != NoSubstituters {
		t.Fatalf("unsigned, require-sigs: %+v", res)
	}
}

// Caches are tried by priority (?priority= over nix-cache-info's), the
// first one having the path serves it.
func TestPriority(t *testing.T) {
	low := newTestCache(t, storepath.DefaultDir, compress.Zstd, "StoreDir: /nix/store\nPriority: 50\n")
	high := newTestCache(t, storepath.DefaultDir, compress.Zstd, "StoreDir: /nix/store\nPriority: 10\n")
	it := makeItem(t, low.storeDir, "p", "prio")
	low.add(it, true)
	high.add(it, true)
	e := newEnv(t, config(keysOf(low, high), low.url(), high.url()))
	caches := e.s.Caches(context.Background())
	if len(caches) != 2 || caches[0].URI != high.url() || caches[0].Priority != 10 {
		t.Fatalf("caches: %+v", caches)
	}
	e.realise(wants(it)...)
	if high.hitCount("/"+it.ni.URL) != 1 || low.hitCount("/"+it.ni.URL) != 0 {
		t.Errorf("by nix-cache-info: high %d, low %d\n%s", high.hitCount("/"+it.ni.URL), low.hitCount("/"+it.ni.URL), e.log.activities())
	}
	e = newEnv(t, config(keysOf(low, high), high.url(), low.url()+"?priority=5"))
	e.realise(wants(it)...)
	if low.hitCount("/"+it.ni.URL) != 1 {
		t.Errorf("?priority=5 did not win: low %d", low.hitCount("/"+it.ni.URL))
	}
}

// A content-addressed path is substituted from a cache of another store
// directory (fetchurl.sh's file://...?store=/fnord/store); an
// input-addressed one is not looked for there.
func TestCAOtherStoreDir(t *testing.T) {
	fnord, _ := storepath.NewDir("/fnord/store")
	tc := newTestCache(t, fnord, compress.XZ, "StoreDir: /fnord/store\n")
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("flat contents\n"), 0o644)
	data, nh := narOfFile(t, src)
	flat := hashOf("flat contents\n")
	ca := narinfo.CA{Hash: flat}
	local, _ := ca.Path(storepath.DefaultDir, "f", nil, storepath.Path{})
	remote, _ := ca.Path(fnord, "f", nil, storepath.Path{})
	it := &item{info: infoOf(remote, nh, data, ca.String()), nar: data}
	tc.add(it, false)
	ia := makeItem(t, fnord, "ia", "x")
	tc.add(ia, true)

	e := newEnv(t, config(keysOf(tc), tc.fileURL()+"?store=/fnord/store"))
	res := e.realise(Want{Path: local, CA: ca.String()})
	if res[0].Status != Substituted || !e.valid(local) {
		t.Fatalf("CA path from /fnord/store: %+v\n%s", res, e.log.text())
	}
	info, _ := e.store.QueryPathInfo(context.Background(), local)
	if info.CA != ca.String() {
		t.Errorf("CA = %q, want %q", info.CA, ca.String())
	}
	iaLocal, _ := storepath.DefaultDir.ParseBase(ia.info.Path.Base())
	if res := e.realise(Want{Path: iaLocal}); res[0].Status != NoSubstituters {
		t.Errorf("input-addressed path from another store dir: %+v", res)
	}
	infos, err := e.s.QuerySubstitutablePathInfos(context.Background(), map[storepath.Path]string{local: ca.String(), iaLocal: ""})
	if err != nil || len(infos) != 1 || infos[local] == nil || infos[local].NarSize != uint64(len(data)) {
		t.Errorf("QuerySubstitutablePathInfos = %+v, %v", infos, err)
	}
	// A cache that says its store is another than ?store= is dropped.
	e = newEnv(t, config(keysOf(tc), tc.fileURL()))
	if cs := e.s.Caches(context.Background()); len(cs) != 0 || !strings.Contains(e.log.text(), "is for Nix stores with prefix '/fnord/store', not '/nix/store'") {
		t.Errorf("caches %v; log:\n%s", cs, e.log.text())
	}
}

// QuerySubstitutablePaths asks only caches with want-mass-query (from
// nix-cache-info or ?want-mass-query=), QuerySubstitutablePathInfos all.
func TestQueries(t *testing.T) {
	mass := newTestCache(t, storepath.DefaultDir, compress.Zstd, "StoreDir: /nix/store\nWantMassQuery: 1\n")
	plain := newTestCache(t, storepath.DefaultDir, compress.Zstd, "StoreDir: /nix/store\n")
	a := makeItem(t, mass.storeDir, "a", "a")
	b := makeItem(t, mass.storeDir, "b", "b", a.info.Path)
	missing := makeItem(t, mass.storeDir, "m", "m")
	mass.add(a, true)
	plain.add(b, true)
	e := newEnv(t, config(keysOf(mass, plain), mass.url(), plain.url()))
	ctx := context.Background()
	got, err := e.s.QuerySubstitutablePaths(ctx, []storepath.Path{a.info.Path, b.info.Path, missing.info.Path})
	if err != nil || len(got) != 1 || got[0] != a.info.Path {
		t.Errorf("QuerySubstitutablePaths = %v, %v", got, err)
	}
	e = newEnv(t, config(keysOf(mass, plain), mass.url(), plain.url()+"?want-mass-query=true"))
	if got, _ := e.s.QuerySubstitutablePaths(ctx, []storepath.Path{a.info.Path, b.info.Path}); len(got) != 2 {
		t.Errorf("with ?want-mass-query=true: %v", got)
	}
	infos, err := e.s.QuerySubstitutablePathInfos(ctx, map[storepath.Path]string{a.info.Path: "", b.info.Path: "", missing.info.Path: ""})
	if err != nil || len(infos) != 2 || infos[b.info.Path] == nil || len(infos[b.info.Path].References) != 1 ||
		infos[b.info.Path].References[0] != a.info.Path || infos[b.info.Path].DownloadSize == 0 {
		t.Errorf("QuerySubstitutablePathInfos = %+v, %v", infos, err)
	}
	cfg := config(keysOf(mass), mass.url())
	cfg.UseSubstitutes = false
	e = newEnv(t, cfg)
	if got, _ := e.s.QuerySubstitutablePaths(ctx, []storepath.Path{a.info.Path}); len(got) != 0 {
		t.Errorf("substitute = false: %v", got)
	}
	if res := e.realise(wants(a)...); res[0].Status != NoSubstituters {
		t.Errorf("substitute = false: Realise %+v", res)
	}
}

// A path whose reference no cache has fails as an incomplete closure,
// without downloading it; references that form a cycle fail instead of
// waiting forever.
func TestIncompleteAndCyclicClosures(t *testing.T) {
	tc := newTestCache(t, storepath.DefaultDir, compress.Zstd, "")
	hole := makeItem(t, tc.storeDir, "hole", "not in the cache")
	top := makeItem(t, tc.storeDir, "top", "t", hole.info.Path)
	tc.add(top, true)
	x := makeItem(t, tc.storeDir, "x", "x")
	y := makeItem(t, tc.storeDir, "y", "y", x.info.Path)
	x.info.References = []storepath.Path{y.info.Path}
	tc.add(x, true)
	tc.add(y, true)
	e := newEnv(t, config(keysOf(tc), tc.url()))
	res := e.realise(wants(top, x)...)
	if res[0].Status != IncompleteClosure || !res[0].Dependency || e.valid(top.info.Path) ||
		res[0].Err.Error() != "some references of path '"+top.info.Path.String()+"' could not be realised" {
		t.Errorf("incomplete closure: %+v", res[0])
	}
	if tc.hitCount("/"+top.ni.URL) != 0 {
		t.Error("the NAR of a path with a missing reference was downloaded")
	}
	if res[1].Status.OK() || e.valid(x.info.Path) || e.valid(y.info.Path) {
		t.Errorf("cycle: %+v", res[1])
	}
	if d, err := Decide(top.info.Path, res[:1], false); d != Build || err != nil {
		t.Errorf("Decide(incomplete closure) = %v, %v; want build", d, err)
	}
	if !RetryAfterInputs(res[:1]) {
		t.Error("RetryAfterInputs(incomplete closure) = false")
	}
}

func TestDecide(t *testing.T) {
	drv := storetest.RandomPath(t, storepath.DefaultDir, "x.drv")
	ok := Result{Status: Substituted}
	tests := []struct {
		name     string
		results  []Result
		fallback bool
		want     Decision
	}{
		{"all substituted", []Result{ok, {Status: AlreadyValid}}, false, Done},
		{"no substituters", []Result{ok, {Status: NoSubstituters}}, false, Build},
		{"failed", []Result{ok, {Status: Failed}}, false, Fail},
		{"failed with fallback", []Result{{Status: Failed}}, true, Build},
		{"failed reference", []Result{{Status: Failed, Dependency: true}}, false, Fail},
		{"incomplete", []Result{{Status: IncompleteClosure, Dependency: true}}, false, Build},
	}
	for _, tt := range tests {
		d, err := Decide(drv, tt.results, tt.fallback)
		if d != tt.want {
			t.Errorf("%s: Decide = %v, want %v", tt.name, d, tt.want)
		}
		if (d == Fail) != (err != nil) {
			t.Errorf("%s: error %v with %v", tt.name, err, d)
		}
		if err != nil && !strings.Contains(err.Error(), "try '--fallback' to build derivation from source") {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

// Two sessions (connections) substituting the same closure at once
// download each NAR once.
func TestConcurrentSessionsDownloadOnce(t *testing.T) {
	tc := newTestCache(t, storepath.DefaultDir, compress.Zstd, "")
	a, b, c := closure(t, tc.storeDir)
	for _, it := range []*item{a, b, c} {
		tc.add(it, true)
	}
	var gate sync.WaitGroup
	gate.Add(1)
	tc.wrap = func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if strings.HasPrefix(r.URL.Path, "/nar/") {
			gate.Wait()
		}
		next.ServeHTTP(w, r)
	}
	e := newEnv(t, config(keysOf(tc), tc.url()))
	s2 := e.pool.NewSession(e.ts.Open(e.ts.Opts), e.log)
	s2.Configure(config(keysOf(tc), tc.url()))
	var wg sync.WaitGroup
	results := make([][]Result, 2)
	for i, s := range []*Session{e.s, s2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = s.Realise(context.Background(), wants(a), RealiseOptions{})
		}()
	}
	time.Sleep(300 * time.Millisecond)
	gate.Done()
	wg.Wait()
	for i, r := range results {
		if len(r) != 1 || !r[0].Status.OK() {
			t.Errorf("session %d: %+v", i, r)
		}
	}
	for _, it := range []*item{a, b, c} {
		if n := tc.hitCount("/" + it.ni.URL); n != 1 {
			t.Errorf("%s downloaded %d times", it.info.Path.Name(), n)
		}
	}
}
