package worker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

func frames(parts ...[]byte) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		binary.Write(&b, binary.LittleEndian, uint64(len(p)))
		b.Write(p)
	}
	binary.Write(&b, binary.LittleEndian, uint64(0))
	return b.Bytes()
}

func TestFramedReader(t *testing.T) {
	in := append(frames([]byte("hello "), []byte("framed "), []byte("world")), "after"...)
	d := NewDecoder(bytes.NewReader(in))
	got, err := io.ReadAll(NewFramedReader(d))
	if err != nil || string(got) != "hello framed world" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	rest, _ := io.ReadAll(d.Buffered())
	if string(rest) != "after" {
		t.Errorf("after the stream: %q", rest)
	}

	// Drain after a partial read leaves the decoder after the terminator.
	d = NewDecoder(bytes.NewReader(in))
	f := NewFramedReader(d)
	f.Read(make([]byte, 3))
	if err := f.Drain(); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(d.Buffered()); string(rest) != "after" {
		t.Errorf("after Drain: %q", rest)
	}

	// Limit: an error, and still drainable.
	d = NewDecoder(bytes.NewReader(in))
	f = NewFramedReader(d)
	f.Limit = 8
	if _, err := io.ReadAll(f); !errors.Is(err, ErrFrameLimit) {
		t.Errorf("over the limit: %v", err)
	}
	if err := f.Drain(); err != nil {
		t.Fatal(err)
	}

	// A frame claiming more than an int64 holds, then the end of input.
	var huge bytes.Buffer
	binary.Write(&huge, binary.LittleEndian, uint64(1<<63+5))
	huge.WriteString("short")
	f = NewFramedReader(NewDecoder(&huge))
	if err := f.Drain(); err == nil {
		t.Error("Drain of a truncated huge frame succeeded")
	}

	// FramedWriter writes what FramedReader reads.
	var b bytes.Buffer
	e := NewEncoder(&b)
	w := NewFramedWriter(e)
	w.Write([]byte("ab"))
	w.Write(nil)
	w.Write([]byte("c"))
	w.Close()
	e.Flush()
	if !bytes.Equal(b.Bytes(), frames([]byte("ab"), []byte("c"))) {
		t.Errorf("FramedWriter wrote %x", b.Bytes())
	}
}

func TestDecoderAllocatesAsDataArrives(t *testing.T) {
	// A string claiming 16 MiB with 10 bytes behind it fails without
	// allocating the claim.
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(16<<20))
	b.WriteString("0123456789")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	d := NewDecoder(bytes.NewReader(b.Bytes()))
	if _, err := d.String(); err == nil {
		t.Fatal("truncated string read")
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 4<<20 {
		t.Errorf("reading a truncated 16 MiB string allocated %d bytes", grown)
	}
	d = NewDecoder(bytes.NewReader(b.Bytes()))
	d.SetLimits(1<<10, 10)
	if _, err := d.String(); !errors.Is(err, ErrProtocol) {
		t.Errorf("string over the limit: %v", err)
	}
}
