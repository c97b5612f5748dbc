package nar

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/hash"
)

// Dump writes the NAR serialisation of the file system tree at path to w,
// byte for byte what `nix-store --dump` writes: a regular file is executable
// when its owner may execute it (S_IXUSR, as Nix 2.8 tests), directory
// entries are sorted bytewise, and any other file type (socket, device,
// FIFO) is an error naming the file. Reading the tree runs in a goroutine
// ahead of the writes to w, through a ring of four reused 128 KiB chunks;
// w gets whole chunks, and on error it may have received part of the NAR.
func Dump(ctx context.Context, w io.Writer, path string) error {
	return pipeline(ctx, path, func(b []byte) error {
		_, err := w.Write(b)
		return err
	})
}

// HashPath returns the SHA-256 of the NAR serialisation of path and its
// size, as `nix hash path` computes it, without writing the NAR anywhere:
// one goroutine reads the tree into buffers while the caller's hashes them.
func HashPath(ctx context.Context, path string) (hash.Hash, uint64, error) {
	hw := hash.NewWriter(hash.SHA256)
	err := pipeline(ctx, path, func(b []byte) error {
		hw.Write(b)
		return nil
	})
	if err != nil {
		return hash.Hash{}, 0, err
	}
	return hw.Sum(), hw.Size(), nil
}

// The dumper fills chunks while the consumer writes or hashes the previous
// ones, passing them through a ring (see ring.go). The ring is small enough
// to stay in cache between the two cores: with 4 x 1 MiB, hashing ran 25%
// slower than with 4 x 128 KiB. (Reading files with several goroutines was
// tried: no faster on two cores, since hashing is the bottleneck.)
const (
	chunkSize = 128 << 10
	chunks    = 8
)

// pipeline runs a dumper over path in a goroutine and hands the filled
// chunks, in order, to consume.
func pipeline(ctx context.Context, path string, consume func([]byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := &dumper{ctx: ctx, ring: newRing(chunks, chunkSize)}
	done := make(chan error, 1)
	go func() {
		err := d.run(path)
		d.ring.close()
		done <- err
	}()
	var werr error
	for {
		b, ok := d.ring.get()
		if !ok {
			break
		}
		if werr == nil {
			if werr = consume(b); werr != nil {
				cancel() // stops the dumper; keep draining so it can exit
			}
		}
		d.ring.release(b)
	}
	derr := <-done
	if werr != nil {
		return fmt.Errorf("dump %s: writing NAR: %w", path, werr)
	}
	return derr
}

type dumper struct {
	ctx  context.Context
	ring *ring
	buf  []byte // chunk being filled, nil if none
	link []byte // readlink buffer
	ents []byte // getdents buffer
}

func (d *dumper) run(root string) error {
	d.link = make([]byte, unix.PathMax)
	d.ents = make([]byte, 32<<10)
	if err := d.next(); err != nil {
		return err
	}
	d.str(magic)
	if err := d.node(unix.AT_FDCWD, "", root, unix.DT_UNKNOWN); err != nil {
		return err
	}
	return d.flush()
}

// next takes an empty chunk from the ring.
func (d *dumper) next() error {
	b, err := d.ring.take(d.ctx)
	d.buf = b
	return err
}

// flush hands the current chunk on.
func (d *dumper) flush() error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	d.ring.put(d.buf)
	d.buf = nil
	return nil
}

// room makes sure the current chunk has n free bytes (n <= chunkSize).
func (d *dumper) room(n int) error {
	if cap(d.buf)-len(d.buf) >= n {
		return nil
	}
	if err := d.flush(); err != nil {
		return err
	}
	return d.next()
}

// str appends a string token; the caller has made room for it.
func (d *dumper) str(s string) {
	d.buf = binary.LittleEndian.AppendUint64(d.buf, uint64(len(s)))
	d.buf = append(d.buf, s...)
	d.buf = append(d.buf, zeros[:padLen(uint64(len(s)))]...)
}

var zeros [8]byte

// tokens appends string tokens, making room for them first.
func (d *dumper) tokens(ss ...string) error {
	n := 0
	for _, s := range ss {
		n += 8 + len(s) + padLen(uint64(len(s)))
	}
	if err := d.room(n); err != nil {
		return err
	}
	for _, s := range ss {
		d.str(s)
	}
	return nil
}

