package cache

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/meta"
)

// BenchmarkNarInfo measures the server side of a narinfo GET, without
// the network: the path bench/serve.sh compares with nginx.
func BenchmarkNarInfo(b *testing.B) {
	e := newEnv(b, Options{})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	u := newUpload(b, "bench", fileNAR("bench"), compress.Zstd)
	e.push("main", tok, u)
	req := httptest.NewRequest("GET", "/main/"+u.narinfoPath(), nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d", w.Code)
		}
	}
}

// BenchmarkNarInfoHTTP is BenchmarkNarInfo over loopback HTTP with
// parallel keep-alive clients.
func BenchmarkNarInfoHTTP(b *testing.B) {
	e := newEnv(b, Options{})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	u := newUpload(b, "bench", fileNAR("bench"), compress.Zstd)
	e.push("main", tok, u)
	url := e.ts.URL + "/main/" + u.narinfoPath()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					break
				}
			}
			resp.Body.Close()
		}
	})
}
