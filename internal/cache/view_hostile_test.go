package cache

// The server's lookup caches must not grow with requests for made-up
// names (security review).

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// heapAfterGC returns the live heap.
func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// Unauthenticated GETs of made-up NAR URLs on a public cache must not make
// the server keep memory in proportion to the URLs sent: the view may
// remember lookups, but bounded in bytes.
func TestHostileViewRemembersUnboundedNARURLs(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("pub", true)
	before := heapAfterGC()
	const n, size = 200, 256 << 10
	sent := 0
	for i := range n {
		var r [8]byte
		rand.Read(r[:])
		target := "/pub/nar/" + hex.EncodeToString(r[:]) + strings.Repeat("x", size) + fmt.Sprint(i)
		st, _ := e.raw("GET", target, "", "", nil)
		if st != http.StatusNotFound {
			t.Fatalf("GET made-up NAR = %d, want 404", st)
		}
		sent += len(target)
	}
	grew := int64(heapAfterGC()) - int64(before)
	if grew > 16<<20 {
		t.Errorf("after %d 404s for made-up NAR URLs (%d MiB of URLs), the live heap grew by %d MiB", n, sent>>20, grew>>20)
	}
}

// Unauthenticated requests for made-up cache names must not grow the
// server's memory without bound.
func TestHostileViewRemembersUnknownCacheNames(t *testing.T) {
	e := newEnv(t, Options{})
	before := heapAfterGC()
	const n = 20000
	for i := range n {
		name := fmt.Sprintf("%064d", i)
		st, _ := e.srvDo("GET", "/"+name+"/nix-cache-info")
		if st != http.StatusUnauthorized {
			t.Fatalf("GET unknown cache = %d, want 401 (as for a private cache)", st)
		}
	}
	grew := int64(heapAfterGC()) - int64(before)
	if grew > 2<<20 {
		t.Errorf("after %d refusals for made-up cache names, the live heap grew by %d KiB", n, grew>>10)
	}
}
