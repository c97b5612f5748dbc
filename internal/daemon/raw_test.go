package daemon

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/worker"
)

// rawClient speaks the worker protocol byte by byte, to send what a real
// client never would.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	enc  *worker.Encoder
	dec  *worker.Decoder
}

// dialRaw connects and performs the handshake (and SetOptions unless
// skipOptions).
func dialRaw(t testing.TB, sock string) *rawClient {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	c := &rawClient{t: t, conn: conn, enc: worker.NewEncoder(conn), dec: worker.NewDecoder(conn)}
	c.enc.Uint64(worker.Magic1)
	c.flush()
	if m := c.u64(); m != worker.Magic2 {
		t.Fatalf("magic %#x", m)
	}
	if v := c.u64(); v != worker.ProtocolVersion {
		t.Fatalf("daemon version %#x", v)
	}
	c.enc.Uint64(worker.ProtocolVersion)
	c.enc.Uint64(0)
	c.enc.Uint64(0)
	c.flush()
	if v := c.str(); v != "2.8.0" {
		t.Fatalf("daemon Nix version %q", v)
	}
	if err := c.stderr(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	// SetOptions, as the real client: no overrides.
	c.enc.Uint64(uint64(worker.OpSetOptions))
	for _, v := range []uint64{0, 0, 0, 3, 1, 0, 0, 3, 0, 0, 1, 1, 0} {
		c.enc.Uint64(v)
	}
	if err := c.stderr(); err != nil {
		t.Fatalf("SetOptions: %v", err)
	}
	return c
}

func (c *rawClient) flush() {
	c.t.Helper()
	if err := c.enc.Flush(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) u64() uint64 {
	c.t.Helper()
	v, err := c.dec.Uint64()
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

func (c *rawClient) str() string {
	c.t.Helper()
	s, err := c.dec.String()
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

// daemonErr is a STDERR_ERROR.
type daemonErr struct{ msg string }

func (e *daemonErr) Error() string { return e.msg }

// stderr flushes and reads the log channel: nil at STDERR_LAST, a
// *daemonErr at STDERR_ERROR, another error if the connection fails.
func (c *rawClient) stderr() error {
	c.t.Helper()
	if err := c.enc.Flush(); err != nil {
		return err
	}
	for {
		msg, err := c.dec.Uint64()
		if err != nil {
			return err
		}
		switch msg {
		case worker.StderrLast:
			return nil
		case worker.StderrError:
			c.str() // "Error"
			c.u64()
			c.str()
			m := c.str()
			c.u64()
			for n := c.u64(); n > 0; n-- {
				c.u64()
				c.str()
			}
			return &daemonErr{m}
		case worker.StderrNext:
			c.str()
		case worker.StderrStartActivity:
			c.u64()
			c.u64()
			c.u64()
			c.str()
			c.fields()
			c.u64()
		case worker.StderrStopActivity:
			c.u64()
		case worker.StderrResult:
			c.u64()
			c.u64()
			c.fields()
		default:
			return fmt.Errorf("unexpected log message %#x", msg)
		}
	}
}

func (c *rawClient) fields() {
	for n := c.u64(); n > 0; n-- {
		if c.u64() == 0 {
			c.u64()
		} else {
			c.str()
		}
	}
}

// frames writes data as a framed stream (in pieces of at most 4 KiB) and
// its terminator.
func (c *rawClient) frames(data []byte) {
	for len(data) > 0 {
		n := min(len(data), 4096)
		c.enc.Uint64(uint64(n))
		c.enc.Raw(data[:n])
		data = data[n:]
	}
	c.enc.Uint64(0)
}

// isValid asks IsValidPath.
func (c *rawClient) isValid(p string) bool {
	c.t.Helper()
	c.enc.Uint64(uint64(worker.OpIsValidPath))
	c.enc.String(p)
	if err := c.stderr(); err != nil {
		c.t.Fatalf("IsValidPath %s: %v", p, err)
	}
	v := c.u64()
	return v == 1
}

// addFile adds content as a flat file with AddToStore (fixed:r:sha256 of
// its NAR) and returns the path the daemon reports.
func (c *rawClient) addFile(name string, content []byte) (string, error) {
	c.t.Helper()
	c.enc.Uint64(uint64(worker.OpAddToStore))
	c.enc.String(name)
	c.enc.String("fixed:r:sha256")
	c.enc.Strings(nil)
	c.enc.Bool(false)
	c.frames(narFile(content))
	if err := c.stderr(); err != nil {
		return "", err
	}
	path := c.str()
	c.str() // deriver
	c.str() // hash
	c.dec.Strings()
	c.u64()
	c.u64()
	c.u64()
	c.dec.Strings()
	c.str()
	return path, nil
}

// addNar sends AddToStoreNar with the given metadata and NAR.
func (c *rawClient) addNar(path, narHash string, narSize uint64, refs []string, ca string, data []byte) error {
	c.t.Helper()
	c.enc.Uint64(uint64(worker.OpAddToStoreNar))
	c.enc.String(path)
	c.enc.String("")
	c.enc.String(narHash)
	c.enc.Strings(refs)
	c.enc.Uint64(0)
	c.enc.Uint64(narSize)
	c.enc.Bool(false)
	c.enc.Strings(nil)
	c.enc.String(ca)
	c.enc.Bool(false)
	c.enc.Bool(true) // dontCheckSigs
	c.frames(data)
	return c.stderr()
}

// NAR building blocks.
func narTok(b *bytes.Buffer, s string) {
	binary.Write(b, binary.LittleEndian, uint64(len(s)))
	b.WriteString(s)
	b.Write(make([]byte, (8-len(s)%8)%8))
}

func narFile(content []byte) []byte {
	var b bytes.Buffer
	for _, t := range []string{"nix-archive-1", "(", "type", "regular", "contents", string(content), ")"} {
		narTok(&b, t)
	}
	return b.Bytes()
}

// narDirWith is a NAR of a directory with one regular file named name.
func narDirWith(name string, content []byte) []byte {
	var b bytes.Buffer
	for _, t := range []string{"nix-archive-1", "(", "type", "directory", "entry", "(", "name", name, "node",
		"(", "type", "regular", "contents", string(content), ")", ")", ")"} {
		narTok(&b, t)
	}
	return b.Bytes()
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// sourcePath is the path `nix-store --add` gives a NAR without references.
func sourcePath(t testing.TB, storeDir, name string, nar []byte) string {
	t.Helper()
	h := sha256.Sum256([]byte("source:sha256:" + sha256Hex(nar) + ":" + storeDir + ":" + name))
	var c [20]byte
	for i, b := range h {
		c[i%20] ^= b
	}
	return storeDir + "/" + nix32.Encode(c[:]) + "-" + name
}

var _ = hash.SHA256
var _ = strings.Contains
