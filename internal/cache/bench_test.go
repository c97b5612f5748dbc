package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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

// BenchmarkReceiveNAR measures verifying and storing a 16 MiB NAR (half
// random bytes, half their hex dump, as bench/push.sh's large paths) sent
// zstd-compressed at level 1, as silo push sends it.
func BenchmarkReceiveNAR(b *testing.B) {
	e := newEnv(b, Options{})
	raw := make([]byte, 4<<20)
	rand.Read(raw)
	hexed := []byte(hex.EncodeToString(raw))
	nar := dirNAR("a", string(raw), "b", string(hexed[:8<<20]), "c", string(raw[:4<<20]))
	var buf bytes.Buffer
	w, _ := compress.NewWriter(compress.Zstd, &buf, 1)
	w.Write(nar)
	w.Close()
	file := buf.Bytes()
	b.SetBytes(int64(len(nar)))
	b.ResetTimer()
	for b.Loop() {
		res, err := e.srv.receiveNAR(context.Background(), bytes.NewReader(file), 0)
		if err != nil {
			b.Fatal(err)
		}
		res.abort()
	}
}

// BenchmarkReceiveSmallNAR is BenchmarkReceiveNAR for a path of 64 KiB,
// as most of a closure's paths are: per-upload costs dominate.
func BenchmarkReceiveSmallNAR(b *testing.B) {
	e := newEnv(b, Options{})
	raw := make([]byte, 32<<10)
	rand.Read(raw)
	nar := dirNAR("f1", hex.EncodeToString(raw))
	var buf bytes.Buffer
	w, _ := compress.NewWriter(compress.Zstd, &buf, 1)
	w.Write(nar)
	w.Close()
	file := buf.Bytes()
	b.SetBytes(int64(len(nar)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := e.srv.receiveNAR(context.Background(), bytes.NewReader(file), 0)
		if err != nil {
			b.Fatal(err)
		}
		res.abort()
	}
}
