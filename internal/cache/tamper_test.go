package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/compress"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/storepath"
)

// Every tampered upload is refused with a 4xx that says what did not
// match, and leaves no trace: no path, no NAR served, and once the upload
// TTL passes, no blob and no NAR record.
func TestTamperedUploads(t *testing.T) {
	good := dirNAR("bin", "#!/bin/sh\n", "lib", "library")
	dotdot := func() []byte {
		var b narBuilder
		b.str("nix-archive-1", "(", "type", "directory", "entry", "(", "name", "..", "node",
			"(", "type", "regular", "contents", "escaped", ")", ")", ")")
		return b.Bytes()
	}()
	tests := []struct {
		name   string
		tamper func(t *testing.T, u *upload) // changes what is sent
		// narStatus is the status of the NAR PUT (200: the NAR itself is fine).
		narStatus, infoStatus int
		says                  []string
	}{
		{"wrong NarHash", func(t *testing.T, u *upload) {
			u.info.NarHash = newUpload(t, "x", fileNAR("other"), compress.None).info.NarHash
		}, 200, 400, []string{"NarHash", "hashes to"}},
		{"wrong NarSize", func(t *testing.T, u *upload) { u.info.NarSize += 8 }, 200, 400, []string{"NarSize", "bytes"}},
		{"wrong FileSize", func(t *testing.T, u *upload) { u.info.FileSize-- }, 200, 400, []string{"FileSize"}},
		{"truncated zstd body", func(t *testing.T, u *upload) {
			u.file = u.file[:len(u.file)-7]
			u.url = "nar/truncated.nar.zst"
		}, 400, 0, []string{"zstd"}},
		{"truncated plain NAR", func(t *testing.T, u *upload) {
			u.file = compressed(t, compress.None, good[:len(good)-16])
			u.url = "nar/truncated.nar"
		}, 400, 0, []string{"NAR"}},
		{"NAR with a .. entry", func(t *testing.T, u *upload) {
			u.file = compressed(t, compress.XZ, dotdot)
			u.url = "nar/dotdot.nar.xz"
		}, 400, 0, []string{`".."`}},
		{"trailing data after the NAR", func(t *testing.T, u *upload) {
			u.file = append(compressed(t, compress.None, good), make([]byte, 8)...)
			u.url = "nar/trailing.nar"
		}, 400, 0, []string{"NAR"}},
		{"body does not match its name", func(t *testing.T, u *upload) {
			u.url = "nar/" + strings.Repeat("0", 52) + ".nar.zst"
		}, 400, 0, []string{"name says", "hashes to"}},
		{"lz4", func(t *testing.T, u *upload) {
			u.file = append([]byte{0x04, 0x22, 0x4d, 0x18}, u.file...)
			u.url = "nar/lz4.nar.lz4"
		}, 415, 0, []string{"lz4"}},
		{"narinfo naming a missing NAR", func(t *testing.T, u *upload) {
			u.file = nil // not uploaded
			u.info.URL = "nar/" + strings.Repeat("1", 52) + ".nar.zst"
		}, 0, 409, []string{"names no NAR uploaded"}},
		{"narinfo for another hash part", func(t *testing.T, u *upload) {
			other := newUpload(t, "other", good, compress.Zstd)
			u.info.StorePath = other.path
		}, 200, 400, []string{"describes"}},
		{"reference not in the cache (with RequireClosure)", func(t *testing.T, u *upload) {
			ref, _ := storepath.DefaultDir.ParseBase(strings.Repeat("a", 32) + "-missing-dep")
			u.info.References = []storepath.Path{ref}
		}, 200, 409, []string{"lacks references", "missing-dep"}},
		{"garbage narinfo", func(t *testing.T, u *upload) {
			u.info.URL = ""
		}, 200, 400, []string{"narinfo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Options{UploadTTL: time.Millisecond, RequireClosure: true})
			c, _ := e.cache("main", true)
			tok := e.token("main", meta.PermPush, time.Time{})
			u := newUpload(t, "victim", good, compress.Zstd)
			tt.tamper(t, u)
			var says string
			if u.file != nil {
				st, body := e.do("PUT", "/main/"+u.url, tok, u.file)
				if st != tt.narStatus && !(tt.narStatus == 0 && st == 200) {
					t.Errorf("PUT NAR = %d %q, want %d", st, body, tt.narStatus)
				}
				says = body
			}
			if tt.infoStatus != 0 {
				st, body := e.do("PUT", "/main/"+u.narinfoPath(), tok, []byte(u.info.String()))
				if st != tt.infoStatus {
					t.Errorf("PUT narinfo = %d %q, want %d", st, body, tt.infoStatus)
				}
				says = body
			}
			mustContain(t, "the refusal", says, tt.says...)

			// No trace: nothing served...
			if st, _ := e.do("GET", "/main/"+u.narinfoPath(), "", nil); st != 404 {
				t.Errorf("narinfo after a refused upload: %d, want 404", st)
			}
			if missing, _ := e.meta.Missing(context.Background(), c.ID, []string{u.path.HashPart()}); len(missing) != 1 {
				t.Errorf("path recorded after a refused upload")
			}
			// ...and nothing kept once the upload TTL passes.
			time.Sleep(2 * time.Millisecond)
			if _, err := e.srv.CollectGarbage(context.Background()); err != nil {
				t.Fatal(err)
			}
			if keys := e.blobKeys(); len(keys) != 0 {
				t.Errorf("blobs left after a refused upload: %v", keys)
			}
			if _, err := e.meta.NAR(context.Background(), u.info.NarHash.String()); !errors.Is(err, meta.ErrNotFound) {
				t.Errorf("NAR record left after a refused upload: %v", err)
			}
		})
	}
}

