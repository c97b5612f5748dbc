package nar

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// toks builds raw NAR bytes: a string is a padded string token, a uint64 a
// bare number, a []byte is copied as it is.
func toks(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			b = binary.LittleEndian.AppendUint64(b, uint64(len(p)))
			b = append(b, p...)
			b = append(b, make([]byte, padLen(uint64(len(p))))...)
		case uint64:
			b = binary.LittleEndian.AppendUint64(b, p)
		case []byte:
			b = append(b, p...)
		default:
			panic("toks: bad part")
		}
	}
	return b
}

// dirOf wraps entries (each a complete `"entry" ... ")"` sequence) in a root directory.
func dirOf(entries ...[]byte) []byte {
	b := toks(magic, "(", "type", "directory")
	for _, e := range entries {
		b = append(b, e...)
	}
	return append(b, toks(")")...)
}

func entry(name string, node []byte) []byte {
	return append(toks("entry", "(", "name", name, "node"), append(node, toks(")")...)...)
}

func regular(contents string) []byte {
	return toks("(", "type", "regular", "contents", contents, ")")
}

func symlink(target string) []byte { return toks("(", "type", "symlink", "target", target, ")") }

func emptyDir() []byte { return toks("(", "type", "directory", ")") }

type maliciousNAR struct {
	name string
	nar  []byte
	want string // in the error message
}

// maliciousNARs returns NARs that Reader must reject. outside is a
// directory that a restore must never touch.
func maliciousNARs(outside string) []maliciousNAR {
	deep := toks(magic)
	for range DefaultMaxDepth + 1 {
		deep = append(deep, toks("(", "type", "directory", "entry", "(", "name", "d", "node")...)
	}
	valid := dirOf(entry("a", regular("hello")))
	nonZeroPad := toks(magic, "(", "type", "regular", "contents", uint64(1), []byte("x\x00\x00\x01\x00\x00\x00\x00"), ")")
	badTokenPad := toks(magic, "(", uint64(4), []byte("type\x00\x00\x00\x01"), "regular", "contents", "", ")")
	return []maliciousNAR{
		{"bad magic", toks("nix-archive-2", "(", "type", "regular", "contents", "", ")"), "not a NAR"},
		{"empty input", nil, "not a NAR"},
		{"huge magic length", toks(uint64(1) << 62), "not a NAR"},
		{"name dotdot", dirOf(entry("..", regular("x"))), `".." not allowed`},
		{"name dot", dirOf(entry(".", regular("x"))), `"." not allowed`},
		{"name with slash", dirOf(entry("a/b", regular("x"))), "contains '/'"},
		{"name empty", dirOf(entry("", regular("x"))), "empty entry name"},
		{"name with NUL", dirOf(entry("a\x00b", regular("x"))), "contains NUL"},
		{"name too long", dirOf(entry(strings.Repeat("n", 256), regular("x"))), "exceeds the limit"},
		{"unsorted", dirOf(entry("b", regular("x")), entry("a", regular("x"))), "not sorted"},
		{"duplicate file", dirOf(entry("a", regular("x")), entry("a", regular("y"))), "duplicate"},
		{"symlink then dir through it", dirOf(
			entry("x", symlink(outside)),
			entry("x", toks("(", "type", "directory", "entry", "(", "name", "pwned", "node", "(", "type", "regular", "contents", "x", ")", ")", ")"))), "duplicate"},
		{"symlink then file over it", dirOf(entry("x", symlink(outside+"/file")), entry("x", regular("pwned"))), "duplicate"},
		{"symlink then nested path", dirOf(entry("x", symlink(outside)), entry("x/pwned", regular("x"))), "contains '/'"},
		{"absurd name length", append(toks(magic, "(", "type", "directory", "entry", "(", "name"), toks(uint64(1)<<62)...), "exceeds the limit"},
		{"absurd tag length", append(toks(magic), toks(uint64(1)<<62)...), "exceeds the limit"},
		{"absurd target length", append(toks(magic, "(", "type", "symlink", "target"), toks(uint64(1)<<62)...), "exceeds the limit"},
		{"absurd contents length", toks(magic, "(", "type", "regular", "contents", uint64(1)<<62, []byte("abc")), "truncated"},
		{"contents length over int64", toks(magic, "(", "type", "regular", "contents", uint64(1)<<63, []byte("abc")), "too large"},
		{"non-zero contents padding", nonZeroPad, "non-zero padding"},
		{"non-zero token padding", badTokenPad, "non-zero padding"},
		{"trailing byte", append(bytes.Clone(valid), 0), "trailing data"},
		{"trailing token", append(bytes.Clone(valid), toks(")")...), "trailing data"},
		{"unknown type", toks(magic, "(", "type", "fifo", ")"), "unknown file type"},
		{"unknown field in regular", toks(magic, "(", "type", "regular", "mode", "0644", ")"), `expected "contents"`},
		{"unknown field in directory", dirOf(toks("mode", "0755")), `expected "entry" or ")"`},
		{"unknown field in entry", dirOf(toks("entry", "(", "nam", "a", "node", ")")), `expected "name"`},
		{"executable with value", toks(magic, "(", "type", "regular", "executable", "1", "contents", "", ")"), "non-empty value"},
		{"executable after contents", toks(magic, "(", "type", "regular", "contents", "", "executable", "", ")"), `expected ")"`},
		{"regular without contents", toks(magic, "(", "type", "regular", ")"), `expected "contents"`},
		{"two types", toks(magic, "(", "type", "regular", "type", "regular", ")"), `expected "contents"`},
		{"empty symlink target", toks(magic, "(", "type", "symlink", "target", "", ")"), "empty symlink target"},
		{"symlink target with NUL", toks(magic, "(", "type", "symlink", "target", "a\x00b", ")"), "contains NUL"},
		{"missing open paren", toks(magic, "type", "regular", "contents", "", ")"), `expected "("`},
		{"entry without node", dirOf(toks("entry", "(", "name", "a", ")")), `expected "node"`},
		{"too deep", deep, "nested deeper"},
	}
}

