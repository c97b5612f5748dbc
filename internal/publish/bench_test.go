package publish

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
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

// BenchmarkNarinfoHTTP measures narinfo answers over loopback HTTP with 16
// keep-alive connections, client and server in this process.
func BenchmarkNarinfoHTTP(b *testing.B) {
	n := nixtest.Require(b)
	p := n.Build("bench-narinfo", `echo x > $out`)
	store, err := localstore.OpenDB(storepath.DefaultDir, "")
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	srv, err := New(store, Options{})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	url := hs.URL + "/" + hashPart(p) + ".narinfo"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, MaxConnsPerHost: 16}}
	b.SetParallelism(8) // 16 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}

// BenchmarkNARHTTP measures sending a verified 32 MiB NAR over loopback
// HTTP (file contents by sendfile), client in this process.
func BenchmarkNARHTTP(b *testing.B) {
	n := nixtest.Require(b)
	srv, p, _ := chrootStore(b, n, 8, 4<<20)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/" + hashPart(p) + ".narinfo")
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var url string
	var size int64
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "URL: "); ok {
			url = hs.URL + "/" + v
		}
		if v, ok := strings.CutPrefix(line, "NarSize: "); ok {
			size, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	b.SetBytes(size)
	buf := make([]byte, 256<<10)
	b.ResetTimer()
	for b.Loop() {
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		got, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, buf)
		resp.Body.Close()
		if err != nil || got != size {
			b.Fatalf("read %d of %d bytes: %v", got, size, err)
		}
	}
}
