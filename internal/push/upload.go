package push

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/nar"
	"github.com/silo-cache/silo/internal/narinfo"
	"github.com/silo-cache/silo/internal/signature"
)

// memLimit is how much compressed NAR an upload keeps in memory before it
// spills to an (unlinked) temporary file.
const memLimit = 8 << 20

// dedupCheckSize is the compressed size from which an upload first asks
// whether the cache already has the file (a HEAD costs less than the PUT).
const dedupCheckSize = 1 << 20

// Uploader uploads single store paths: NAR first, narinfo second. It is
// safe for concurrent use.
type Uploader struct {
	Target Target
	// SigningKey, if set, signs every narinfo (replacing an existing
	// signature by a key of the same name).
	SigningKey *signature.SecretKey
	// Compression is "zstd" (the default when empty) or "none".
	Compression string
	// CompressionLevel is the zstd level (1-22); 0 means DefaultLevel.
	CompressionLevel int
	// TempDir holds NARs too big for memory while they upload; empty
	// means os.TempDir(). Files there are unlinked from the start.
	TempDir string

	encoders sync.Pool
}

// Upload streams the NAR of info.Path, compressed, to the cache under
// nar/<sha256 of the file>.nar.zst, checks that it hashes to info.NarHash,
// then uploads the narinfo. narBytes, if not nil, is called as the NAR
// streams. A failure or cancellation leaves no narinfo behind, so the path
// never appears in the cache half-uploaded.
func (u *Uploader) Upload(ctx context.Context, info *localstore.PathInfo, narBytes func(int64)) (*narinfo.NarInfo, error) {
	ni, err := u.UploadNAR(ctx, info, narBytes)
	if err != nil {
		return nil, err
	}
	if err := u.PutNarInfo(ctx, ni); err != nil {
		return nil, err
	}
	return ni, nil
}

// UploadNAR uploads the NAR of info.Path and returns the narinfo that
// describes it, signed if the Uploader has a key, not yet uploaded.
func (u *Uploader) UploadNAR(ctx context.Context, info *localstore.PathInfo, narBytes func(int64)) (*narinfo.NarInfo, error) {
	buf := &spill{dir: u.TempDir}
	defer buf.Close()
	narHash := hash.NewWriter(hash.SHA256)
	fileHash := hash.NewWriter(hash.SHA256)
	sink := io.MultiWriter(fileHash, buf)

	compression, ext := "zstd", ".nar.zst"
	var enc *zstd.Encoder
	var w io.Writer = sink
	switch u.Compression {
	case "", "zstd":
		enc = u.encoder()
		enc.Reset(sink)
		defer u.encoders.Put(enc)
		w = enc
	case "none":
		compression, ext = "none", ".nar"
	default:
		return nil, fmt.Errorf("compression %q is not supported (want zstd or none)", u.Compression)
	}
	var counted io.Writer = narHash
	if narBytes != nil {
		counted = countWriter{narHash, narBytes}
	}
	if err := nar.Dump(ctx, io.MultiWriter(counted, w), info.Path.String()); err != nil {
		return nil, fmt.Errorf("read %s from the store: %w", info.Path, err)
	}
	if enc != nil {
		if err := enc.Close(); err != nil {
			return nil, fmt.Errorf("compress %s: %w", info.Path, err)
		}
	}
	if err := buf.err; err != nil {
		return nil, fmt.Errorf("buffer NAR of %s: %w (set --tmp-dir to a directory with space)", info.Path, err)
	}
	if got := narHash.Sum(); got != info.NarHash || narHash.Size() != info.NarSize {
		return nil, fmt.Errorf("%s has NAR hash %s and size %d in the store, but the Nix database records %s and %d: the path was modified (repair it with nix-store --verify --check-contents --repair)",
			info.Path, got, narHash.Size(), info.NarHash, info.NarSize)
	}

	ni := &narinfo.NarInfo{
		StorePath:   info.Path,
		URL:         "nar/" + fileHash.Sum().Nix32() + ext,
		Compression: compression,
		FileHash:    fileHash.Sum(),
		FileSize:    fileHash.Size(),
		NarHash:     info.NarHash,
		NarSize:     info.NarSize,
		References:  slices.Clone(info.References),
		Deriver:     info.Deriver,
		Sigs:        slices.Clone(info.Sigs),
		CA:          info.CA,
	}
	if u.SigningKey != nil {
		ni.Sign(*u.SigningKey)
	}

	if ni.FileSize >= dedupCheckSize {
		if have, err := u.Target.HasFile(ctx, ni.URL); err == nil && have {
			return ni, nil
		}
	}
	err := u.Target.PutFile(ctx, ni.URL, typeNAR, int64(ni.FileSize), buf.Open)
	if err != nil {
		return nil, fmt.Errorf("upload NAR of %s: %w", info.Path, err)
	}
	return ni, nil
}

