package cache

// Integrity against hostile tenants (issue 8): a path's narinfo is
// first-writer-wins as a whole and atomically, a content address must be
// the NAR's, logs are first-writer-wins, and what a cache serves never
// carries bytes another tenant chose.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/signature"
	"github.com/silo-cache/silo/internal/storepath"
)

// A push token cannot rewrite any part of a stored path's narinfo, NAR
// unchanged or not; the same narinfo again is accepted (Nix and silo push
// may repeat themselves); an admin token replaces.
func TestHostileNarinfoRewrite(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", true)
	push := e.token("main", meta.PermPush, time.Time{})
	admin := e.token("main", meta.PermAdmin, time.Time{})
	dep := newUpload(t, "dep", fileNAR("dependency"), compress.Zstd)
	e.push("main", push, dep)
	k, _ := signature.GenerateKey("other-1", strings.NewReader(strings.Repeat("k", 64)))
	u := newUpload(t, "victim", fileNAR("victim"), compress.Zstd, dep.path)
	u.info.Deriver, _ = storepath.DefaultDir.ParseBase(strings.Repeat("d", 32) + "-victim.drv")
	e.push("main", push, u)
	_, original := e.do("GET", "/main/"+u.narinfoPath(), "", nil)

	other, _ := storepath.DefaultDir.ParseBase(strings.Repeat("9", 32) + "-other")
	for _, tt := range []struct {
		name   string
		change func(ni *narinfo.NarInfo)
	}{
		{"references dropped", func(ni *narinfo.NarInfo) { ni.References = nil }},
		{"reference added", func(ni *narinfo.NarInfo) { ni.References = append(ni.References, other) }},
		{"deriver changed", func(ni *narinfo.NarInfo) { ni.Deriver = other }},
		{"deriver dropped", func(ni *narinfo.NarInfo) { ni.Deriver = storepath.Path{} }},
		{"signature added", func(ni *narinfo.NarInfo) { ni.Sign(k) }},
		{"system added", func(ni *narinfo.NarInfo) { ni.System = "x86_64-linux" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ni := *u.info
			ni.References = append([]storepath.Path(nil), u.info.References...)
			tt.change(&ni)
			if st, body := e.do("PUT", "/main/"+u.narinfoPath(), push, []byte(ni.String())); st != 409 {
				t.Errorf("PUT of a rewritten narinfo with a push token = %d %q, want 409", st, body)
			}
			if _, got := e.do("GET", "/main/"+u.narinfoPath(), "", nil); got != original {
				t.Errorf("the served narinfo changed:\n%s\nwas\n%s", got, original)
			}
		})
	}
	// The same narinfo again, and with its references in another order.
	same := *u.info
	if st, body := e.do("PUT", "/main/"+u.narinfoPath(), push, []byte(same.String())); st != 200 {
		t.Errorf("the same narinfo again = %d %q, want 200", st, body)
	}
	// An admin replaces.
	ni := *u.info
	ni.References = nil
	if st, body := e.do("PUT", "/main/"+u.narinfoPath(), admin, []byte(ni.String())); st != 200 {
		t.Errorf("an admin's replacement = %d %q, want 200", st, body)
	}
	if _, got := e.do("GET", "/main/"+u.narinfoPath(), "", nil); strings.Contains(got, "References: "+dep.path.Base()) {
		t.Errorf("the admin's replacement is not served:\n%s", got)
	}
}

// Two narinfos for one path with different NARs, sent at once: exactly one
// is stored (200), the other refused (409), and the stored one is served.
func TestHostileConcurrentNarinfoPuts(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	for round := range 40 {
		a := newUpload(t, "race", fileNAR(fmt.Sprint("a", round)), compress.Zstd)
		b := newUpload(t, "race", fileNAR(fmt.Sprint("b", round)), compress.Zstd)
		b.path, b.info.StorePath = a.path, a.path
		for _, u := range []*upload{a, b} {
			if st, body := e.do("PUT", "/main/"+u.url, tok, u.file); st != 200 {
				t.Fatalf("PUT NAR: %d %s", st, body)
			}
		}
		var wg sync.WaitGroup
		sts := make([]int, 2)
		for i, u := range []*upload{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sts[i], _ = e.do("PUT", "/main/"+u.narinfoPath(), tok, []byte(u.info.String()))
			}()
		}
		wg.Wait()
		if !(sts[0] == 200 && sts[1] == 409 || sts[0] == 409 && sts[1] == 200) {
			t.Fatalf("round %d: concurrent narinfos = %v, want one 200 and one 409", round, sts)
		}
		winner := a
		if sts[1] == 200 {
			winner = b
		}
		if _, got := e.do("GET", "/main/"+a.narinfoPath(), "", nil); !strings.Contains(got, "NarHash: "+winner.info.NarHash.String()) {
			t.Fatalf("round %d: served narinfo is not the winner's:\n%s", round, got)
		}
	}
}

