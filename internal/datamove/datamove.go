// Package datamove moves a silo installation's caches to other storage
// (silo migrate-data: an embedded SQLite + disk installation to PostgreSQL
// + S3) without any client pushing again: caches with their signing keys,
// tokens, stored NARs with their listings, the paths (their signed
// narinfos as they are) and build logs.
//
// Invariants:
//   - Nothing is visible at the destination before its bytes: a NAR is
//     recorded only after its file and listing are stored there and the
//     file's hash and size matched the source's record; a path only after
//     its NAR.
//   - It is safe to run again (and to interrupt): what the destination has
//     is kept, blobs it holds are not copied again, and records it has are
//     not replaced, so a second run after more pushes to the source moves
//     only what is new. The destination's own writes win (first writer).
//   - Staged uploads waiting for their narinfo are not moved; their
//     clients upload again.
package datamove

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/hash"
	"github.com/silo-cache/silo/internal/meta"
)

// Source is an installation's metadata, read in full (meta/sqlite).
type Source interface {
	Caches(ctx context.Context) ([]meta.Cache, error)
	Tokens(ctx context.Context) ([]meta.Token, error)
	EachNAR(ctx context.Context, fn func(meta.NAR) error) error
	EachPath(ctx context.Context, fn func(meta.Path) error) error
	EachLog(ctx context.Context, fn func(meta.Log) error) error
}

// Dest receives it (meta/postgres).
type Dest interface {
	Cache(ctx context.Context, name string) (meta.Cache, error)
	CreateCache(ctx context.Context, c meta.Cache) (meta.Cache, error)
	Token(ctx context.Context, id string) (meta.Token, error)
	CreateToken(ctx context.Context, t meta.Token) error
	ImportNAR(ctx context.Context, n meta.NAR) (stored meta.NAR, inserted bool, err error)
	ImportPath(ctx context.Context, p meta.Path) (bool, error)
	ImportLog(ctx context.Context, l meta.Log) (bool, error)
}

// Options configure Move.
type Options struct {
	// Jobs is how many NARs are copied at once; 0 means 8.
	Jobs int
	// Progress, if set, receives a line now and then.
	Progress io.Writer
}

// Stats counts what a Move did.
type Stats struct {
	Caches, Tokens            int // created at the destination
	NARs, Paths, Logs         int // recorded at the destination
	Blobs                     int // copied
	BlobBytes                 int64
	PresentNARs, PresentPaths int // the destination had them already
	SkippedPaths              int // see Move
	CachesKept, TokensKept    int // the destination had them already
}

// Move copies everything from src (metadata) and srcBlobs to dst and
// dstBlobs. Paths whose NAR the destination holds under another file
// (the same NAR pushed there meanwhile) are skipped and counted: their
// clients push them again.
func Move(ctx context.Context, src Source, srcBlobs blob.Store, dst Dest, dstBlobs blob.Store, opts Options) (Stats, error) {
	if opts.Jobs <= 0 {
		opts.Jobs = 8
	}
	m := &mover{src: src, srcBlobs: srcBlobs, dst: dst, dstBlobs: dstBlobs, opts: opts,
		cacheIDs: map[int64]int64{}, conflict: map[string]bool{}, last: time.Now()}
	if err := m.caches(ctx); err != nil {
		return m.st, err
	}
	if err := m.tokens(ctx); err != nil {
		return m.st, err
	}
	if err := m.nars(ctx); err != nil {
		return m.st, err
	}
	if err := m.paths(ctx); err != nil {
		return m.st, err
	}
	if err := m.logs(ctx); err != nil {
		return m.st, err
	}
	return m.st, nil
}

type mover struct {
	src      Source
	srcBlobs blob.Store
	dst      Dest
	dstBlobs blob.Store
	opts     Options
	cacheIDs map[int64]int64 // source cache ID → destination cache ID

	mu       sync.Mutex
	st       Stats
	conflict map[string]bool // NarHashes stored at the destination under another file
	last     time.Time
}

func (m *mover) progress(force bool, format string, a ...any) {
	if m.opts.Progress == nil || !force && time.Since(m.last) < 2*time.Second {
		return
	}
	m.last = time.Now()
	fmt.Fprintf(m.opts.Progress, format+"\n", a...)
}

func (m *mover) caches(ctx context.Context) error {
	caches, err := m.src.Caches(ctx)
	if err != nil {
		return err
	}
	for _, c := range caches {
		have, err := m.dst.Cache(ctx, c.Name)
		switch {
		case err == nil:
			if have.SecretKey != c.SecretKey {
				return fmt.Errorf("cache %s exists at the destination with another signing key; refusing to merge (delete it there, or rename one)", c.Name)
			}
			m.st.CachesKept++
		case errors.Is(err, meta.ErrNotFound):
			srcID := c.ID
			if have, err = m.dst.CreateCache(ctx, c); err != nil {
				return fmt.Errorf("cache %s: %w", c.Name, err)
			}
			c.ID = srcID
			m.st.Caches++
		default:
			return fmt.Errorf("cache %s: %w", c.Name, err)
		}
		m.cacheIDs[c.ID] = have.ID
	}
	m.progress(true, "caches: %d created, %d there already", m.st.Caches, m.st.CachesKept)
	return nil
}