// snapshot describes every file below dir: path, type, size and target.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		s := p + " " + fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			s += " " + string(b)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			s += " -> " + target
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMalicious(t *testing.T) {
	parent := t.TempDir()
	outside := filepath.Join(parent, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "file"), []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, parent)
	for _, tt := range maliciousNARs(outside) {
		t.Run(tt.name, func(t *testing.T) {
			err := readAll(bytes.NewReader(tt.nar))
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Reader: error = %v, want ErrInvalid containing %q", err, tt.want)
			}
			if _, err := List(bytes.NewReader(tt.nar)); err == nil {
				t.Errorf("List accepted it")
			}
			err = Restore(context.Background(), bytes.NewReader(tt.nar), filepath.Join(parent, "out"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Restore: error = %v, want one containing %q", err, tt.want)
			}
			if diff := cmp.Diff(before, snapshot(t, parent)); diff != "" {
				t.Errorf("Restore changed the parent directory (-before +after):\n%s", diff)
			}
		})
	}
}

// readAll reads a whole NAR, contents included.
func readAll(r io.Reader) error {
	nr := NewReader(r)
	for {
		_, err := nr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, nr); err != nil {
			return err
		}
	}
}

// TestTruncated cuts a NAR at every token boundary (and inside tokens):
// every prefix must be rejected, and a restore must leave nothing behind.
func TestTruncated(t *testing.T) {
	full := readGolden(t, "mixed", ".nar")
	parent := t.TempDir()
	for n := 0; n < len(full); n += 4 {
		prefix := full[:n]
		err := readAll(bytes.NewReader(prefix))
		if err == nil || !errors.Is(err, ErrInvalid) {
			t.Fatalf("prefix of %d bytes: Reader error = %v, want ErrInvalid", n, err)
		}
		if n >= 24 && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("prefix of %d bytes: error = %v, want io.ErrUnexpectedEOF", n, err)
		}
		if n%64 == 0 {
			err := Restore(context.Background(), bytes.NewReader(prefix), filepath.Join(parent, "out"))
			if err == nil {
				t.Fatalf("prefix of %d bytes: Restore succeeded", n)
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Fatalf("prefix of %d bytes: Restore left %v behind", n, entries)
			}
		}
	}
}

func TestRestoreRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	err := Restore(context.Background(), bytes.NewReader(readGolden(t, "file", ".nar")), dir)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("error = %v, want 'already exists'", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("Restore wrote %v into the existing directory", entries)
	}
	// A dangling symlink at the target counts as existing too.
	link := filepath.Join(t.TempDir(), "link")
	target := filepath.Join(t.TempDir(), "target")
	os.Symlink(target, link)
	if err := Restore(context.Background(), bytes.NewReader(readGolden(t, "file", ".nar")), link); err == nil {
		t.Error("Restore over a dangling symlink succeeded")
	}
	if _, err := os.Lstat(target); err == nil {
		t.Error("Restore wrote through a dangling symlink")
	}
}

// errReader returns its data, then err.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestReadError: a failing input is an I/O error, not an invalid NAR.
func TestReadError(t *testing.T) {
	errNet := errors.New("connection reset")
	full := readGolden(t, "mixed", ".nar")
	for _, n := range []int{0, 10, 100, 2000} {
		err := readAll(&errReader{full[:n], errNet})
		if !errors.Is(err, errNet) || errors.Is(err, ErrInvalid) {
			t.Errorf("after %d bytes: error = %v, want %v and not ErrInvalid", n, err, errNet)
		}
	}
}
