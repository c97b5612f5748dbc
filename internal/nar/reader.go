package nar

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// Reader reads a NAR strictly: it rejects anything `nix-store --restore`
// would reject (bad magic, non-zero padding, unknown tags, invalid names,
// truncation, trailing data), and also anything Dump would never produce
// (unsorted or duplicate entries, fields out of canonical order, tokens
// over Nix's later limits). Errors wrap ErrInvalid and name the entry.
//
// Next returns the objects in NAR order; Read streams the contents of the
// current regular file. Once Next or Read fails, every later call fails the
// same way.
type Reader struct {
	r      io.Reader
	buf    []byte
	lo, hi int   // buffered, unconsumed bytes are buf[lo:hi]
	off    int64 // NAR offset of buf[lo]
	err    error // sticky
	// srcErr is the error the source returned, possibly together with its
	// last bytes. Once set, the source is not read again, and the error is
	// reported when those bytes run out (io.EOF only if the NAR ends there).
	srcErr error

	started   bool
	dirs      []dirFrame // open directories, innermost last
	nodeDone  bool       // the current node's closing ")" is read; its entry's is not
	inFile    bool       // Read serves the current regular file
	path      string     // path of the current object, for errors
	pathIsDir bool       // path names the directory whose entries are being read
	fileLeft  int64      // unread bytes of the current regular file
	fileSize  int64
	exact     bool // never read past the NAR's end (NewExactReader)
}

type dirFrame struct {
	path string
	prev string // last entry name seen, "" before the first
}

const readBufSize = 64 << 10

// NewReader returns a Reader reading a NAR from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, buf: make([]byte, readBufSize)}
}

// NewExactReader returns a Reader for a NAR embedded in a longer stream
// (nix-store --import, the daemon's AddMultipleToStore): it never reads a
// byte from r past the NAR's last token, and at the end it returns io.EOF
// without looking at what follows. It reads r in smaller pieces, so r
// should be buffered.
func NewExactReader(r io.Reader) *Reader {
	nr := NewReader(r)
	nr.exact = true
	return nr
}

// Next advances to the next object and returns its header. It skips
// whatever of the current file's contents was not read. After the NAR's
// last token it checks that nothing follows and returns io.EOF.
func (r *Reader) Next() (*Header, error) {
	if r.err != nil {
		return nil, r.err
	}
	h, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	return h, nil
}

// Read reads the contents of the current regular file; it returns io.EOF
// at the file's end, and (0, io.EOF) for anything but a regular file.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if !r.inFile || r.fileLeft == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.fileLeft {
		p = p[:r.fileLeft]
	}
	var n int
	if r.lo < r.hi {
		n = copy(p, r.buf[r.lo:r.hi])
		r.lo += n
	} else if len(p) >= len(r.buf)/2 {
		// Large reads bypass the buffer.
		n = r.read(p)
		if n == 0 && r.srcErr != nil {
			r.err = r.truncated(r.srcErr)
			return 0, r.err
		}
	} else {
		if err := r.fillFile(); err != nil {
			r.err = err
			return 0, err
		}
		n = copy(p, r.buf[r.lo:r.hi])
		r.lo += n
	}
	r.off += int64(n)
	r.fileLeft -= int64(n)
	return n, nil
}

func (r *Reader) next() (*Header, error) {
	if !r.started {
		r.started = true
		b, err := r.readBytes(len(magic), "magic")
		if err != nil && !errors.Is(err, ErrInvalid) {
			return nil, err
		}
		if err != nil || string(b) != magic {
			return nil, fmt.Errorf("%w: input does not start with %q: not a NAR", ErrInvalid, magic)
		}
		return r.node("")
	}
	if r.inFile {
		if err := r.finishFile(); err != nil {
			return nil, err
		}
	}
	for {
		if r.nodeDone {
			r.nodeDone = false
			if len(r.dirs) == 0 {
				return nil, r.checkEOF()
			}
			if err := r.expect(")"); err != nil {
				return nil, err
			}
		}
		top := &r.dirs[len(r.dirs)-1]
		r.path, r.pathIsDir = top.path, true
		tag, err := r.readBytes(maxTag, "tag")
		if err != nil {
			return nil, err
		}
		switch string(tag) {
		case ")":
			r.dirs = r.dirs[:len(r.dirs)-1]
			r.nodeDone = true
			continue
		case "entry":
		default:
			return nil, r.errorf("expected \"entry\" or \")\" in directory, got %q", tag)
		}
		if err := r.expect("("); err != nil {
			return nil, err
		}
		if err := r.expect("name"); err != nil {
			return nil, err
		}
		b, err := r.readBytes(maxName, "entry name")
		if err != nil {
			return nil, err
		}
		name := string(b)
		if err := checkName(name); err != nil {
			return nil, r.errorf("%v", err)
		}
		if top.prev != "" && name <= top.prev {
			if name == top.prev {
				return nil, r.errorf("duplicate entry %q", name)
			}
			return nil, r.errorf("entry %q after %q: directory not sorted", name, top.prev)
		}
		top.prev = name
		path := joinPath(top.path, name)
		r.path, r.pathIsDir = path, false
		if err := r.expect("node"); err != nil {
			return nil, err
		}
		return r.node(path)
	}
}