// PutNarInfo uploads ni as <hashpart>.narinfo.
func (u *Uploader) PutNarInfo(ctx context.Context, ni *narinfo.NarInfo) error {
	text := ni.String()
	err := u.Target.PutFile(ctx, ni.StorePath.HashPart()+".narinfo", typeNarInfo, int64(len(text)),
		func() (io.Reader, error) { return strings.NewReader(text), nil })
	if err != nil {
		return fmt.Errorf("upload narinfo of %s: %w", ni.StorePath, err)
	}
	return nil
}

// DefaultLevel is the zstd level push compresses with unless told
// otherwise: level 1, about 1.5x faster than Nix's default level 3 for
// files a few percent larger. Uploading is where a user waits, and a silo
// server recompresses what it stores at its own level anyway.
const DefaultLevel = 1

// encoder returns a pooled zstd encoder, single-threaded (parallelism
// comes from uploading several paths at once) and without the optional
// frame checksum, as Nix writes zstd.
func (u *Uploader) encoder() *zstd.Encoder {
	if e, ok := u.encoders.Get().(*zstd.Encoder); ok {
		return e
	}
	level := u.CompressionLevel
	if level == 0 {
		level = DefaultLevel
	}
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
	if err != nil {
		panic("push: zstd encoder: " + err.Error()) // only for invalid options
	}
	return e
}

type countWriter struct {
	w io.Writer
	n func(int64)
}

func (c countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n(int64(n))
	return n, err
}

var memPool = sync.Pool{New: func() any { b := make([]byte, 0, 256<<10); return &b }}

// spill holds a compressed NAR in memory up to memLimit, then in a
// temporary file unlinked as soon as it is created, so nothing is left
// behind by a crash.
type spill struct {
	dir  string
	mem  *[]byte
	f    *os.File
	size int64
	err  error
}

func (s *spill) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.f == nil && s.size+int64(len(p)) <= memLimit {
		if s.mem == nil {
			s.mem = memPool.Get().(*[]byte)
		}
		*s.mem = append(*s.mem, p...)
		s.size += int64(len(p))
		return len(p), nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "silo-push-*.nar")
		if err != nil {
			s.err = err
			return 0, err
		}
		os.Remove(f.Name())
		s.f = f
		if s.mem != nil {
			if _, err := f.Write(*s.mem); err != nil {
				s.err = err
				return 0, err
			}
			s.release()
		}
	}
	n, err := s.f.Write(p)
	s.size += int64(n)
	if err != nil {
		s.err = err
	}
	return n, err
}

// Open returns a reader of everything written, from the start.
func (s *spill) Open() (io.Reader, error) {
	if s.f != nil {
		return io.NewSectionReader(s.f, 0, s.size), nil
	}
	if s.mem == nil {
		return bytes.NewReader(nil), nil
	}
	return bytes.NewReader(*s.mem), nil
}

func (s *spill) release() {
	if s.mem != nil {
		*s.mem = (*s.mem)[:0]
		if cap(*s.mem) <= memLimit*2 {
			memPool.Put(s.mem)
		}
		s.mem = nil
	}
}

func (s *spill) Close() error {
	s.release()
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}
