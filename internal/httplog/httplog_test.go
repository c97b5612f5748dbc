package httplog

import (
	"bytes"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestEntryAndLine(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, tt := range []struct {
		method, path string
		status       int
		quiet        bool
		level        string
	}{
		{"GET", "/x.narinfo", 200, true, "DEBUG"},
		{"HEAD", "/x.narinfo", 404, true, "DEBUG"},
		{"GET", "/x.narinfo", 401, true, "INFO"},
		{"PUT", "/x.narinfo", 200, true, "INFO"},
		{"GET", "/nar/x", 200, false, "INFO"},
		{"GET", "/nar/x", 500, false, "ERROR"},
	} {
		buf.Reset()
		r := httptest.NewRequest(tt.method, tt.path, nil)
		rec := httptest.NewRecorder()
		var e Entry
		e.Begin(rec, r)
		w := &Writer{ResponseWriter: rec}
		w.WriteHeader(tt.status)
		w.Write([]byte("body"))
		e.Token = "tokid"
		Log(log, Level(w, r, tt.quiet), &e, w, r, e.Elapsed())
		line := buf.String()
		for _, want := range []string{"level=" + tt.level, "msg=request", "id=" + e.ID, "method=" + tt.method, "path=" + tt.path, "status=" + http.StatusText(tt.status)[:0], "bytes=4", "token=tokid"} {
			if !strings.Contains(line, want) {
				t.Errorf("%s %s %d: line %q lacks %q", tt.method, tt.path, tt.status, line, want)
			}
		}
		if rec.Header().Get("X-Request-Id") != e.ID {
			t.Errorf("X-Request-Id %q, entry id %q", rec.Header().Get("X-Request-Id"), e.ID)
		}
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if b, err := hex.DecodeString(id); err != nil || len(b) != 16 || seen[id] {
			t.Fatalf("NewID() = %q: not 32 fresh hex digits", id)
		}
		seen[id] = true
	}
	for id, ok := range map[string]bool{"abc": true, "a-b_c.d:e": true, "": false, "a b": false, "a\r\nb": false, strings.Repeat("x", 65): false} {
		if plainID(id) != ok {
			t.Errorf("plainID(%q) = %v, want %v", id, !ok, ok)
		}
	}
}
