package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/silo-cache/silo/internal/blob"
)

// memLimit is how much of a blob a writer keeps in memory; beyond it the
// bytes go to a spool file.
const memLimit = 1 << 20

// emptySHA256 is the SHA-256 of nothing, in hex.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// maxCopySize is the largest object CopyObject copies in one request.
const maxCopySize = 5 << 30

// Create starts a new blob.
func (s *Store) Create(ctx context.Context) (blob.Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &writer{s: s, ctx: ctx, partHash: sha256.New()}, nil
}

type writer struct {
	s     *Store
	ctx   context.Context
	mem   []byte   // the blob while it fits memLimit
	file  *os.File // the part being filled (once past memLimit)
	fileN int64
	spare *os.File // a spool file free for the next part
	total int64
	// partHash hashes what the spool file holds: its SHA-256 goes in the
	// signed request, so that the payload is signed without aws-chunked
	// streaming (whose Content-Encoding some servers keep on the object,
	// where it would reach clients that follow a redirect).
	partHash hash.Hash

	// A multipart upload, once the blob outgrows one part.
	tmp          string // its temporary object
	uploadID     string
	partNum      int
	parts        []minio.CompletePart
	inflight     chan partResult // the part being sent; nil if none
	pendingSpare *os.File        // the spool file of the part being sent

	err  error // first failure; Commit returns it
	done bool
}

type partResult struct {
	part minio.CompletePart
	err  error
}

// partSize returns the size of part n (from 1). Parts grow after every
// thousand so that S3's limit of 10,000 parts allows objects up to 5 TiB.
func (w *writer) partSize(n int) int64 {
	return w.s.opts.PartSize << min((n-1)/1000, 20)
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("write blob: writer already committed or aborted")
	}
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		if w.file == nil && len(w.mem)+len(p) <= memLimit {
			w.mem = append(w.mem, p...)
			return written + len(p), nil
		}
		if w.file == nil {
			if err := w.spill(); err != nil {
				return written, err
			}
		}
		if w.fileN == w.partSize(w.partNum+1) {
			// The part is full and more follows: send it.
			if err := w.sendPart(); err != nil {
				return written, err
			}
		}
		n := int(min(int64(len(p)), w.partSize(w.partNum+1)-w.fileN))
		w.partHash.Write(p[:n])
		if _, err := w.file.Write(p[:n]); err != nil {
			w.err = fmt.Errorf("write blob: spool: %w", err)
			return written, w.err
		}
		w.fileN += int64(n)
		w.total += int64(n)
		written += n
		p = p[n:]
	}
	return written, nil
}

// spill moves the bytes kept in memory to a spool file.
func (w *writer) spill() error {
	f, err := w.spoolFile()
	if err != nil {
		return err
	}
	w.partHash.Reset()
	w.partHash.Write(w.mem)
	if _, err := f.Write(w.mem); err != nil {
		w.err = fmt.Errorf("write blob: spool: %w", err)
		return w.err
	}
	w.file, w.fileN = f, int64(len(w.mem))
	w.total = w.fileN
	w.mem = nil
	return nil
}

// spoolFile returns an empty spool file: the spare one, or a new file
// that is unlinked at once, so that nothing outlives the process.
func (w *writer) spoolFile() (*os.File, error) {
	if f := w.spare; f != nil {
		w.spare = nil
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			w.err = fmt.Errorf("write blob: spool: %w", err)
			return nil, w.err
		}
		return f, nil
	}
	f, err := os.CreateTemp(w.s.opts.SpoolDir, "silo-s3-part-")
	if err != nil {
		w.err = fmt.Errorf("write blob: spool in %s: %w", w.s.opts.SpoolDir, err)
		return nil, w.err
	}
	os.Remove(f.Name())
	return f, nil
}

// sendPart starts sending the filled part in the background, after the
// one before it has been sent, and gives the writer a spool file to go on.
func (w *writer) sendPart() error {
	s := w.s
	if w.uploadID == "" {
		var rnd [16]byte
		rand.Read(rnd[:])
		w.tmp = s.opts.Prefix + uploadsDir + hex.EncodeToString(rnd[:])
		id, err := s.core.NewMultipartUpload(w.ctx, s.opts.Bucket, w.tmp, minio.PutObjectOptions{})
		if err != nil {
			w.err = wrapErr("start multipart upload of", "(new)", err)
			return w.err
		}
		w.uploadID = id
		if j := s.opts.Journal; j != nil {
			if err := j.MultipartStarted(w.ctx, id, w.tmp); err != nil {
				w.err = fmt.Errorf("write blob: %w", err)
				return w.err
			}
		}
	}
	if err := w.wait(); err != nil {
		return err
	}
	w.partNum++
	num, f, n := w.partNum, w.file, w.fileN
	sum := hex.EncodeToString(w.partHash.Sum(nil))
	w.partHash.Reset()
	ch := make(chan partResult, 1)
	w.inflight = ch
	go func() {
		p, err := s.core.PutObjectPart(w.ctx, s.opts.Bucket, w.tmp, w.uploadID, num, io.NewSectionReader(f, 0, n), n,
			minio.PutObjectPartOptions{Sha256Hex: sum, DisableContentSha256: true})
		if err == nil && s.opts.Journal != nil {
			err = s.opts.Journal.MultipartTouched(w.ctx, w.uploadID)
		}
		ch <- partResult{minio.CompletePart{PartNumber: num, ETag: p.ETag}, err}
	}()
	w.file, w.fileN = nil, 0
	nf, err := w.spoolFile()
	if err != nil {
		return err
	}
	w.file = nf
	// f becomes the spare once its part is sent (see wait).
	w.pendingSpare = f
	return nil
}

