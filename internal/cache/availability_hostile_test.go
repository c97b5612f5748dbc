package cache

// Availability against hostile tenants (issue 8): upload slots are per
// cache, every request body is held to an idle time and a minimum rate,
// and uploads cost no more than they send (NAR size and expansion
// limits, object limits, compressed listings).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/nar"
)

// trickle opens a request on the test server whose body it sends one
// byte every gap, until stop is closed; it returns the connection.
func (e *testEnv) trickle(method, path, token string, size int, gap time.Duration, stop <-chan struct{}) net.Conn {
	e.t.Helper()
	c, err := net.Dial("tcp", e.ts.Listener.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n", method, path, basic("", token), size)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(gap):
			}
			if _, err := c.Write([]byte{0}); err != nil {
				return
			}
		}
	}()
	return c
}

// A tenant trickling uploads into every upload slot of its own cache
// leaves other caches' uploads free to go at once; and trickled uploads,
// below the minimum rate, are cut, freeing their slots.
func TestHostileUploadSlotsPerCache(t *testing.T) {
	e := newEnv(t, Options{MaxUploads: 4, MaxUploadsPerCache: 2, UploadIdleTimeout: 700 * time.Millisecond, MinUploadRate: 1000, UploadWait: 200 * time.Millisecond})
	e.cache("attacker", true)
	e.cache("victim", true)
	evil := e.token("attacker", meta.PermPush, time.Time{})
	good := e.token("victim", meta.PermPush, time.Time{})
	stop := make(chan struct{})
	defer close(stop)
	var conns []net.Conn
	for i := range 4 {
		c := e.trickle("PUT", fmt.Sprintf("/attacker/nar/t%d.nar", i), evil, 1<<20, 50*time.Millisecond, stop)
		defer c.Close()
		conns = append(conns, c)
	}
	time.Sleep(100 * time.Millisecond)
	// The attacker's own next upload waits for its cache's slots and gives up.
	u := newUpload(t, "mine", fileNAR("attacker's"), compress.Zstd)
	if st, body := e.do("PUT", "/attacker/"+u.url, evil, u.file); st != 503 {
		t.Errorf("a third upload to a cache with 2 slots, both trickled into = %d %q, want 503", st, body)
	}
	start := time.Now()
	v := newUpload(t, "victim", fileNAR("victim's"), compress.Zstd)
	e.push("victim", good, v)
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("another cache's upload waited %v behind the attacker's trickles", d)
	}
	// 20 bytes/s against a minimum of 1000: the trickles are cut soon.
	for i, c := range conns {
		if !readsClosed(c, 5*time.Second) {
			t.Errorf("trickled upload %d still open after 5s", i)
		}
	}
	if st, body := e.do("PUT", "/attacker/"+u.url, evil, u.file); st != 200 {
		t.Errorf("after the trickles were cut: %d %q", st, body)
	}
}

// readsClosed reports whether the server ends c within d.
func readsClosed(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	ne, ok := err.(net.Error)
	return !ok || !ne.Timeout()
}

// Every body a push makes is held to the idle time: narinfo, listing,
// nix-cache-info, the missing-paths query, log and NAR alike.
func TestHostilePushBodiesHaveIdleTimeout(t *testing.T) {
	e := newEnv(t, Options{UploadIdleTimeout: 300 * time.Millisecond})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	hp := strings.Repeat("1", 32)
	for _, r := range []struct{ method, path string }{
		{"PUT", "/main/" + hp + ".narinfo"},
		{"PUT", "/main/" + hp + ".ls"},
		{"PUT", "/main/nix-cache-info"},
		{"POST", "/main/_silo/missing"},
		{"PUT", "/main/log/" + hp + "-x.drv"},
		{"PUT", "/main/nar/stalled.nar"},
	} {
		stop := make(chan struct{})
		c := e.trickle(r.method, r.path, tok, 100000, time.Hour, stop) // sends nothing
		start := time.Now()
		if !readsClosed(c, 5*time.Second) {
			t.Errorf("%s %s with a stalled body: still open after 5s", r.method, r.path)
		} else if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s %s with a stalled body: held %v", r.method, r.path, d)
		}
		close(stop)
		c.Close()
	}
}