// node dumps the object name in directory dirfd. parent is the directory's
// path, for errors; typ is the type getdents reported (DT_UNKNOWN for the
// root, and on file systems that do not say), which spares a stat for
// directories and symlinks.
func (d *dumper) node(dirfd int, parent, name string, typ uint8) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	switch typ {
	case unix.DT_DIR:
		return d.directory(dirfd, parent, name)
	case unix.DT_LNK:
		return d.symlink(dirfd, parent, name)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("dump %s: %w", showPath(parent, name), err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return d.regular(dirfd, parent, name, &st)
	case unix.S_IFDIR:
		return d.directory(dirfd, parent, name)
	case unix.S_IFLNK:
		return d.symlink(dirfd, parent, name)
	}
	return fmt.Errorf("dump %s: file has an unsupported type (%s); a NAR holds only regular files, directories and symlinks", showPath(parent, name), fileType(st.Mode))
}

// showPath joins parent and name for messages; the root has no parent.
func showPath(parent, name string) string {
	if parent == "" {
		return filepath.Clean(name)
	}
	return parent + "/" + name
}

func (d *dumper) symlink(dirfd int, parent, name string) error {
	n, err := unix.Readlinkat(dirfd, name, d.link)
	if err != nil {
		return fmt.Errorf("dump %s: %w", showPath(parent, name), err)
	}
	if n == len(d.link) {
		return fmt.Errorf("dump %s: symlink target too long", showPath(parent, name))
	}
	return d.tokens("(", "type", "symlink", "target", string(d.link[:n]), ")")
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("mode %#o", mode)
}

func (d *dumper) regular(dirfd int, parent, name string, st *unix.Stat_t) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("dump %s: %w", showPath(parent, name), err)
	}
	defer unix.Close(fd)
	var err2 error
	if st.Mode&unix.S_IXUSR != 0 {
		err2 = d.tokens("(", "type", "regular", "executable", "", "contents")
	} else {
		err2 = d.tokens("(", "type", "regular", "contents")
	}
	if err2 != nil {
		return err2
	}
	size := uint64(st.Size)
	if err := d.room(8); err != nil {
		return err
	}
	d.buf = binary.LittleEndian.AppendUint64(d.buf, size)
	for left := size; left > 0; {
		if len(d.buf) == cap(d.buf) {
			if err := d.room(1); err != nil {
				return err
			}
		}
		free := d.buf[len(d.buf):cap(d.buf)]
		if uint64(len(free)) > left {
			free = free[:left]
		}
		n, err := unix.Read(fd, free)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("dump %s: %w", showPath(parent, name), err)
		}
		if n == 0 {
			return fmt.Errorf("dump %s: file shrank from %d bytes while being read", showPath(parent, name), size)
		}
		d.buf = d.buf[:len(d.buf)+n]
		left -= uint64(n)
	}
	if err := d.room(8 + 16); err != nil {
		return err
	}
	d.buf = append(d.buf, zeros[:padLen(size)]...)
	d.str(")")
	return nil
}

func (d *dumper) directory(dirfd int, parent, name string) error {
	show := showPath(parent, name)
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("dump %s: %w", show, err)
	}
	defer unix.Close(fd)
	ents, err := readDir(fd, d.ents)
	if err != nil {
		return fmt.Errorf("dump %s: reading directory: %w", show, err)
	}
	// Bytewise, like Nix's std::map.
	sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
	if err := d.tokens("(", "type", "directory"); err != nil {
		return err
	}
	for _, e := range ents {
		if err := d.tokens("entry", "(", "name", e.name, "node"); err != nil {
			return err
		}
		if err := d.node(fd, show, e.name, e.typ); err != nil {
			return err
		}
		if err := d.tokens(")"); err != nil {
			return err
		}
	}
	return d.tokens(")")
}

type dirent struct {
	name string
	typ  uint8
}

// readDir returns the entries of the open directory fd, without . and ..,
// with the types getdents reports.
func readDir(fd int, buf []byte) ([]dirent, error) {
	var ents []dirent
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return ents, nil
		}
		// struct linux_dirent64: ino u64, off u64, reclen u16, type u8, name.
		for b := buf[:n]; len(b) > 0; {
			if len(b) < 19 {
				return nil, fmt.Errorf("getdents returned a truncated entry")
			}
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return nil, fmt.Errorf("getdents returned an entry of length %d", reclen)
			}
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				ents = append(ents, dirent{s, b[18]})
			}
			b = b[reclen:]
		}
	}
}
