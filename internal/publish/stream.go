package publish

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	gohash "hash"
	"io"
	"os"
	"sort"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/hash"
)

// narStream writes the NAR of a store object straight from the file system
// (the bytes nar.Dump and nix-store --dump write), passing on only a window
// of it. It differs from nar.Dump in what serving needs: file contents
// outside the window are skipped unread, contents inside it go to the
// socket with sendfile when not being hashed, and every object's metadata
// (inode, size, mode, times) is folded into a digest, so that a tree found
// once to have the registered NarHash can later be recognised as unchanged
// without reading its contents again.
type narStream struct {
	ctx    context.Context
	out    narOut
	digest gohash.Hash  // sha256 of the stat records of every object
	hash   *hash.Writer // nil unless hashing: then it sees every NAR byte
	bufs   *streamBufs
	rec    []byte
	// dry walks the tree for its stat digest only: nothing is emitted
	// and no file is opened.
	dry bool
}

// streamBufs are a stream's buffers, reused across requests.
type streamBufs struct {
	out  []byte // pending output, cap outBufSize
	file []byte // file contents read for hashing or copying
	ents []byte // getdents
	link []byte // readlink
}

const (
	outBufSize  = 64 << 10
	fileBufSize = 256 << 10
	// Contents up to this size are copied through the output buffer;
	// larger ones go to the socket with sendfile, which costs more per
	// call but never touches the bytes.
	sendfileMin = 32 << 10
)

var bufPool = sync.Pool{New: func() any {
	return &streamBufs{
		out:  make([]byte, 0, outBufSize),
		file: make([]byte, fileBufSize),
		ents: make([]byte, 32<<10),
		link: make([]byte, unix.PathMax),
	}
}}

// streamNAR writes the window win of the NAR of the tree at root to w.
// With verify, it hashes the whole NAR as it goes (reading every file);
// otherwise it reads only what falls in the window. The window's last byte
// is not written: the caller releases it with out.release once it has
// checked the returned NAR size, hash (zero unless verify) and stat digest.
func streamNAR(ctx context.Context, w io.Writer, root string, win window, verify bool) (*narStream, error) {
	s := &narStream{ctx: ctx, digest: sha256.New(), bufs: bufPool.Get().(*streamBufs)}
	s.out = narOut{w: w, win: win, buf: s.bufs.out[:0]}
	if verify {
		s.hash = hash.NewWriter(hash.SHA256)
	}
	s.token("nix-archive-1")
	err := s.node(unix.AT_FDCWD, root, root)
	if err == nil {
		err = s.out.flush()
	}
	return s, err
}

// statDigest returns the stat digest of the tree at root, the one a stream
// of it would compute, without reading any file.
func statDigest(ctx context.Context, root string) ([sha256.Size]byte, error) {
	s := &narStream{ctx: ctx, digest: sha256.New(), bufs: bufPool.Get().(*streamBufs), dry: true}
	defer s.done()
	err := s.node(unix.AT_FDCWD, root, root)
	return s.sum(), err
}

// done returns the stream's buffers for reuse; s must not be used after.
func (s *narStream) done() {
	if !s.dry {
		s.bufs.out = s.out.buf[:0]
	}
	bufPool.Put(s.bufs)
	s.bufs = nil
}

// sum returns the stat digest of the tree streamed.
func (s *narStream) sum() (d [sha256.Size]byte) {
	s.digest.Sum(d[:0])
	return d
}

func (s *narStream) emit(p []byte) error {
	if s.dry {
		return nil
	}
	if s.hash != nil {
		s.hash.Write(p)
	}
	return s.out.bytes(p)
}

var zeros [8]byte

// token emits a NAR string token.
func (s *narStream) token(t string) error {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(t)))
	if err := s.emit(n[:]); err != nil {
		return err
	}
	if err := s.emit([]byte(t)); err != nil {
		return err
	}
	return s.emit(zeros[:(8-len(t)%8)%8])
}

func (s *narStream) tokens(ts ...string) error {
	for _, t := range ts {
		if err := s.token(t); err != nil {
			return err
		}
	}
	return nil
}

