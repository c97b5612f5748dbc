package publish

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// NAR layout: every token is an 8-byte length, the bytes, and zero padding
// to a multiple of 8 (strLen). These are the sizes of the fixed token
// sequences, so that a walk of the file system can tell where each file's
// contents lie in the NAR nar.Dump writes, without reading any contents.
const (
	tokMagic     = 8 + 16             // "nix-archive-1"
	tokParen     = 8 + 8              // "(" or ")"
	tokExec      = (8 + 16) + 8       // "executable" ""
	regularHead  = tokParen + 16*2    // "(" "type" "regular"
	contentsHead = 16 + 8             // "contents" <size>
	symlinkHead  = tokParen + 16*3    // "(" "type" "symlink" "target"
	dirHead      = tokParen + 16 + 24 // "(" "type" "directory"
	entryHead    = 16 + tokParen + 16 // "entry" "(" "name"
	tokNode      = 16                 // "node"
)

// strLen is the size of a string token holding n bytes.
func strLen(n int64) int64 { return 8 + (n+7)&^7 }

// writeListing walks the store object at root and writes its listing in
// the form Nix 2.8 writes "<hashpart>.ls" files (binary-cache-store.cc,
// listNar): {"version":1,"root":NODE} with keys in Nix's order and strings
// escaped as Nix escapes them. It returns the size of the NAR the tree
// serialises to, which the caller compares with the registered NarSize to
// detect a path that changed or vanished during the walk.
//
// Memory is bounded by the depth of the tree and the size of one directory:
// nothing of the listing is kept once written.
func writeListing(ctx context.Context, w io.Writer, root string) (narSize int64, err error) {
	bw := bufio.NewWriterSize(w, 32<<10)
	lw := &listingWriter{ctx: ctx, w: bw, off: tokMagic}
	bw.WriteString(`{"version":1,"root":`)
	if err := lw.node(root); err != nil {
		return 0, err
	}
	bw.WriteString("}")
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("write listing of %s: %w", root, err)
	}
	return lw.off, nil
}

type listingWriter struct {
	ctx context.Context
	w   *bufio.Writer
	off int64 // NAR offset reached so far
	num [24]byte
}

func (lw *listingWriter) int(n int64) { lw.w.Write(strconv.AppendInt(lw.num[:0], n, 10)) }

// node writes the listing of the object at path and advances lw.off past it.
func (lw *listingWriter) node(path string) error {
	if err := lw.ctx.Err(); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("list %s: %w", path, err)
	}
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		exec := mode&0o100 != 0 // S_IXUSR, as Nix's dump decides
		lw.off += regularHead
		if exec {
			lw.off += tokExec
		}
		lw.off += contentsHead
		size := fi.Size()
		lw.w.WriteString(`{"type":"regular","size":`)
		lw.int(size)
		if exec {
			lw.w.WriteString(`,"executable":true`)
		}
		lw.w.WriteString(`,"narOffset":`)
		lw.int(lw.off)
		lw.w.WriteString("}")
		lw.off += (size+7)&^7 + tokParen // contents, padding, ")"
	case mode&os.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return fmt.Errorf("list %s: %w", path, err)
		}
		lw.w.WriteString(`{"type":"symlink","target":`)
		writeNixJSONString(lw.w, target)
		lw.w.WriteString("}")
		lw.off += symlinkHead + strLen(int64(len(target))) + tokParen
	case mode.IsDir():
		names, err := readDirNames(path)
		if err != nil {
			return fmt.Errorf("list %s: %w", path, err)
		}
		lw.w.WriteString(`{"type":"directory","entries":{`)
		lw.off += dirHead
		for i, name := range names {
			if i > 0 {
				lw.w.WriteString(",")
			}
			writeNixJSONString(lw.w, name)
			lw.w.WriteString(":")
			lw.off += entryHead + strLen(int64(len(name))) + tokNode
			if err := lw.node(filepath.Join(path, name)); err != nil {
				return err
			}
			lw.off += tokParen // ")" closing the entry
		}
		lw.w.WriteString("}}")
		lw.off += tokParen
	default:
		return fmt.Errorf("list %s: unsupported file type %v (a NAR holds only regular files, directories and symlinks)", path, mode.Type())
	}
	return nil
}

// readDirNames returns the entry names of a directory in bytewise order,
// the order of a NAR.
func readDirNames(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// writeNixJSONString writes s as Nix 2.8's toJSON does (libutil/json.cc):
// '"' and '\\' escaped, \n \r \t by name, other bytes below 0x20 as \u00XX,
// everything else (including bytes of invalid UTF-8) as is.
func writeNixJSONString(w *bufio.Writer, s string) {
	const hex = "0123456789abcdef"
	w.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			w.WriteByte('\\')
			w.WriteByte(c)
		case c == '\n':
			w.WriteString(`\n`)
		case c == '\r':
			w.WriteString(`\r`)
		case c == '\t':
			w.WriteString(`\t`)
		case c < 0x20:
			w.WriteString(`\u00`)
			w.WriteByte(hex[c>>4])
			w.WriteByte(hex[c&0xf])
		default:
			w.WriteByte(c)
		}
	}
	w.WriteByte('"')
}

// serveListing answers GET and HEAD /<hashpart>.ls. The listing is walked
// from the file system as it is sent; if the tree walked does not add up to
// the registered NAR size, the path changed and the response is aborted.
func (s *Server) serveListing(w *statusWriter, r *http.Request, hp string) {
	e := s.lookup(w, r, hp)
	if e == nil {
		return
	}
	info := e.info
	real := s.realPath(info.Path)
	if _, err := os.Lstat(real); err != nil {
		notFound(w, "store path "+info.Path.String()+" is gone from disk")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodHead {
		return
	}
	// Hold the listing's last byte back until the walk is checked.
	hw := &holdLast{w: w}
	size, err := writeListing(r.Context(), hw, real)
	if err == nil && uint64(size) != info.NarSize {
		err = fmt.Errorf("%w: the tree adds up to a %d-byte NAR, registered %d", errMismatch, size, info.NarSize)
	}
	if err == nil {
		err = hw.finish()
	}
	if err != nil {
		if r.Context().Err() == nil {
			s.log.Error("publish: listing aborted", "path", info.Path.String(), "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// holdLast passes writes on except the last byte written so far.
type holdLast struct {
	w    io.Writer
	last []byte
}

func (h *holdLast) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if h.last != nil {
		if _, err := h.w.Write(h.last); err != nil {
			return 0, err
		}
	}
	if _, err := h.w.Write(p[:len(p)-1]); err != nil {
		return 0, err
	}
	h.last = append(h.last[:0], p[len(p)-1])
	return len(p), nil
}

func (h *holdLast) finish() error {
	_, err := h.w.Write(h.last)
	return err
}