// skippable is a zstd skippable frame of n bytes of content.
func skippable(content []byte) []byte {
	var h [8]byte
	binary.LittleEndian.PutUint32(h[:4], 0x184D2A50)
	binary.LittleEndian.PutUint32(h[4:], uint32(len(content)))
	return append(h[:], content...)
}

// A tenant who uploads ahead of time a NAR another tenant will push,
// wrapped in bytes of their own (a zstd skippable frame, xz streams and
// padding, a pessimal encoding), gets nothing of theirs into the other
// tenant's cache: every cache serves the server's own compression of
// exactly the NAR.
func TestHostileDedupPoisoning(t *testing.T) {
	victimNAR := dirNAR("bin", strings.Repeat("the victim's program ", 50))
	marker := bytes.Repeat([]byte("ATTACKER"), 20000/8)
	xzNAR := compressed(t, compress.XZ, victimNAR)
	for _, tt := range []struct {
		name string
		file []byte
	}{
		{"zstd then a skippable frame", append(compressed(t, compress.Zstd, victimNAR), skippable(marker)...)},
		{"a skippable frame then zstd", append(skippable(marker), compressed(t, compress.Zstd, victimNAR)...)},
		{"zstd at level 19", compressedLevel(t, compress.Zstd, victimNAR, 19)},
		{"xz then stream padding", append(bytes.Clone(xzNAR), make([]byte, 1<<12)...)},
		{"plain", victimNAR},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			e.cache("attacker", false)
			e.cache("victim", false)
			evil := e.token("attacker", meta.PermPush, time.Time{})
			good := e.token("victim", meta.PermPush, time.Time{})
			planted := newUpload(t, "victim-program", victimNAR, compress.Zstd)
			planted.file = tt.file
			planted.url = "nar/planted.nar"
			if st, body := e.do("PUT", "/attacker/"+planted.url, evil, planted.file); st != 200 {
				t.Logf("the planted upload is refused (%d %s): nothing to poison with", st, strings.TrimSpace(body))
				return
			}
			planted.info.URL, planted.info.FileHash, planted.info.FileSize = planted.url, hash.Hash{}, 0
			if st, body := e.do("PUT", "/attacker/"+planted.narinfoPath(), evil, []byte(planted.info.String())); st != 200 {
				t.Fatalf("attacker's narinfo: %d %s", st, body)
			}
			// The victim pushes the same store path, as Nix would.
			v := newUpload(t, "victim-program", victimNAR, compress.Zstd)
			v.path, v.info.StorePath = planted.path, planted.path
			e.push("victim", good, v)
			want := e.storedForm(victimNAR)
			for _, c := range []struct{ cache, tok string }{{"victim", good}, {"attacker", evil}} {
				_, text := e.do("GET", "/"+c.cache+"/"+v.narinfoPath(), c.tok, nil)
				ni, err := narinfo.ParseString(storepath.DefaultDir, text)
				if err != nil {
					t.Fatal(err)
				}
				_, file := e.do("GET", "/"+c.cache+"/"+ni.URL, c.tok, nil)
				if file != string(want) || ni.FileSize != uint64(len(want)) {
					t.Errorf("%s's cache serves a file of %d bytes (narinfo FileSize %d), not the server's own %d-byte compression of the NAR", c.cache, len(file), ni.FileSize, len(want))
				}
				if bytes.Contains([]byte(file), marker[:64]) {
					t.Errorf("%s's cache serves the attacker's bytes", c.cache)
				}
			}
		})
	}
}