func (m *mover) tokens(ctx context.Context) error {
	toks, err := m.src.Tokens(ctx)
	if err != nil {
		return err
	}
	for _, t := range toks {
		have, err := m.dst.Token(ctx, t.ID)
		switch {
		case err == nil:
			if string(have.Hash) != string(t.Hash) {
				return fmt.Errorf("token %s exists at the destination with another secret; refusing to merge", t.ID)
			}
			m.st.TokensKept++
		case errors.Is(err, meta.ErrNotFound):
			if err := m.dst.CreateToken(ctx, t); err != nil {
				return fmt.Errorf("token %s: %w", t.ID, err)
			}
			m.st.Tokens++
		default:
			return fmt.Errorf("token %s: %w", t.ID, err)
		}
	}
	m.progress(true, "tokens: %d created, %d there already", m.st.Tokens, m.st.TokensKept)
	return nil
}

func (m *mover) nars(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan meta.NAR)
	var wg sync.WaitGroup
	for range m.opts.Jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				if err := m.nar(ctx, n); err != nil {
					cancel(err)
				}
			}
		}()
	}
	err := m.src.EachNAR(ctx, func(n meta.NAR) error {
		select {
		case work <- n:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	close(work)
	wg.Wait()
	if err == nil {
		err = context.Cause(ctx)
	}
	m.progress(true, "NARs: %d recorded (%d there already), %d files copied (%d MiB)", m.st.NARs, m.st.PresentNARs, m.st.Blobs, m.st.BlobBytes>>20)
	return err
}

// nar stores n's file and listing at the destination, then records it.
func (m *mover) nar(ctx context.Context, n meta.NAR) error {
	if err := m.copyBlob(ctx, n.BlobKey, n.FileHash, n.FileSize); err != nil {
		return fmt.Errorf("NAR %s: %w", n.NarHash, err)
	}
	if n.ListingKey != "" {
		if err := m.copyBlob(ctx, n.ListingKey, "", -1); err != nil {
			return fmt.Errorf("NAR %s: listing: %w", n.NarHash, err)
		}
	}
	stored, inserted, err := m.dst.ImportNAR(ctx, n)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case stored.BlobKey != n.BlobKey:
		m.conflict[n.NarHash] = true
		m.st.PresentNARs++
	case inserted:
		m.st.NARs++
	default:
		m.st.PresentNARs++
	}
	m.progress(false, "NARs: %d recorded, %d files copied (%d MiB)", m.st.NARs, m.st.Blobs, m.st.BlobBytes>>20)
	return nil
}

// copyBlob copies the blob under key unless the destination has it with
// the expected size. With a fileHash ("sha256:<nix32>") the bytes are
// checked while they stream, and a mismatch stores nothing.
func (m *mover) copyBlob(ctx context.Context, key, fileHash string, size int64) error {
	if info, err := m.dstBlobs.Stat(ctx, key); err == nil && (size < 0 || info.Size == size) {
		return nil
	} else if err != nil && !errors.Is(err, blob.ErrNotFound) {
		return err
	}
	r, err := m.srcBlobs.Open(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s from the source: %w", key, err)
	}
	defer r.Close()
	w, err := m.dstBlobs.Create(ctx)
	if err != nil {
		return err
	}
	defer w.Abort()
	h := hash.NewWriter(hash.SHA256)
	n, err := io.Copy(io.MultiWriter(w, h), r)
	if err != nil {
		return fmt.Errorf("copy %s: %w", key, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("copy %s: the source has %d bytes, its record says %d", key, n, size)
	}
	if fileHash != "" && h.Sum().String() != fileHash {
		return fmt.Errorf("copy %s: the source's bytes hash to %s, its record says %s (corrupt source?)", key, h.Sum(), fileHash)
	}
	if err := w.Commit(ctx, key); err != nil {
		return err
	}
	m.mu.Lock()
	m.st.Blobs++
	m.st.BlobBytes += n
	m.mu.Unlock()
	return nil
}

func (m *mover) paths(ctx context.Context) error {
	err := m.src.EachPath(ctx, func(p meta.Path) error {
		id, ok := m.cacheIDs[p.CacheID]
		if !ok || m.conflict[p.NarHash] {
			m.st.SkippedPaths++
			return nil
		}
		p.CacheID = id
		inserted, err := m.dst.ImportPath(ctx, p)
		switch {
		case errors.Is(err, meta.ErrNotFound):
			// Its NAR (or cache) arrived at the source after they were moved.
			m.st.SkippedPaths++
		case err != nil:
			return err
		case inserted:
			m.st.Paths++
		default:
			m.st.PresentPaths++
		}
		m.progress(false, "paths: %d recorded", m.st.Paths)
		return nil
	})
	m.progress(true, "paths: %d recorded, %d there already, %d skipped", m.st.Paths, m.st.PresentPaths, m.st.SkippedPaths)
	return err
}

func (m *mover) logs(ctx context.Context) error {
	return m.src.EachLog(ctx, func(l meta.Log) error {
		id, ok := m.cacheIDs[l.CacheID]
		if !ok {
			return nil
		}
		if err := m.copyBlob(ctx, l.BlobKey, "", l.Size); err != nil {
			return fmt.Errorf("log %s: %w", l.Drv, err)
		}
		l.CacheID = id
		inserted, err := m.dst.ImportLog(ctx, l)
		if err != nil {
			return err
		}
		if inserted {
			m.st.Logs++
		}
		return nil
	})
}
