package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// reqInfo collects what a request's log line reports beyond the basics.
type reqInfo struct {
	gen   uint64 // of the server's view, see view.sync
	id    string
	token string
	err   error
}

type reqInfoKey struct{}

func infoOf(r *http.Request) *reqInfo {
	ri, _ := r.Context().Value(reqInfoKey{}).(*reqInfo)
	return ri
}

func setLogError(r *http.Request, err error) {
	if ri := infoOf(r); ri != nil {
		ri.err = err
	}
}

func setLogToken(r *http.Request, id string) {
	if ri := infoOf(r); ri != nil {
		ri.token = id
	}
}

// RequestID returns the id of the request being served, for log lines.
func RequestID(ctx context.Context) string {
	if ri, _ := ctx.Value(reqInfoKey{}).(*reqInfo); ri != nil {
		return ri.id
	}
	return ""
}

// requestIDs hands out request ids: a random prefix chosen when the
// server starts, so that ids from different runs do not collide in
// aggregated logs, and a counter.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [4]byte
	rand.Read(b[:])
	return &requestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (g *requestIDs) next() string {
	var buf [32]byte
	b := append(buf[:0], g.prefix...)
	return string(strconv.AppendUint(b, g.n.Add(1), 16))
}

// statusWriter records the status and size of a response. It keeps the
// underlying writer's ReadFrom, so NAR downloads still use sendfile.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// WriteString keeps the underlying writer's WriteString, which copies a
// string body (a narinfo) without converting it to a []byte first.
func (w *statusWriter) WriteString(p string) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := io.WriteString(w.ResponseWriter, p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.(io.ReaderFrom).ReadFrom(r)
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// request is what logged keeps for one request, in one allocation.
type request struct {
	sw    statusWriter
	ri    reqInfo
	idHdr [1]string // the X-Request-Id header's value
}

// logged runs route, then logs the request and counts it in the metrics.
func (s *Server) logged(w http.ResponseWriter, r *http.Request, route func(http.ResponseWriter, *http.Request) (string, error)) {
	start := time.Now()
	id := r.Header.Get("X-Request-Id")
	if id == "" || len(id) > 64 {
		id = s.ids.next()
	}
	rq := &request{sw: statusWriter{ResponseWriter: w}, ri: reqInfo{id: id}, idHdr: [1]string{id}}
	ri, sw := &rq.ri, &rq.sw
	r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, ri))
	// Set, without allocating the value's slice (the key is canonical).
	w.Header()["X-Request-Id"] = rq.idHdr[:1:1]
	kind, err := route(sw, r)
	if err != nil {
		writeError(sw, r, err)
	}
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	d := time.Since(start)
	s.metrics.observe(kind, r.Method, sw.status, sw.bytes, d)
	level := slog.LevelInfo
	switch {
	case sw.status >= 500:
		level = slog.LevelError
	case kind == "narinfo" && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		(sw.status == http.StatusOK || sw.status == http.StatusNotFound):
		// Nix asks for a narinfo per path it might substitute: logging
		// each at info would drown the rest and cost more than serving it.
		level = slog.LevelDebug
	}
	if !s.log.Enabled(r.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("id", id),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", sw.status),
		slog.Int64("bytes", sw.bytes),
		slog.Duration("duration", d),
		slog.String("remote", r.RemoteAddr),
	}
	if r.ContentLength > 0 {
		attrs = append(attrs, slog.Int64("request_bytes", r.ContentLength))
	}
	if ri.token != "" {
		attrs = append(attrs, slog.String("token", ri.token))
	}
	if ri.err != nil {
		var he *httpError
		if errors.As(ri.err, &he) && he.err == nil {
			attrs = append(attrs, slog.String("error", he.msg))
		} else {
			attrs = append(attrs, slog.String("error", ri.err.Error()))
		}
	}
	s.log.LogAttrs(r.Context(), level, "request", attrs...)
}

// copyLimited copies at most limit bytes of r to w; more is a 413.
func copyLimited(w io.Writer, r io.Reader, limit int64) (int64, error) {
	n, err := io.Copy(w, io.LimitReader(r, limit+1))
	if err != nil {
		return n, errorf(http.StatusBadRequest, "reading request body: %v", err)
	}
	if n > limit {
		return n, errorf(http.StatusRequestEntityTooLarge, "request body is larger than %s bytes", strconv.FormatInt(limit, 10))
	}
	return n, nil
}
