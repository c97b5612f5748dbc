package hash

import gohash "hash"

// Writer hashes what is written to it and counts the bytes.
type Writer struct {
	algo Algo
	h    gohash.Hash
	n    uint64
}

// NewWriter returns a Writer for a.
func NewWriter(a Algo) *Writer { return &Writer{algo: a, h: a.New()} }

// Write implements io.Writer; it never fails.
func (w *Writer) Write(p []byte) (int, error) {
	w.h.Write(p)
	w.n += uint64(len(p))
	return len(p), nil
}

// Sum returns the hash of everything written so far.
func (w *Writer) Sum() Hash {
	h, _ := FromBytes(w.algo, w.h.Sum(nil))
	return h
}

// Size returns the number of bytes written so far.
func (w *Writer) Size() uint64 { return w.n }
