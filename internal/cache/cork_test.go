package cache

import (
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/storepath"
)

// A file is sent corked, and uncorked at its end: a connection left
// corked would hold each response's last partial segment back for
// 200 ms, which a keep-alive client waits for.
func TestCorkedFilesArriveWhole(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	u := newUpload(t, "corked", fileNAR(string(make([]byte, 100_000))), compress.Zstd)
	e.push("main", tok, u)
	_, text := e.do("GET", "/main/"+u.narinfoPath(), "", nil)
	ni, err := narinfo.ParseString(storepath.DefaultDir, text)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	var took []time.Duration
	for range 5 {
		start := time.Now()
		resp, err := client.Get(e.ts.URL + "/main/" + ni.URL)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || n != int64(ni.FileSize) {
			t.Fatalf("GET %s: %d, %d of %d bytes, %v", ni.URL, resp.StatusCode, n, ni.FileSize, err)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	if took[2] >= 150*time.Millisecond {
		t.Errorf("NAR downloads on one connection took %v: the connection stays corked", took)
	}
}