// wait waits for the part in flight, if any.
func (w *writer) wait() error {
	if w.inflight == nil {
		return w.err
	}
	r := <-w.inflight
	w.inflight = nil
	if w.pendingSpare != nil {
		if w.spare == nil {
			w.spare = w.pendingSpare
		} else {
			w.pendingSpare.Close()
		}
		w.pendingSpare = nil
	}
	if r.err != nil && w.err == nil {
		w.err = wrapErr("upload part of", "(new)", r.err)
	}
	if r.err == nil {
		w.parts = append(w.parts, r.part)
	}
	return w.err
}

func (w *writer) Commit(ctx context.Context, key string) (err error) {
	if w.done {
		return errors.New("commit blob: writer already committed or aborted")
	}
	defer func() {
		if err != nil {
			w.Abort()
		}
	}()
	if w.err != nil {
		return w.err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit blob %s: %w", key, err)
	}
	obj, err := w.s.object(key)
	if err != nil {
		return err
	}
	s := w.s
	if w.uploadID == "" {
		var body io.Reader = bytes.NewReader(w.mem)
		size := int64(len(w.mem))
		sum := sha256.Sum256(w.mem)
		sha := hex.EncodeToString(sum[:])
		if w.file != nil {
			body, size = io.NewSectionReader(w.file, 0, w.fileN), w.fileN
			sha = hex.EncodeToString(w.partHash.Sum(nil))
		}
		if _, err := s.core.PutObject(ctx, s.opts.Bucket, obj, body, size, "", sha, minio.PutObjectOptions{DisableContentSha256: true}); err != nil {
			return wrapErr("commit", key, err)
		}
		w.finish()
		return nil
	}
	if w.fileN > 0 {
		if err := w.sendPart(); err != nil {
			return err
		}
	}
	if err := w.wait(); err != nil {
		return err
	}
	sort.Slice(w.parts, func(i, j int) bool { return w.parts[i].PartNumber < w.parts[j].PartNumber })
	if _, err := s.core.CompleteMultipartUpload(ctx, s.opts.Bucket, w.tmp, w.uploadID, w.parts, minio.PutObjectOptions{}); err != nil {
		return wrapErr("complete multipart upload of", key, err)
	}
	if err := w.copyTo(ctx, obj); err != nil {
		return wrapErr("commit", key, err)
	}
	s.core.RemoveObject(ctx, s.opts.Bucket, w.tmp, minio.RemoveObjectOptions{})
	if j := s.opts.Journal; j != nil {
		j.MultipartFinished(ctx, w.uploadID)
	}
	w.finish()
	return nil
}

// copyTo copies the completed temporary object to its key, server-side.
func (w *writer) copyTo(ctx context.Context, obj string) error {
	s := w.s
	src := minio.CopySrcOptions{Bucket: s.opts.Bucket, Object: w.tmp}
	if w.total <= maxCopySize {
		_, err := s.core.CopyObject(ctx, s.opts.Bucket, w.tmp, s.opts.Bucket, obj, nil, src, minio.PutObjectOptions{})
		return err
	}
	_, err := s.core.ComposeObject(ctx, minio.CopyDestOptions{Bucket: s.opts.Bucket, Object: obj}, src)
	return err
}

// finish marks the writer committed and releases its files.
func (w *writer) finish() {
	w.done = true
	w.release()
}

func (w *writer) release() {
	for _, f := range []*os.File{w.file, w.spare, w.pendingSpare} {
		if f != nil {
			f.Close()
		}
	}
	w.file, w.spare, w.pendingSpare, w.mem = nil, nil, nil, nil
}

func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	if w.inflight != nil {
		<-w.inflight
		w.inflight = nil
	}
	w.release()
	if w.uploadID == "" {
		return nil
	}
	// The request may be gone; the clean-up gets its own deadline.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 30*time.Second)
	defer cancel()
	s := w.s
	err := s.core.AbortMultipartUpload(ctx, s.opts.Bucket, w.tmp, w.uploadID)
	if err != nil && minio.ToErrorResponse(err).Code == "NoSuchUpload" {
		err = nil // completed before the failure: remove the object below
	}
	s.core.RemoveObject(ctx, s.opts.Bucket, w.tmp, minio.RemoveObjectOptions{})
	if err != nil {
		// Sweep aborts it later: the journal still has it.
		return fmt.Errorf("abort blob: %w", err)
	}
	if j := s.opts.Journal; j != nil {
		j.MultipartFinished(ctx, w.uploadID)
	}
	return nil
}
