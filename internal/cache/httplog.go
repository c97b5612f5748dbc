package cache

import (
	"context"
	"io"
	"net/http"
	"strconv"

	"github.com/silo-cache/silo/internal/httplog"
)

// reqInfo is what a request's log line reports, and the generation of
// the server's view its lookups belong to (see view.sync).
type reqInfo struct {
	httplog.Entry
	w   httplog.Writer
	gen uint64
}

type reqInfoKey struct{}

func infoOf(r *http.Request) *reqInfo {
	ri, _ := r.Context().Value(reqInfoKey{}).(*reqInfo)
	return ri
}

func setLogError(r *http.Request, err error) {
	if ri := infoOf(r); ri != nil {
		ri.Err = err
	}
}

func setLogToken(r *http.Request, id string) {
	if ri := infoOf(r); ri != nil {
		ri.Token = id
	}
}

// RequestID returns the id of the request being served, for log lines.
func RequestID(ctx context.Context) string {
	if ri, _ := ctx.Value(reqInfoKey{}).(*reqInfo); ri != nil {
		return ri.ID
	}
	return ""
}

// logged runs route, then logs the request and counts it in the metrics.
func (s *Server) logged(w http.ResponseWriter, r *http.Request, route func(http.ResponseWriter, *http.Request) (string, error)) {
	ri := &reqInfo{w: httplog.Writer{ResponseWriter: w}}
	ri.Begin(w, r)
	r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, ri))
	sw := &ri.w
	kind, err := route(sw, r)
	if err != nil {
		writeError(sw, r, err)
	}
	d := ri.Elapsed()
	s.metrics.observe(kind, r.Method, sw.Code(), sw.Bytes, d)
	// Nix asks for a narinfo per path it might substitute: logging each
	// at info would drown the rest and cost more than serving it.
	httplog.Log(s.log, httplog.Level(sw, r, kind == "narinfo"), &ri.Entry, sw, r, d)
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
