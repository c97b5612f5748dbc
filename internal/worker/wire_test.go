package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestWireRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		enc  func(e *Encoder)
		want []byte
	}{
		{"uint64", func(e *Encoder) { e.Uint64(0x0102030405060708) }, []byte{8, 7, 6, 5, 4, 3, 2, 1}},
		{"empty string", func(e *Encoder) { e.String("") }, make([]byte, 8)},
		{"padded string", func(e *Encoder) { e.String("abc") }, append([]byte{3, 0, 0, 0, 0, 0, 0, 0}, 'a', 'b', 'c', 0, 0, 0, 0, 0)},
		{"8-byte string", func(e *Encoder) { e.String("12345678") }, append([]byte{8, 0, 0, 0, 0, 0, 0, 0}, "12345678"...)},
		{"strings", func(e *Encoder) { e.Strings([]string{"a"}) }, append([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, 'a', 0, 0, 0, 0, 0, 0, 0)},
		{"bool", func(e *Encoder) { e.Bool(true) }, []byte{1, 0, 0, 0, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			e := NewEncoder(&buf)
			tt.enc(e)
			if err := e.Flush(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, buf.Bytes()); diff != "" {
				t.Errorf("encoding (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecoderRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"nonzero padding", append([]byte{1, 0, 0, 0, 0, 0, 0, 0}, 'a', 0, 0, 0, 1, 0, 0, 0)},
		{"truncated", []byte{9, 0, 0, 0, 0, 0, 0, 0, 'a'}},
		{"huge", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := NewDecoder(bytes.NewReader(tt.in)).String(); err == nil {
				t.Errorf("String() = %q, want an error", s)
			}
		})
	}
	if _, err := NewDecoder(bytes.NewReader([]byte{2, 0, 0, 0, 0, 0, 0, 0})).Bool(); !errors.Is(err, ErrProtocol) {
		t.Errorf("Bool(2) = %v, want ErrProtocol", err)
	}
}

func TestStripANSI(t *testing.T) {
	if got := stripANSI("path '\x1b[35;1m/x\x1b[0m' is bad"); got != "path '/x' is bad" {
		t.Errorf("stripANSI = %q", got)
	}
}

// replayConn is a net.Conn whose peer replays fixed bytes and swallows writes.
type replayConn struct{ r io.Reader }

func (c *replayConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *replayConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return nil }
func (c *replayConn) RemoteAddr() net.Addr             { return nil }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }

// handshakeReply is what a Nix 2.8 daemon sends for the handshake.
func handshakeReply() []byte {
	var buf bytes.Buffer
	e := NewEncoder(&buf)
	e.Uint64(Magic2)
	e.Uint64(ProtocolVersion)
	e.String("2.8.0")
	e.Uint64(StderrLast)
	e.Flush()
	return buf.Bytes()
}

// FuzzClientReplies feeds arbitrary daemon replies to a QueryPathInfo after
// a valid handshake: the client must fail cleanly, never panic or hang.
func FuzzClientReplies(f *testing.F) {
	var ok bytes.Buffer
	e := NewEncoder(&ok)
	e.Uint64(StderrNext)
	e.String("log line\n")
	e.Uint64(StderrStartActivity)
	e.Uint64(1)
	e.Uint64(3)
	e.Uint64(100)
	e.String("querying")
	e.Uint64(2)
	e.Uint64(fieldInt)
	e.Uint64(7)
	e.Uint64(fieldString)
	e.String("s")
	e.Uint64(0)
	e.Uint64(StderrStopActivity)
	e.Uint64(1)
	e.Uint64(StderrLast)
	e.Uint64(1)
	e.String("/nix/store/00000000000000000000000000000000-x.drv")
	e.String("0000000000000000000000000000000000000000000000000000000000000000")
	e.Strings([]string{"/nix/store/00000000000000000000000000000000-y"})
	e.Uint64(1700000000)
	e.Uint64(120)
	e.Bool(true)
	e.Strings([]string{"k-1:sig"})
	e.String("")
	e.Flush()
	f.Add(ok.Bytes())
	var bad bytes.Buffer
	e = NewEncoder(&bad)
	e.Uint64(StderrError)
	e.String("Error")
	e.Uint64(0)
	e.String("")
	e.String("boom")
	e.Uint64(0)
	e.Uint64(1)
	e.Uint64(0)
	e.String("trace")
	e.Flush()
	f.Add(bad.Bytes())
	f.Add([]byte{})
	hs := handshakeReply()
	f.Fuzz(func(t *testing.T, reply []byte) {
		conn := &replayConn{r: io.MultiReader(bytes.NewReader(hs), bytes.NewReader(reply))}
		c, err := NewClient(context.Background(), conn, nil)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		c.QueryPathInfo(context.Background(), "/nix/store/00000000000000000000000000000000-x")
	})
}