// Without options, NAR uploads are bounded: by size (DefaultMaxNARSize),
// by how much a small body may expand, and by the objects a NAR may hold;
// a NAR of many files costs a listing no bigger than what was sent.
func TestHostileUploadAmplification(t *testing.T) {
	e := newEnv(t, Options{})
	if e.srv.opts.MaxNARSize != DefaultMaxNARSize || DefaultMaxNARSize <= 0 {
		t.Fatalf("default MaxNARSize = %d", e.srv.opts.MaxNARSize)
	}
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	st, body := e.raw("PUT", "/main/nar/big.nar.zst", basic("", tok), fmt.Sprintf("Content-Length: %d\r\n", int64(DefaultMaxNARSize)+1), nil)
	if st != 413 {
		t.Errorf("a NAR over the default size limit = %d %q, want 413", st, body)
	}

	// A bomb: a few KiB that would expand to 600 MiB.
	file, _ := bombNAR(t, compress.Zstd, 600<<20)
	start := time.Now()
	if st, body := e.do("PUT", "/main/nar/bomb.nar.zst", tok, file); st != 413 {
		t.Errorf("a %d KiB body expanding to 600 MiB = %d %q, want 413", len(file)>>10, st, body)
	}
	t.Logf("a %d KiB zstd bomb refused after %v", len(file)>>10, time.Since(start).Round(time.Millisecond))

	// Many objects: over a limit of 1000 is refused.
	small := newEnv(t, Options{NARLimits: nar.Limits{MaxObjects: 1000}})
	small.cache("main", true)
	stok := small.token("main", meta.PermPush, time.Time{})
	wide := newUpload(t, "wide", manyFilesNAR(2000), compress.Zstd)
	if st, body := small.do("PUT", "/main/"+wide.url, stok, wide.file); st != 400 || !strings.Contains(body, "more than 1000 objects") {
		t.Errorf("a NAR of 2001 objects, limit 1000 = %d %q, want 400", st, body)
	}

	// The listing of a NAR of many empty files is stored compressed.
	many := newUpload(t, "many", manyFilesNAR(50000), compress.Zstd)
	e.push("main", tok, many)
	var listing int64
	e.blobs.List(context.Background(), "ls/", func(i blob.Info) error { listing += i.Size; return nil })
	t.Logf("NAR %d KiB sent as %d KiB: listing stored in %d KiB", len(many.nar)>>10, len(many.file)>>10, listing>>10)
	if listing > 8*int64(len(many.file))+64<<10 {
		t.Errorf("a %d KiB upload made a %d KiB listing", len(many.file)>>10, listing>>10)
	}
	// And is served as Nix wrote it, decompressed unless zstd is accepted.
	var want bytes.Buffer
	if err := nar.WriteListing(&want, bytes.NewReader(many.nar)); err != nil {
		t.Fatal(err)
	}
	if st, got := e.do("GET", "/main/"+many.path.HashPart()+".ls", "", nil); st != 200 || got != want.String() {
		t.Errorf("GET .ls = %d, %d bytes; want the listing's %d", st, len(got), want.Len())
	}
	req, _ := http.NewRequest("GET", e.ts.URL+"/main/"+many.path.HashPart()+".ls", nil)
	req.Header.Set("Accept-Encoding", "zstd")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "zstd" {
		t.Errorf("GET .ls accepting zstd: Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	} else if dec, err := compress.NewReader(compress.Zstd, resp.Body); err == nil {
		got, _ := io.ReadAll(dec)
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("the zstd listing decompresses to %d bytes, want %d", len(got), want.Len())
		}
	}
}

// Bounded concurrency of waiting: uploads beyond every slot wait at most
// UploadWait and get a 503 clients retry, never an unbounded queue.
func TestHostileUploadWaitBounded(t *testing.T) {
	e := newEnv(t, Options{MaxUploads: 1, MaxUploadsPerCache: 1, UploadWait: 100 * time.Millisecond})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	stop := make(chan struct{})
	defer close(stop)
	c := e.trickle("PUT", "/main/nar/hold.nar", tok, 1<<20, 10*time.Millisecond, stop)
	defer c.Close()
	time.Sleep(50 * time.Millisecond)
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := newUpload(t, fmt.Sprint("w", i), fileNAR(fmt.Sprint("w", i)), compress.Zstd)
			start := time.Now()
			st, _ := e.do("PUT", "/main/"+u.url, tok, u.file)
			if st != 503 || time.Since(start) > 2*time.Second {
				t.Errorf("upload %d behind a held slot = %d after %v, want 503 soon", i, st, time.Since(start))
			}
		}()
	}
	wg.Wait()
}
