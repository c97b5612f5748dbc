package nar

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Writer encodes a NAR from headers and contents, in NAR order: the root
// first, a directory before its entries, entries in strictly increasing
// bytewise name order. It refuses anything that would not be a canonical
// NAR. Close finishes the NAR; it does not close the underlying writer.
//
// A header places its object by Path or, if Path is empty and Depth is not
// zero, by Name and Depth (as Reader returns them).
type Writer struct {
	w        *bufio.Writer
	started  bool
	closed   bool
	rootDone bool       // the root was a file or symlink and is written
	dirs     []dirFrame // open directories, innermost last
	inFile   bool
	path     string // current file, for errors
	fileRoot bool   // the current file is the root
	fileLeft int64
	fileSize int64
	err      error // sticky
}

// NewWriter returns a Writer writing a NAR to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 64<<10)}
}

func (w *Writer) str(s string) {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
	w.w.Write(n[:])
	w.w.WriteString(s)
	w.pad(uint64(len(s)))
}

func (w *Writer) pad(n uint64) {
	var zero [8]byte
	w.w.Write(zero[:padLen(n)])
}

// WriteHeader starts the next object. A regular file's Size bytes of
// contents must then be written with Write.
func (w *Writer) WriteHeader(h *Header) error {
	if w.err != nil {
		return w.err
	}
	if err := w.writeHeader(h); err != nil {
		w.err = err
		return err
	}
	return nil
}

func (w *Writer) writeHeader(h *Header) error {
	if w.closed {
		return errors.New("nar: WriteHeader after Close")
	}
	if err := w.endFile(); err != nil {
		return err
	}
	if !w.started {
		if h.Path != "" || h.Depth != 0 {
			return fmt.Errorf("nar: first header has path %q, want the root \"\"", h.place())
		}
		w.started = true
		w.str(magic)
		return w.node(h, true)
	}
	if w.rootDone || len(w.dirs) == 0 {
		return fmt.Errorf("nar: entry %q: the root is not a directory", h.place())
	}
	name, depth := h.Name, h.Depth
	if h.Path != "" {
		var dir string
		dir, name = dirBase(h.Path)
		depth = strings.Count(h.Path, "/") + 1
		if depth > len(w.dirs) || !w.openPath(dir, depth) {
			return fmt.Errorf("nar: entry %q: its directory %q is not open (entries must come in NAR order)", h.Path, dir)
		}
	} else if depth == 0 {
		return errors.New("nar: second root header")
	} else if depth > len(w.dirs) {
		return fmt.Errorf("nar: entry %q at depth %d: its directory is not open (entries must come in NAR order)", name, depth)
	}
	if err := checkName(name); err != nil {
		return fmt.Errorf("nar: entry %q: %w", h.place(), err)
	}
	// Close directories until the entry's is the innermost one.
	for len(w.dirs) > depth {
		w.closeDir()
	}
	top := &w.dirs[len(w.dirs)-1]
	if top.prev != "" && name <= top.prev {
		return fmt.Errorf("nar: entry %q comes after %q: entries must be unique and sorted bytewise", h.place(), top.prev)
	}
	top.prev = name
	w.str("entry")
	w.str("(")
	w.str("name")
	w.str(name)
	w.str("node")
	return w.node(h, false)
}

// place names h's object for errors.
func (h *Header) place() string {
	if h.Path != "" || h.Depth == 0 {
		return h.Path
	}
	return h.Name
}

// openPath reports whether dir (depth-1 segments) names the open
// directories w.dirs[1:depth].
func (w *Writer) openPath(dir string, depth int) bool {
	for i := 1; i < depth; i++ {
		seg, rest, _ := strings.Cut(dir, "/")
		if seg != w.dirs[i].name {
			return false
		}
		dir = rest
	}
	return dir == ""
}

func (w *Writer) node(h *Header, root bool) error {
	name := h.Name
	if h.Path != "" {
		_, name = dirBase(h.Path)
	}
	w.str("(")
	w.str("type")
	switch h.Type {
	case TypeRegular:
		if h.Size < 0 {
			return fmt.Errorf("nar: %s: negative size %d", where(h.place()), h.Size)
		}
		w.str("regular")
		if h.Executable {
			w.str("executable")
			w.str("")
		}
		w.str("contents")
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(h.Size))
		w.w.Write(n[:])
		w.inFile, w.path, w.fileRoot, w.fileLeft, w.fileSize = true, h.place(), root, h.Size, h.Size
	case TypeSymlink:
		if err := checkTarget(h.LinkTarget); err != nil {
			return fmt.Errorf("nar: %s: %w", where(h.place()), err)
		}
		w.str("symlink")
		w.str("target")
		w.str(h.LinkTarget)
		w.endNode(root)
	case TypeDirectory:
		if len(w.dirs) >= maxDepth {
			return fmt.Errorf("nar: %s: directories nested deeper than %d", where(h.place()), maxDepth)
		}
		w.str("directory")
		w.dirs = append(w.dirs, dirFrame{name: name})
	default:
		return fmt.Errorf("nar: %s: unknown type %v", where(h.place()), h.Type)
	}
	return nil
}

// endNode closes a node and, below the root, its entry.
func (w *Writer) endNode(root bool) {
	w.str(")")
	if !root {
		w.str(")")
	} else {
		w.rootDone = true
	}
}

func (w *Writer) closeDir() {
	w.dirs = w.dirs[:len(w.dirs)-1]
	w.endNode(len(w.dirs) == 0)
}

func (w *Writer) endFile() error {
	if !w.inFile {
		return nil
	}
	if w.fileLeft > 0 {
		return fmt.Errorf("nar: %s: %d of %d bytes of contents missing", where(w.path), w.fileLeft, w.fileSize)
	}
	w.inFile = false
	w.pad(uint64(w.fileSize))
	w.endNode(w.fileRoot)
	return nil
}

// Write writes contents of the current regular file.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if !w.inFile {
		w.err = errors.New("nar: Write outside a regular file")
		return 0, w.err
	}
	if int64(len(p)) > w.fileLeft {
		w.err = fmt.Errorf("nar: %s: contents longer than the header's %d bytes", where(w.path), w.fileSize)
		return 0, w.err
	}
	n, err := w.w.Write(p)
	w.fileLeft -= int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

// Close finishes the NAR (closing open directories) and flushes it.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	if w.err == nil && !w.started {
		w.err = errors.New("nar: Close before the root was written")
	}
	if w.err == nil {
		w.err = w.endFile()
	}
	if w.err == nil {
		for len(w.dirs) > 0 {
			w.closeDir()
		}
		w.err = w.w.Flush()
	}
	w.closed = true
	return w.err
}

// Copy copies every remaining object of r to w, contents included. It does
// not close w.
func Copy(w *Writer, r *Reader) error {
	buf := make([]byte, 64<<10)
	for {
		h, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := w.WriteHeader(h); err != nil {
			return err
		}
		if h.Type == TypeRegular {
			if _, err := io.CopyBuffer(onlyWriter{w}, onlyReader{r}, buf); err != nil {
				return err
			}
		}
	}
}

// onlyWriter and onlyReader hide optional methods so io.CopyBuffer uses buf.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }
