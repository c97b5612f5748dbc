package nar

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Writer encodes a NAR from headers and contents, in NAR order: the root
// first, a directory before its entries, entries in strictly increasing
// bytewise name order. It refuses anything that would not be a canonical
// NAR. Close finishes the NAR; it does not close the underlying writer.
type Writer struct {
	w        *bufio.Writer
	started  bool
	closed   bool
	rootDone bool       // the root was a file or symlink and is written
	dirs     []dirFrame // open directories, innermost last
	inFile   bool
	path     string // current file, for errors
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
		if h.Path != "" {
			return fmt.Errorf("nar: first header has path %q, want the root \"\"", h.Path)
		}
		w.started = true
		w.str(magic)
		return w.node(h)
	}
	if w.rootDone || len(w.dirs) == 0 {
		return fmt.Errorf("nar: entry %q: the root is not a directory", h.Path)
	}
	dir, name := dirBase(h.Path)
	if h.Path == "" {
		return errors.New("nar: second root header")
	}
	if err := checkName(name); err != nil {
		return fmt.Errorf("nar: entry %q: %w", h.Path, err)
	}
	// Close directories until dir is the innermost one.
	for len(w.dirs) > 0 && w.dirs[len(w.dirs)-1].path != dir {
		w.closeDir()
	}
	if len(w.dirs) == 0 {
		return fmt.Errorf("nar: entry %q: its directory %q is not open (entries must come in NAR order)", h.Path, dir)
	}
	top := &w.dirs[len(w.dirs)-1]
	if top.prev != "" && name <= top.prev {
		return fmt.Errorf("nar: entry %q comes after %q: entries must be unique and sorted bytewise", h.Path, joinPath(dir, top.prev))
	}
	top.prev = name
	w.str("entry")
	w.str("(")
	w.str("name")
	w.str(name)
	w.str("node")
	return w.node(h)
}

func (w *Writer) node(h *Header) error {
	w.str("(")
	w.str("type")
	switch h.Type {
	case TypeRegular:
		if h.Size < 0 {
			return fmt.Errorf("nar: %s: negative size %d", where(h.Path), h.Size)
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
		w.inFile, w.path, w.fileLeft, w.fileSize = true, h.Path, h.Size, h.Size
	case TypeSymlink:
		if err := checkTarget(h.LinkTarget); err != nil {
			return fmt.Errorf("nar: %s: %w", where(h.Path), err)
		}
		w.str("symlink")
		w.str("target")
		w.str(h.LinkTarget)
		w.endNode(h.Path)
	case TypeDirectory:
		if len(w.dirs) >= maxDepth {
			return fmt.Errorf("nar: %s: directories nested deeper than %d", where(h.Path), maxDepth)
		}
		w.str("directory")
		w.dirs = append(w.dirs, dirFrame{path: h.Path})
	default:
		return fmt.Errorf("nar: %s: unknown type %v", where(h.Path), h.Type)
	}
	return nil
}

// endNode closes a node and, below the root, its entry.
func (w *Writer) endNode(path string) {
	w.str(")")
	if path != "" {
		w.str(")")
	} else {
		w.rootDone = true
	}
}

func (w *Writer) closeDir() {
	d := w.dirs[len(w.dirs)-1]
	w.dirs = w.dirs[:len(w.dirs)-1]
	w.endNode(d.path)
	if d.path == "" {
		w.rootDone = true
	}
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
	w.endNode(w.path)
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
