package worker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrProtocol is wrapped by errors about malformed data from the daemon.
var ErrProtocol = errors.New("worker protocol error")

// MaxString bounds strings read from the daemon (log lines, paths,
// signatures), so a confused peer cannot make the client allocate without
// limit.
const MaxString = 64 << 20

// MaxList bounds the number of elements of a list read from the daemon.
const MaxList = 1 << 24

// Decoder reads the protocol's wire encoding.
type Decoder struct {
	r         *bufio.Reader
	buf       [8]byte
	maxString uint64
	maxList   uint64
}

// NewDecoder returns a Decoder reading from r, with the limits MaxString
// and MaxList.
func NewDecoder(r io.Reader) *Decoder { return NewDecoderSize(r, 32<<10) }

// NewDecoderSize is NewDecoder with a read buffer of size bytes.
func NewDecoderSize(r io.Reader, size int) *Decoder {
	return &Decoder{r: bufio.NewReaderSize(r, size), maxString: MaxString, maxList: MaxList}
}

// SetLimits bounds the strings and lists d reads (a server reading a
// hostile client sets lower ones).
func (d *Decoder) SetLimits(maxString, maxList uint64) { d.maxString, d.maxList = maxString, maxList }

// Uint64 reads an 8-byte little-endian integer.
func (d *Decoder) Uint64() (uint64, error) {
	if _, err := io.ReadFull(d.r, d.buf[:]); err != nil {
		return 0, eof(err)
	}
	return binary.LittleEndian.Uint64(d.buf[:]), nil
}

// Bool reads an integer that must be 0 or 1.
func (d *Decoder) Bool() (bool, error) {
	v, err := d.Uint64()
	if err != nil {
		return false, err
	}
	if v > 1 {
		return false, fmt.Errorf("%w: boolean is %d", ErrProtocol, v)
	}
	return v == 1, nil
}

// String reads a length-prefixed string and its zero padding.
func (d *Decoder) String() (string, error) {
	n, err := d.Uint64()
	if err != nil {
		return "", err
	}
	if n > d.maxString {
		return "", fmt.Errorf("%w: string of %d bytes exceeds the %d byte limit", ErrProtocol, n, d.maxString)
	}
	b, err := d.readN(n + pad(n))
	if err != nil {
		return "", eof(err)
	}
	for _, c := range b[n:] {
		if c != 0 {
			return "", fmt.Errorf("%w: non-zero string padding", ErrProtocol)
		}
	}
	return string(b[:n]), nil
}

// Strings reads a count followed by that many strings.
func (d *Decoder) Strings() ([]string, error) {
	n, err := d.Uint64()
	if err != nil {
		return nil, err
	}
	if n > d.maxList {
		return nil, fmt.Errorf("%w: list of %d elements exceeds the %d element limit", ErrProtocol, n, d.maxList)
	}
	out := make([]string, 0, min(n, 1024))
	for range n {
		s, err := d.String()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// readN reads n bytes, allocating as they arrive rather than what the
// peer claims, so a length it never sends costs no memory.
func (d *Decoder) readN(n uint64) ([]byte, error) {
	const chunk = 1 << 20
	if n <= chunk {
		b := make([]byte, n)
		_, err := io.ReadFull(d.r, b)
		return b, err
	}
	b := make([]byte, 0, chunk)
	for uint64(len(b)) < n {
		k := min(n-uint64(len(b)), uint64(max(cap(b)-len(b), chunk)))
		start := len(b)
		b = append(b, make([]byte, k)...)
		if _, err := io.ReadFull(d.r, b[start:]); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func pad(n uint64) uint64 { return (8 - n%8) % 8 }

func eof(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: connection closed by the daemon", io.ErrUnexpectedEOF)
	}
	return err
}

// Encoder writes the protocol's wire encoding into a buffer; Flush sends it.
type Encoder struct {
	w   *bufio.Writer
	err error
}

// NewEncoder returns an Encoder writing to w.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: bufio.NewWriterSize(w, 32<<10)} }

// Uint64 writes an 8-byte little-endian integer.
func (e *Encoder) Uint64(v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	e.write(b[:])
}

// Bool writes 1 or 0.
func (e *Encoder) Bool(v bool) {
	if v {
		e.Uint64(1)
	} else {
		e.Uint64(0)
	}
}

// String writes a length-prefixed, zero-padded string.
func (e *Encoder) String(s string) {
	e.Uint64(uint64(len(s)))
	if e.err == nil {
		_, e.err = e.w.WriteString(s)
	}
	var zero [8]byte
	e.write(zero[:pad(uint64(len(s)))])
}

// Strings writes a count followed by the strings.
func (e *Encoder) Strings(ss []string) {
	e.Uint64(uint64(len(ss)))
	for _, s := range ss {
		e.String(s)
	}
}

func (e *Encoder) write(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}

// Flush sends everything written so far and returns the first error.
func (e *Encoder) Flush() error {
	if e.err == nil {
		e.err = e.w.Flush()
	}
	return e.err
}