// record folds what identifies an object's current state into the digest:
// if any of it changes (a write changes mtime and ctime, a replacement the
// inode), the digest does.
func (s *narStream) record(kind byte, name string, st *unix.Stat_t, extra string) {
	r := append(s.rec[:0], kind)
	r = binary.LittleEndian.AppendUint64(r, uint64(len(name)))
	r = append(r, name...)
	for _, v := range []uint64{st.Dev, st.Ino, uint64(st.Mode), uint64(st.Size),
		uint64(st.Mtim.Sec), uint64(st.Mtim.Nsec), uint64(st.Ctim.Sec), uint64(st.Ctim.Nsec)} {
		r = binary.LittleEndian.AppendUint64(r, v)
	}
	r = binary.LittleEndian.AppendUint64(r, uint64(len(extra)))
	r = append(r, extra...)
	s.digest.Write(r)
	s.rec = r
}

// node streams the object name in directory dirfd; show is its path for errors.
func (s *narStream) node(dirfd int, name, show string) error {
	if err := s.ctx.Err(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stream %s: %w", show, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return s.regular(dirfd, name, show, &st)
	case unix.S_IFDIR:
		return s.directory(dirfd, name, show, &st)
	case unix.S_IFLNK:
		n, err := unix.Readlinkat(dirfd, name, s.bufs.link)
		if err != nil {
			return fmt.Errorf("stream %s: %w", show, err)
		}
		if n == len(s.bufs.link) {
			return fmt.Errorf("stream %s: symlink target too long", show)
		}
		target := string(s.bufs.link[:n])
		s.record('l', name, &st, target)
		return s.tokens("(", "type", "symlink", "target", target, ")")
	}
	return fmt.Errorf("stream %s: unsupported file type (mode %#o); a NAR holds only regular files, directories and symlinks", show, st.Mode)
}

func (s *narStream) regular(dirfd int, name, show string, lst *unix.Stat_t) error {
	if s.dry {
		s.record('f', name, lst, "")
		return nil
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("stream %s: %w", show, err)
	}
	f := os.NewFile(uintptr(fd), show)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stream %s: %w", show, err)
	}
	if st.Ino != lst.Ino || st.Dev != lst.Dev || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("stream %s: %w: replaced while being read", show, errMismatch)
	}
	s.record('f', name, &st, "")
	if st.Mode&unix.S_IXUSR != 0 {
		err = s.tokens("(", "type", "regular", "executable", "", "contents")
	} else {
		err = s.tokens("(", "type", "regular", "contents")
	}
	if err != nil {
		return err
	}
	size := uint64(st.Size)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], size)
	if err := s.emit(n[:]); err != nil {
		return err
	}
	if s.hash != nil {
		err = s.hashContents(f, size, show)
	} else {
		err = s.out.file(f, size, show)
	}
	if err != nil {
		return err
	}
	if err := s.emit(zeros[:(8-size%8)%8]); err != nil {
		return err
	}
	return s.token(")")
}

// hashContents reads a whole file through the hash, emitting it.
func (s *narStream) hashContents(f *os.File, size uint64, show string) error {
	buf := s.bufs.file
	for left := size; left > 0; {
		chunk := buf[:min(uint64(len(buf)), left)]
		n, err := io.ReadFull(f, chunk)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return fmt.Errorf("stream %s: %w: file shrank while being read", show, errMismatch)
			}
			return fmt.Errorf("stream %s: %w", show, err)
		}
		if err := s.emit(chunk[:n]); err != nil {
			return err
		}
		left -= uint64(n)
	}
	return nil
}

func (s *narStream) directory(dirfd int, name, show string, st *unix.Stat_t) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("stream %s: %w", show, err)
	}
	defer unix.Close(fd)
	names, err := readNames(fd, s.bufs.ents)
	if err != nil {
		return fmt.Errorf("stream %s: reading directory: %w", show, err)
	}
	sort.Strings(names) // bytewise, the order of a NAR
	s.record('d', name, st, "")
	if err := s.tokens("(", "type", "directory"); err != nil {
		return err
	}
	for _, n := range names {
		if err := s.tokens("entry", "(", "name", n, "node"); err != nil {
			return err
		}
		if err := s.node(fd, n, show+"/"+n); err != nil {
			return err
		}
		if err := s.token(")"); err != nil {
			return err
		}
	}
	return s.token(")")
}

