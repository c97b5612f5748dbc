package worker

import (
	"fmt"
	"io"
	"math"
)

// Uint32 reads an integer that must fit Nix's `unsigned int` (readInt).
func (d *Decoder) Uint32() (uint64, error) {
	v, err := d.Uint64()
	if err != nil {
		return 0, err
	}
	if v > math.MaxUint32 {
		return 0, fmt.Errorf("%w: serialised integer %d is too large for type 'unsigned int'", ErrProtocol, v)
	}
	return v, nil
}

// Buffered returns the reader under d, for data that follows inline and
// is not in the wire encoding (a NAR).
func (d *Decoder) Buffered() io.Reader { return d.r }

// Raw writes bytes as they are, without length or padding (a NAR after
// STDERR_LAST).
func (e *Encoder) Raw(p []byte) (int, error) {
	e.write(p)
	if e.err != nil {
		return 0, e.err
	}
	return len(p), nil
}

// RawWriter returns an io.Writer for Raw.
func (e *Encoder) RawWriter() io.Writer { return rawWriter{e} }

type rawWriter struct{ e *Encoder }

func (w rawWriter) Write(p []byte) (int, error) { return w.e.Raw(p) }

// Err returns the first error the Encoder met.
func (e *Encoder) Err() error { return e.err }
