// Package httplog logs the requests of silo's HTTP servers (silo serve,
// silo publish), one line each in one format: id, method, path, status,
// bytes, duration, remote, and when known request_bytes, token and error.
// A request is logged at info, a 5xx at error, and the lookups a client
// makes for every path it might fetch (the kinds a server calls quiet,
// such as narinfo GET and HEAD) answered 200 or 404 at debug.
//
// Request ids are random (a client's own X-Request-Id is kept when it is
// short and plain): they reveal nothing, such as how many requests the
// server has answered.
package httplog

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"
)

// Writer records the status and size of a response. It keeps the
// underlying writer's ReadFrom (sendfile) and WriteString.
type Writer struct {
	http.ResponseWriter
	Status int // 0 until written
	Bytes  int64
}

func (w *Writer) WriteHeader(code int) {
	if w.Status == 0 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *Writer) Write(p []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.Bytes += int64(n)
	return n, err
}

// WriteString copies a string body (a narinfo) without converting it to a
// []byte first.
func (w *Writer) WriteString(p string) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	n, err := io.WriteString(w.ResponseWriter, p)
	w.Bytes += int64(n)
	return n, err
}

// ReadFrom reaches the response's ReadFrom, which sends files with sendfile.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.Bytes += n
	return n, err
}

// Code returns the status sent, 200 if none was written.
func (w *Writer) Code() int {
	if w.Status == 0 {
		return http.StatusOK
	}
	return w.Status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Entry is one request being served, what its log line reports beyond
// its response (a Writer).
type Entry struct {
	ID    string
	Token string // the ID of the token the request authenticated with
	Err   error  // why it failed, for the log
	start time.Time
	idHdr [1]string
}

type entryKey struct{}

// Begin starts e for r, answering on w: it picks the request id and sets
// the X-Request-Id header. (NewContext puts e in a context.)
func (e *Entry) Begin(w http.ResponseWriter, r *http.Request) {
	e.start = time.Now()
	e.ID = r.Header.Get("X-Request-Id")
	if !plainID(e.ID) {
		e.ID = NewID()
	}
	e.idHdr[0] = e.ID
	// Set, without allocating the value's slice (the key is canonical).
	w.Header()["X-Request-Id"] = e.idHdr[:1:1]
}

// NewContext returns ctx with e in it.
func NewContext(ctx context.Context, e *Entry) context.Context {
	return context.WithValue(ctx, entryKey{}, e)
}

// FromContext returns the Entry of the request being served, or nil.
func FromContext(ctx context.Context) *Entry {
	e, _ := ctx.Value(entryKey{}).(*Entry)
	return e
}

// RequestID returns the id of the request being served, or "".
func RequestID(ctx context.Context) string {
	if e := FromContext(ctx); e != nil {
		return e.ID
	}
	return ""
}

// plainID reports whether a client's request id may be kept: up to 64
// characters [A-Za-z0-9._:-].
func plainID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// NewID returns a random request id of 32 hex digits, from the runtime's
// per-thread ChaCha8 generator (seeded by the system): unpredictable and
// cheap.
func NewID() string {
	var b [16]byte
	var h [32]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// Elapsed returns the time since Begin.
func (e *Entry) Elapsed() time.Duration { return time.Since(e.start) }

// Level is the level of the line of a request answered on w: error for a
// 5xx, debug for a quiet lookup (GET or HEAD) answered 200 or 404, else
// info.
func Level(w *Writer, r *http.Request, quiet bool) slog.Level {
	status := w.Code()
	switch {
	case status >= 500:
		return slog.LevelError
	case quiet && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		(status == http.StatusOK || status == http.StatusNotFound):
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// Log writes the line of e, answered on w, at level, if log is enabled
// for it.
func Log(log *slog.Logger, level slog.Level, e *Entry, w *Writer, r *http.Request, d time.Duration) {
	if !log.Enabled(r.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("id", e.ID),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", w.Code()),
		slog.Int64("bytes", w.Bytes),
		slog.Duration("duration", d),
		slog.String("remote", r.RemoteAddr),
	}
	if r.ContentLength > 0 {
		attrs = append(attrs, slog.Int64("request_bytes", r.ContentLength))
	}
	if e.Token != "" {
		attrs = append(attrs, slog.String("token", e.Token))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	log.LogAttrs(r.Context(), level, "request", attrs...)
}
