package publish

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
)

var (
	errUnsatisfiable = errors.New("range not satisfiable")
	errIgnoreRange   = errors.New("range ignored")
)

// parseRange parses a Range header for a body of size bytes and returns the
// one range it asks for as [from, to). Headers it does not understand, and
// requests for several ranges, give errIgnoreRange: answering those with
// the whole body is allowed (RFC 9110, 14.2). A range starting at or past
// the end gives errUnsatisfiable.
func parseRange(h string, size uint64) (from, to uint64, err error) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, errIgnoreRange
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, errIgnoreRange
	}
	if first == "" { // "-n": the last n bytes
		n, err := strconv.ParseUint(last, 10, 64)
		if err != nil {
			return 0, 0, errIgnoreRange
		}
		if n == 0 {
			return 0, 0, errUnsatisfiable
		}
		return size - min(n, size), size, nil
	}
	from, err = strconv.ParseUint(first, 10, 64)
	if err != nil {
		return 0, 0, errIgnoreRange
	}
	to = size
	if last != "" {
		l, err := strconv.ParseUint(last, 10, 64)
		if err != nil || l < from {
			return 0, 0, errIgnoreRange
		}
		if l < size {
			to = l + 1
		}
	}
	if from >= size {
		return 0, 0, errUnsatisfiable
	}
	return from, to, nil
}

// ifRangeMatches reports whether a Range header may be honoured: there is
// no If-Range, or it names the current entity tag. (A date in If-Range
// never matches: NARs carry no Last-Modified.)
func ifRangeMatches(r *http.Request, etag string) bool {
	ir := r.Header.Get("If-Range")
	return ir == "" || ir == etag
}

// acceptsZstd reports whether the request's Accept-Encoding names zstd
// with a non-zero quality. Only an explicit "zstd" counts, not "*".
func acceptsZstd(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "zstd") {
				continue
			}
			q, ok := strings.CutPrefix(strings.TrimSpace(params), "q=")
			if !ok {
				return true
			}
			f, err := strconv.ParseFloat(q, 64)
			return err == nil && f > 0
		}
	}
	return false
}

// encoders holds zstd encoders for reuse. They run in the caller's
// goroutine (concurrency 1), so a response costs one core at most, and a
// 2 MiB window keeps each one's memory to a few MiB.
var encoders = sync.Pool{New: func() any {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithWindowSize(2<<20), zstd.WithLowerEncoderMem(true))
	if err != nil {
		panic("publish: zstd encoder options: " + err.Error())
	}
	return enc
}}

func getEncoder(w io.Writer) *zstd.Encoder {
	enc := encoders.Get().(*zstd.Encoder)
	enc.Reset(w)
	return enc
}

func putEncoder(enc *zstd.Encoder) {
	enc.Reset(nil) // drop the response writer
	encoders.Put(enc)
}
