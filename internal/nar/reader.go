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
// over Nix's later limits, more objects or deeper nesting than its Limits
// allow). Errors wrap ErrInvalid and name the entry.
//
// Next returns the objects in NAR order; Read streams the contents of the
// current regular file. Once Next or Read fails, every later call fails the
// same way. Its costs are linear in the NAR: headers carry an object's
// name and depth, not its full path (see Path), so a deep tree of long
// names costs no more than a flat one.
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

	limits   Limits
	objects  int // objects read so far
	started  bool
	dirs     []dirFrame // open directories, innermost last; dirs[0] is the root
	nodeDone bool       // the current node's closing ")" is read; its entry's is not
	inFile   bool       // Read serves the current regular file
	// The current object, for Path and errors: the entry name below its
	// parent dirs[curDepth-1] (curDepth 0 is the root). With curIsDir, it
	// is the innermost open directory, whose entries are being read.
	curName  string
	curDepth int
	curIsDir bool
	fileLeft int64 // unread bytes of the current regular file
	fileSize int64
	exact    bool // never read past the NAR's end (NewExactReader)
}

type dirFrame struct {
	name string // "" for the root
	prev string // last entry name seen, "" before the first
}

// Limits bound what a Reader accepts beyond Nix's own rules, so that a
// small hostile NAR cannot cost much: a NAR with more objects or deeper
// directory nesting is invalid. Zero fields mean the defaults.
type Limits struct {
	// MaxObjects bounds the objects (files, symlinks, directories, the
	// root included); 0 means DefaultMaxObjects.
	MaxObjects int
	// MaxDepth bounds how many directories may be nested, the root
	// directory included; 0 means DefaultMaxDepth.
	MaxDepth int
}

// The default Limits. For scale: /usr/lib of a Debian machine, a whole
// distribution's libraries, holds 73,294 objects at most 18 deep.
const (
	DefaultMaxObjects = 1 << 20
	DefaultMaxDepth   = 256
)

// SetLimits sets the limits the Reader enforces; call it before Next.
func (r *Reader) SetLimits(l Limits) {
	if l.MaxObjects <= 0 {
		l.MaxObjects = DefaultMaxObjects
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	r.limits = l
}

// Path returns the path of the object Next returned last ("" for the
// root, "a/b" below it). It costs the path's length; the Reader never
// builds paths otherwise.
func (r *Reader) Path() string {
	if r.curIsDir {
		return r.dirPath(len(r.dirs))
	}
	return joinPath(r.dirPath(r.curDepth), r.curName)
}

// dirPath joins the names of the open directories dirs[1:n].
func (r *Reader) dirPath(n int) string {
	var b strings.Builder
	for i := 1; i < n && i < len(r.dirs); i++ {
		if i > 1 {
			b.WriteByte('/')
		}
		b.WriteString(r.dirs[i].name)
	}
	return b.String()
}

const readBufSize = 64 << 10

// NewReader returns a Reader reading a NAR from r.
func NewReader(r io.Reader) *Reader {
	nr := &Reader{r: r, buf: make([]byte, readBufSize)}
	nr.SetLimits(Limits{})
	return nr
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
		return r.node("", 0)
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
		r.curIsDir = true
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
		r.curName, r.curDepth, r.curIsDir = name, len(r.dirs), false
		if err := r.expect("node"); err != nil {
			return nil, err
		}
		return r.node(name, len(r.dirs))
	}
}

// node reads an object's opening tokens up to where its header is known;
// name is its entry name and depth the number of directories above it.
func (r *Reader) node(name string, depth int) (*Header, error) {
	r.curName, r.curDepth, r.curIsDir = name, depth, false
	if r.objects++; r.objects > r.limits.MaxObjects {
		return nil, r.errorf("more than %d objects (files, directories and symlinks) in the NAR", r.limits.MaxObjects)
	}
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
	h := &Header{Name: name, Depth: depth}
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
		if len(r.dirs) >= r.limits.MaxDepth {
			return nil, r.errorf("directories nested deeper than %d", r.limits.MaxDepth)
		}
		r.dirs = append(r.dirs, dirFrame{name: name})
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
	return fmt.Errorf("read NAR: %s: at byte %d: %w", where(r.Path()), at, err)
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
	p := r.Path()
	w := where(p)
	if r.curIsDir {
		w = "root directory"
		if p != "" {
			w = fmt.Sprintf("directory %q", p)
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