// By default a cache may hold a path whose references live upstream (silo
// push skips paths cache.nixos.org signed): the narinfo is accepted and
// served with its references intact.
func TestReferenceFromUpstreamAccepted(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	u := newUpload(t, "uses-upstream", dirNAR("bin", "#!/bin/sh\n"), compress.Zstd)
	ref, _ := storepath.DefaultDir.ParseBase(strings.Repeat("a", 32) + "-upstream-dep")
	u.info.References = []storepath.Path{ref}
	if st, body := e.do("PUT", "/main/"+u.url, tok, u.file); st != 200 {
		t.Fatalf("PUT NAR = %d %q", st, body)
	}
	if st, body := e.do("PUT", "/main/"+u.narinfoPath(), tok, []byte(u.info.String())); st != 200 {
		t.Fatalf("PUT narinfo = %d %q", st, body)
	}
	st, body := e.do("GET", "/main/"+u.narinfoPath(), "", nil)
	if st != 200 {
		t.Fatalf("GET narinfo = %d %q", st, body)
	}
	mustContain(t, "the served narinfo", body, "References: "+ref.Base())
}

// A body cut off mid-transfer (the client promised more bytes than it
// sent) leaves no blob and no temporary file.
func TestCutOffUpload(t *testing.T) {
	e := newEnv(t, Options{})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	u := newUpload(t, "cut", dirNAR("big", strings.Repeat("x", 1<<20)), compress.None)
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("PUT", e.ts.URL+"/main/"+u.url, nil)
	req.SetBasicAuth("", tok)
	fmt.Fprintf(conn, "PUT /main/%s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n", u.url, req.Header.Get("Authorization"), len(u.file))
	conn.Write(u.file[:len(u.file)/2])
	conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err == nil {
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("cut-off upload answered %d, want 4xx", resp.StatusCode)
		}
		resp.Body.Close()
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		keys := e.blobKeys()
		n, _ := e.blobs.CleanTemp(time.Hour) // counts nothing: only reports
		if len(keys) == 0 && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cut-off upload left blobs %v", keys)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, _ := e.blobs.CleanTemp(0); n != 0 {
		t.Errorf("cut-off upload left %d temporary files", n)
	}
}

func TestMaxNARSize(t *testing.T) {
	e := newEnv(t, Options{MaxNARSize: 1000})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	u := newUpload(t, "big", fileNAR(strings.Repeat("y", 5000)), compress.None)
	if st, body := e.do("PUT", "/main/"+u.url, tok, u.file); st != 413 {
		t.Errorf("oversized NAR = %d %q, want 413", st, body)
	}
	// Without a Content-Length the limit still holds.
	pr := strings.NewReader(string(u.file))
	req, _ := http.NewRequest("PUT", e.ts.URL+"/main/"+u.url, struct{ *strings.Reader }{pr})
	req.SetBasicAuth("", tok)
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("oversized chunked NAR = %d, want 413", resp.StatusCode)
	}
	if keys := e.blobKeys(); len(keys) != 0 {
		t.Errorf("oversized uploads left %v", keys)
	}
}

// A client that stops sending mid-upload is cut off after the idle
// timeout, and its upload slot is freed.
func TestStalledUpload(t *testing.T) {
	e := newEnv(t, Options{UploadIdleTimeout: 200 * time.Millisecond, MaxUploads: 1})
	e.cache("main", true)
	tok := e.token("main", meta.PermPush, time.Time{})
	u := newUpload(t, "stalled", dirNAR("f", strings.Repeat("z", 100_000)), compress.None)
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest("PUT", e.ts.URL, nil)
	req.SetBasicAuth("", tok)
	fmt.Fprintf(conn, "PUT /main/%s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n", u.url, req.Header.Get("Authorization"), len(u.file))
	conn.Write(u.file[:1000]) // then nothing
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, conn) // returns when the server gives up on us
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stalled upload held for %v", d)
	}
	// The single upload slot is free again.
	other := newUpload(t, "next", fileNAR("next"), compress.Zstd)
	e.push("main", tok, other)
	if keys := e.blobKeys(); len(keys) != 2 { // the next NAR and its listing
		t.Errorf("blobs after a stalled and a good upload: %v", keys)
	}
}