func compressedLevel(t testing.TB, method string, data []byte, level int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := compress.NewWriter(method, &buf, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// caUpload makes the upload of nar under the store path its content
// address ca (with the hash claimed) gives, as a content-addressed path.
func caUpload(t *testing.T, nar []byte, ca narinfo.CA) *upload {
	t.Helper()
	u := newUpload(t, "ca", nar, compress.Zstd)
	p, err := ca.Path(storepath.DefaultDir, "ca", nil, storepath.Path{})
	if err != nil {
		t.Fatal(err)
	}
	u.path, u.info.StorePath, u.info.CA = p, p, ca.String()
	return u
}

// A content address must be the NAR's, as Nix checks on import: a lying
// CA (whose store path follows from the lie) is refused, and the true
// one is accepted.
func TestHostileLyingContentAddress(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	file := fileNAR("flat contents")
	tree := dirNAR("a", "tree contents")
	fake := hash.Sum(hash.SHA256, []byte("something else"))
	sha1Fake := hash.Sum(hash.SHA1, []byte("something else"))
	tests := []struct {
		name string
		nar  []byte
		ca   narinfo.CA
		want int
	}{
		{"recursive, true", tree, narinfo.CA{Recursive: true, Hash: hash.Sum(hash.SHA256, tree)}, 200},
		{"recursive, lying", tree, narinfo.CA{Recursive: true, Hash: fake}, 400},
		{"recursive sha1, true", tree, narinfo.CA{Recursive: true, Hash: hash.Sum(hash.SHA1, tree)}, 200},
		{"recursive sha1, lying", tree, narinfo.CA{Recursive: true, Hash: sha1Fake}, 400},
		{"flat, true", file, narinfo.CA{Hash: hash.Sum(hash.SHA256, []byte("flat contents"))}, 200},
		{"flat, lying", file, narinfo.CA{Hash: fake}, 400},
		{"flat, of a directory", tree, narinfo.CA{Hash: hash.Sum(hash.SHA256, []byte("tree contents"))}, 400},
		{"text, true", file, narinfo.CA{Text: true, Hash: hash.Sum(hash.SHA256, []byte("flat contents"))}, 200},
		{"text, lying", file, narinfo.CA{Text: true, Hash: fake}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := caUpload(t, tt.nar, tt.ca)
			if st, body := e.do("PUT", "/main/"+u.url, tok, u.file); st != 200 {
				t.Fatalf("PUT NAR: %d %s", st, body)
			}
			st, body := e.do("PUT", "/main/"+u.narinfoPath(), tok, []byte(u.info.String()))
			if st != tt.want {
				t.Errorf("narinfo with CA %s = %d %q, want %d", u.info.CA, st, body, tt.want)
			}
			if got, _ := e.do("GET", "/main/"+u.narinfoPath(), "", nil); (got == 200) != (tt.want == 200) {
				t.Errorf("after the narinfo: GET = %d", got)
			}
		})
	}
}

// A derivation's build log is never replaced with a push token, an admin
// token replaces it, and the same log again is accepted.
func TestHostileLogRewrite(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", true)
	push := e.token("main", meta.PermPush, time.Time{})
	admin := e.token("main", meta.PermAdmin, time.Time{})
	drv := "/main/log/" + strings.Repeat("b", 32) + "-x.drv"
	if st, body := e.do("PUT", drv, push, []byte("the real log")); st != 204 {
		t.Fatalf("first log: %d %s", st, body)
	}
	if st, body := e.do("PUT", drv, push, []byte("a forged log")); st != 409 {
		t.Errorf("second log with a push token = %d %q, want 409", st, body)
	}
	if _, got := e.do("GET", drv, "", nil); got != "the real log" {
		t.Errorf("log after a refused rewrite = %q", got)
	}
	if st, body := e.do("PUT", drv, admin, []byte("the admin's log")); st != 204 {
		t.Errorf("an admin's replacement = %d %q, want 204", st, body)
	}
	if _, got := e.do("GET", drv, "", nil); got != "the admin's log" {
		t.Errorf("log after an admin's replacement = %q", got)
	}
}

// Build logs are bounded: one by MaxLogSize, a cache's by count and bytes.
func TestHostileLogLimits(t *testing.T) {
	e := newEnv(t, Options{MaxLogSize: 100, LogLimits: meta.LogLimits{Count: 3, Bytes: 150}})
	e.cache("a", true)
	e.cache("b", true)
	tokA := e.token("a", meta.PermPush, time.Time{})
	tokB := e.token("b", meta.PermPush, time.Time{})
	drv := func(i int) string { return fmt.Sprintf("log/%032d-x%d.drv", i, i) }
	if st, body := e.do("PUT", "/a/"+drv(0), tokA, bytes.Repeat([]byte("x"), 101)); st != 413 {
		t.Errorf("a log over MaxLogSize = %d %q, want 413", st, body)
	}
	for i := 1; i <= 3; i++ {
		if st, body := e.do("PUT", "/a/"+drv(i), tokA, []byte("small")); st != 204 {
			t.Fatalf("log %d: %d %s", i, st, body)
		}
	}
	if st, body := e.do("PUT", "/a/"+drv(4), tokA, []byte("small")); st != 507 {
		t.Errorf("a fourth log under a limit of 3 = %d %q, want 507", st, body)
	}
	if st, body := e.do("PUT", "/b/"+drv(1), tokB, bytes.Repeat([]byte("y"), 100)); st != 204 {
		t.Fatalf("another cache's log: %d %s", st, body)
	}
	if st, body := e.do("PUT", "/b/"+drv(2), tokB, bytes.Repeat([]byte("y"), 51)); st != 507 {
		t.Errorf("a log passing 150 bytes of logs = %d %q, want 507", st, body)
	}
}