// readNames returns the names in the open directory fd, without . and ..
func readNames(fd int, buf []byte) ([]string, error) {
	var names []string
	for {
		n, err := unix.ReadDirent(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// narOut passes on the part of a NAR that falls in a window, buffering
// small writes, and holds back the window's last byte.
type narOut struct {
	w    io.Writer
	win  window
	off  uint64 // NAR offset of the next byte
	buf  []byte
	last []byte // the window's last byte, once reached
	sent uint64 // bytes written to w
}

// span returns the part [lo, hi) of [off, off+n) to pass on now: in the
// window, short of its last byte.
func (o *narOut) span(n uint64) (lo, hi uint64) {
	end := o.off + n
	lo = min(max(o.off, o.win.from), end)
	hi = min(max(o.off, o.win.to-1), end)
	return lo, max(lo, hi)
}

// holds reports whether [off, off+n) contains the window's last byte.
func (o *narOut) holds(n uint64) bool { return o.off <= o.win.to-1 && o.win.to-1 < o.off+n }

func (o *narOut) bytes(p []byte) error {
	n := uint64(len(p))
	lo, hi := o.span(n)
	if o.holds(n) {
		o.last = append(o.last[:0], p[o.win.to-1-o.off])
	}
	part := p[lo-o.off : hi-o.off]
	o.off += n
	if len(part) == 0 {
		return nil
	}
	if len(o.buf)+len(part) <= cap(o.buf) {
		o.buf = append(o.buf, part...)
		return nil
	}
	if err := o.flush(); err != nil {
		return err
	}
	if len(part) >= cap(o.buf)/2 {
		return o.write(part)
	}
	o.buf = append(o.buf, part...)
	return nil
}

// file passes on the part of f's size bytes that falls in the window,
// reading nothing else; large parts go with sendfile when w supports it.
func (o *narOut) file(f *os.File, size uint64, show string) error {
	lo, hi := o.span(size)
	if o.holds(size) {
		o.last = append(o.last[:0], 0)
		if _, err := f.ReadAt(o.last, int64(o.win.to-1-o.off)); err != nil {
			return fmt.Errorf("stream %s: %w: %v", show, errMismatch, err)
		}
	}
	start := o.off
	o.off += size
	if n := hi - lo; n == 0 {
		return nil
	} else if n < sendfileMin && len(o.buf)+int(n) <= cap(o.buf) {
		m, err := f.ReadAt(o.buf[len(o.buf):len(o.buf)+int(n)], int64(lo-start))
		if uint64(m) != n {
			return fmt.Errorf("stream %s: %w: file shrank while being read (%v)", show, errMismatch, err)
		}
		o.buf = o.buf[:len(o.buf)+m]
		return nil
	}
	if err := o.flush(); err != nil {
		return err
	}
	if _, err := f.Seek(int64(lo-start), io.SeekStart); err != nil {
		return fmt.Errorf("stream %s: %w", show, err)
	}
	// io.Copy hands the *io.LimitedReader of an *os.File to the
	// response's ReadFrom, which sends it with sendfile.
	m, err := io.Copy(o.w, io.LimitReader(f, int64(hi-lo)))
	o.sent += uint64(m)
	if err != nil {
		return &writeError{err}
	}
	if uint64(m) != hi-lo {
		return fmt.Errorf("stream %s: %w: file shrank while being sent", show, errMismatch)
	}
	return nil
}

func (o *narOut) flush() error {
	if len(o.buf) == 0 {
		return nil
	}
	err := o.write(o.buf)
	o.buf = o.buf[:0]
	return err
}

func (o *narOut) write(p []byte) error {
	n, err := o.w.Write(p)
	o.sent += uint64(n)
	if err != nil {
		return &writeError{err}
	}
	return nil
}

// release writes the held-back last byte of the window.
func (o *narOut) release() error {
	if len(o.last) != 1 {
		return fmt.Errorf("%w: ended before byte %d", errMismatch, o.win.to-1)
	}
	return o.write(o.last)
}
