package publish

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/nixtest"
	"github.com/silo-cache/silo/internal/storepath"
)

// BenchmarkNarinfo measures narinfo answers over the real Nix database,
// through the handler alone (no network).
func BenchmarkNarinfo(b *testing.B) {
	n := nixtest.Require(b)
	p := n.Build("bench-narinfo", `echo x > $out`)
	store, err := localstore.OpenDB(storepath.DefaultDir, "")
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	srv, err := New(store, Options{Keys: nil})
	if err != nil {
		b.Fatal(err)
	}
	url := "/" + hashPart(p) + ".narinfo"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, httptest.NewRequest("GET", url, nil))
			if w.Code != http.StatusOK {
				b.Fatalf("status %d", w.Code)
			}
			io.Copy(io.Discard, w.Body)
		}
	})
}