// node reads an object's opening tokens up to where its header is known.
func (r *Reader) node(path string) (*Header, error) {
	r.path, r.pathIsDir = path, false
	if err := r.expect("("); err != nil {
		return nil, err
	}
	if err := r.expect("type"); err != nil {
		return nil, err
	}
	t, err := r.readBytes(maxTag, "type")
	if err != nil {
		return nil, err
	}
	h := &Header{Path: path}
	switch string(t) {
	case "regular":
		h.Type = TypeRegular
		tag, err := r.readBytes(maxTag, "tag")
		if err != nil {
			return nil, err
		}
		if string(tag) == "executable" {
			h.Executable = true
			v, err := r.readBytes(maxTag, "executable marker")
			if err != nil {
				return nil, err
			}
			if len(v) != 0 {
				return nil, r.errorf("executable marker has non-empty value %q", v)
			}
			if tag, err = r.readBytes(maxTag, "tag"); err != nil {
				return nil, err
			}
		}
		if string(tag) != "contents" {
			return nil, r.errorf("expected \"contents\", got %q", tag)
		}
		size, err := r.readUint64("file size")
		if err != nil {
			return nil, err
		}
		if size > 1<<63-1 {
			return nil, r.errorf("file size %d too large", size)
		}
		h.Size = int64(size)
		h.Offset = r.off
		r.inFile, r.fileLeft, r.fileSize = true, h.Size, h.Size
	case "symlink":
		h.Type = TypeSymlink
		if err := r.expect("target"); err != nil {
			return nil, err
		}
		b, err := r.readBytes(maxTarget, "symlink target")
		if err != nil {
			return nil, err
		}
		h.LinkTarget = string(b)
		if err := checkTarget(h.LinkTarget); err != nil {
			return nil, r.errorf("%v", err)
		}
		if err := r.expect(")"); err != nil {
			return nil, err
		}
		r.nodeDone = true
	case "directory":
		h.Type = TypeDirectory
		if len(r.dirs) >= maxDepth {
			return nil, r.errorf("directories nested deeper than %d", maxDepth)
		}
		r.dirs = append(r.dirs, dirFrame{path: path})
	default:
		return nil, r.errorf("unknown file type %q", t)
	}
	return h, nil
}

// finishFile skips the rest of the current file and reads its padding and
// closing token.
func (r *Reader) finishFile() error {
	for r.fileLeft > 0 {
		if r.lo == r.hi {
			if err := r.fillFile(); err != nil {
				return err
			}
		}
		n := int64(r.hi - r.lo)
		if n > r.fileLeft {
			n = r.fileLeft
		}
		r.lo += int(n)
		r.off += n
		r.fileLeft -= n
	}
	r.inFile = false
	if err := r.padding(uint64(r.fileSize)); err != nil {
		return err
	}
	if err := r.expect(")"); err != nil {
		return err
	}
	r.nodeDone = true
	return nil
}

// read reads from the source, remembering its error.
func (r *Reader) read(p []byte) int {
	if r.srcErr != nil {
		return 0
	}
	n, err := r.r.Read(p)
	if err != nil {
		r.srcErr = err
	}
	return n
}

// fillFile makes some of the current file's contents available in
// buf[lo:hi] (called with nothing buffered and contents left).
func (r *Reader) fillFile() error {
	if !r.exact {
		return r.fill(1)
	}
	return r.fillMax(1, int(min(r.fileLeft, int64(len(r.buf)))))
}

