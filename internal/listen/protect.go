package listen

import (
	"context"
	"io"
	"net"
	"net/http"
)

type connKey struct{}

// ConnContext is for http.Server.ConnContext: it lets Protect find a
// request's *Conn.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*Conn); ok {
		return context.WithValue(ctx, connKey{}, gc)
	}
	return ctx
}

// Protect wraps a server's handler. It refuses (400, and closes the
// connection) a request that had both Content-Length and
// Transfer-Encoding, which net/http would read chunked although a proxy in
// front may have framed it by its length; it needs connections from a
// Guard and ConnContext. And it closes the connection after a response
// whose request body was not read to its end, so that net/http does not
// wait for a body the client may never send (a GET with a
// Content-Length and no body) before answering.
func Protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(connKey{}).(*Conn)
		if c != nil {
			n := c.served.Add(1) - 1
			if bad := c.firstBad.Load(); bad >= 0 && n >= bad {
				w.Header().Set("Connection", "close")
				http.Error(w, "request has both Content-Length and Transfer-Encoding (refused: the two may frame it differently)", http.StatusBadRequest)
				return
			}
		}
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			h.ServeHTTP(w, r)
			return
		}
		b := &eofBody{ReadCloser: r.Body}
		r.Body = b
		cw := &closeUnread{ResponseWriter: w, body: b}
		h.ServeHTTP(cw, r)
		cw.start() // for a handler that wrote nothing
		if !b.eof && c != nil {
			c.stopBody.Store(true)
		}

	})
}

// eofBody remembers whether a request body was read to its end.
type eofBody struct {
	io.ReadCloser
	eof bool
}

func (b *eofBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// closeUnread marks the response "Connection: close" if it starts before
// its request's body was read to the end.
type closeUnread struct {
	http.ResponseWriter
	body    *eofBody
	started bool
}

func (w *closeUnread) start() {
	if !w.started {
		w.started = true
		if !w.body.eof {
			w.ResponseWriter.Header().Set("Connection", "close")
		}
	}
}

func (w *closeUnread) WriteHeader(code int) {
	w.start()
	w.ResponseWriter.WriteHeader(code)
}

func (w *closeUnread) Write(p []byte) (int, error) {
	w.start()
	return w.ResponseWriter.Write(p)
}

func (w *closeUnread) WriteString(s string) (int, error) {
	w.start()
	return io.WriteString(w.ResponseWriter, s)
}

func (w *closeUnread) ReadFrom(r io.Reader) (int64, error) {
	w.start()
	return w.ResponseWriter.(io.ReaderFrom).ReadFrom(r)
}

func (w *closeUnread) Flush() {
	w.start()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *closeUnread) Unwrap() http.ResponseWriter { return w.ResponseWriter }
