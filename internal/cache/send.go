package cache

import (
	"io"
	"net/http"
)

// sender is a stored blob that can send its next n bytes to a writer
// itself, faster than a copy through a buffer: blob/s3 splices them from
// the S3 server's connection to the client's.
type sender interface {
	SendTo(w io.Writer, n int64) (int64, error)
}

// sendingWriter is the ResponseWriter http.ServeContent writes a blob to:
// its copy of the blob (an io.CopyN, so a ReadFrom of a LimitedReader
// over the blob) becomes the blob's SendTo. Headers, status and ranges
// stay ServeContent's.
type sendingWriter struct {
	http.ResponseWriter
	blob io.Reader
	send sender
}

func (w sendingWriter) ReadFrom(src io.Reader) (int64, error) {
	if lr, ok := src.(*io.LimitedReader); ok && lr.R == w.blob {
		n, err := w.send.SendTo(w.ResponseWriter, lr.N)
		lr.N -= n
		return n, err
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
}

func (w sendingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sendVia returns the writer ServeContent should write blob f to.
func sendVia(w http.ResponseWriter, f io.Reader) http.ResponseWriter {
	if s, ok := f.(sender); ok {
		return sendingWriter{ResponseWriter: w, blob: f, send: s}
	}
	return w
}