// fill makes at least n bytes available in buf[lo:hi].
func (r *Reader) fill(n int) error {
	if r.exact {
		return r.fillMax(n, n)
	}
	return r.fillMax(n, len(r.buf))
}

// fillMax makes at least n bytes available in buf[lo:hi], reading no more
// than makes max available.
func (r *Reader) fillMax(n, max int) error {
	if r.hi-r.lo >= n {
		return nil
	}
	if r.lo+n > len(r.buf) || r.exact && r.lo+max > len(r.buf) {
		r.hi = copy(r.buf, r.buf[r.lo:r.hi])
		r.lo = 0
	}
	end := min(r.lo+max, len(r.buf))
	for r.hi-r.lo < n {
		r.hi += r.read(r.buf[r.hi:end])
		if r.hi-r.lo < n && r.srcErr != nil {
			return r.truncated(r.srcErr)
		}
	}
	return nil
}

// truncated reports the end of the input, or an error reading it, in the
// middle of the NAR. Only the former makes the NAR invalid.
func (r *Reader) truncated(err error) error {
	at := r.off + int64(r.hi-r.lo)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return r.errorf("truncated at byte %d: %w", at, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("read NAR: %s: at byte %d: %w", where(r.path), at, err)
}

func (r *Reader) readUint64(what string) (uint64, error) {
	if err := r.fill(8); err != nil {
		return 0, err
	}
	b := r.buf[r.lo : r.lo+8]
	v := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
	r.lo += 8
	r.off += 8
	return v, nil
}

// readBytes reads a string token of at most max bytes. The result aliases
// the buffer and is valid until the next read.
func (r *Reader) readBytes(max int, what string) ([]byte, error) {
	n, err := r.readUint64(what)
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, r.errorf("%s of %d bytes exceeds the limit of %d", what, n, max)
	}
	l := int(n)
	total := l + padLen(n)
	if err := r.fill(total); err != nil {
		return nil, err
	}
	b := r.buf[r.lo : r.lo+l]
	for _, c := range r.buf[r.lo+l : r.lo+total] {
		if c != 0 {
			return nil, r.errorf("non-zero padding after %s at byte %d", what, r.off+int64(l))
		}
	}
	r.lo += total
	r.off += int64(total)
	return b, nil
}

func (r *Reader) padding(n uint64) error {
	p := padLen(n)
	if p == 0 {
		return nil
	}
	if err := r.fill(p); err != nil {
		return err
	}
	for _, c := range r.buf[r.lo : r.lo+p] {
		if c != 0 {
			return r.errorf("non-zero padding after contents at byte %d", r.off)
		}
	}
	r.lo += p
	r.off += int64(p)
	return nil
}

func (r *Reader) expect(tag string) error {
	b, err := r.readBytes(maxTag, "tag")
	if err != nil {
		return err
	}
	if string(b) != tag {
		return r.errorf("expected %q, got %q", tag, b)
	}
	return nil
}

// checkEOF verifies that the NAR ends after its last token.
func (r *Reader) checkEOF() error {
	if r.exact {
		return io.EOF
	}
	if r.lo < r.hi {
		return fmt.Errorf("%w: trailing data at byte %d after the end of the NAR", ErrInvalid, r.off)
	}
	var one [1]byte
	for r.srcErr == nil {
		if r.read(one[:]) > 0 {
			return fmt.Errorf("%w: trailing data at byte %d after the end of the NAR", ErrInvalid, r.off)
		}
	}
	if r.srcErr == io.EOF {
		return io.EOF
	}
	// The source failed: what it gave may not be all it held.
	return fmt.Errorf("read NAR: after its end at byte %d: %w", r.off, r.srcErr)
}

// errorf returns an ErrInvalid error naming the current object.
func (r *Reader) errorf(format string, a ...any) error {
	w := where(r.path)
	if r.pathIsDir {
		w = "root directory"
		if r.path != "" {
			w = fmt.Sprintf("directory %q", r.path)
		}
	}
	return fmt.Errorf("%w: %s: %w", ErrInvalid, w, fmt.Errorf(format, a...))
}

func where(path string) string {
	if path == "" {
		return "root"
	}
	return fmt.Sprintf("entry %q", path)
}

// dirBase splits a header path into its parent directory and name.
func dirBase(path string) (dir, name string) {
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return "", path
	}
	return path[:i], path[i+1:]
}
