package cache

import (
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/meta"
)

// A path once in a cache is not replaced by a different NAR with a push
// token (first writer wins); the same NAR again is accepted; an admin token
// may replace.
func TestPathNotReplaced(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", true)
	push := e.token("main", meta.PermPush, time.Time{})
	admin := e.token("main", meta.PermAdmin, time.Time{})
	first := newUpload(t, "p", fileNAR("first build"), compress.Zstd)
	e.push("main", push, first)

	second := newUpload(t, "p", fileNAR("second, different build"), compress.Zstd)
	second.path = first.path
	second.info.StorePath = first.path
	if st, body := e.do("PUT", "/main/"+second.url, push, second.file); st != 200 {
		t.Fatalf("PUT NAR = %d %q", st, body)
	}
	st, body := e.do("PUT", "/main/"+second.narinfoPath(), push, []byte(second.info.String()))
	if st != 409 || !strings.Contains(body, "not replaced") {
		t.Errorf("replacing with a push token = %d %q, want 409", st, body)
	}
	_, served := e.do("GET", "/main/"+first.narinfoPath(), "", nil)
	mustContain(t, "the narinfo after a refused replacement", served, "NarHash: "+first.info.NarHash.String())

	if st, body := e.do("PUT", "/main/"+first.narinfoPath(), push, []byte(first.info.String())); st != 200 {
		t.Errorf("pushing the same NAR again = %d %q, want 200", st, body)
	}

	if st, body := e.do("PUT", "/main/"+second.narinfoPath(), admin, []byte(second.info.String())); st != 200 {
		t.Errorf("replacing with an admin token = %d %q, want 200", st, body)
	}
	_, served = e.do("GET", "/main/"+first.narinfoPath(), "", nil)
	mustContain(t, "the narinfo after an admin replacement", served, "NarHash: "+second.info.NarHash.String())
}
