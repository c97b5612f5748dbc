package nar

// Hostile test from the security review; it failed until Reader kept the
// error a source returns together with its last bytes (Reader.srcErr).
// Before, Reader.fill returned nil as soon as it had the bytes it needed,
// dropping an error the source returned together with them; so did the
// large-read path of Reader.Read.
// A source whose next Read then returns io.EOF (ulikunitz/xz does, after
// failing on garbage behind an xz stream) makes a failed stream look clean.

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// dataThenErr returns all its data with err in one Read, then io.EOF, as
// a non-sticky decompressor does.
type dataThenErr struct {
	data []byte
	err  error
	done bool
}

func (r *dataThenErr) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	if len(p) < len(r.data) {
		n := copy(p, r.data)
		r.data = r.data[n:]
		return n, nil
	}
	r.done = true
	return copy(p, r.data), r.err
}

func TestHostileErrorWithLastDataIsKept(t *testing.T) {
	errCorrupt := errors.New("corrupt stream after the data")
	for _, nar := range [][]byte{
		dirOf(entry("a", regular("hello"))),
		toks(magic, "(", "type", "regular", "contents", string(bytes.Repeat([]byte("x"), 200<<10)), ")"),
	} {
		err := readAll(&dataThenErr{data: nar, err: errCorrupt})
		if !errors.Is(err, errCorrupt) {
			t.Errorf("NAR of %d bytes whose source failed with its last bytes: error = %v, want %v", len(nar), err, errCorrupt)
		}
	}
}
