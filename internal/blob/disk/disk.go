// Package disk stores blobs as files under a root directory.
//
// A blob with key "dir/name" lives at ROOT/dir/<first two characters of
// name>/name, so no directory grows past a few thousand entries. Writers
// write to ROOT/.tmp/, fsync, and rename into place (then fsync the
// directory), so a blob is either whole or absent even across crashes;
// CleanTemp removes what crashed writers left in ROOT/.tmp. Directories
// are created 0700 and files 0600: blobs hold private caches' NARs.
package disk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/silo-cache/silo/internal/blob"
)

var _ blob.Store = (*Store)(nil)

// Store is a blob.Store on the local file system.
type Store struct {
	root string
}

const tmpDir = ".tmp"

// Open returns the store rooted at dir, creating dir if needed.
func Open(dir string) (*Store, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open blob store %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(root, tmpDir), 0o700); err != nil {
		return nil, fmt.Errorf("open blob store %s: %w", dir, err)
	}
	return &Store{root: root}, nil
}

// Root returns the directory holding the blobs.
func (s *Store) Root() string { return s.root }

// file returns the file holding key.
func (s *Store) file(key string) (string, error) {
	if err := blob.ValidKey(key); err != nil {
		return "", err
	}
	dir, name := path.Split(key)
	return filepath.Join(s.root, filepath.FromSlash(dir), shard(name), name), nil
}

func shard(name string) string {
	if len(name) > 2 {
		return name[:2]
	}
	return name
}

// keyOf inverts file: rel is a file's path relative to the root.
func keyOf(rel string) (string, bool) {
	dir, name := path.Split(filepath.ToSlash(rel))
	parent, sh := path.Split(strings.TrimSuffix(dir, "/"))
	if sh != shard(name) {
		return "", false
	}
	key := parent + name
	return key, blob.ValidKey(key) == nil
}

func wrapErr(op, key string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s blob %s: %w", op, key, blob.ErrNotFound)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%s blob %s: %w (%v)", op, key, blob.ErrFull, err)
	}
	return fmt.Errorf("%s blob %s: %w", op, key, err)
}

// Create starts a new blob in the temporary directory.
func (s *Store) Create(ctx context.Context) (blob.Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	name := filepath.Join(s.root, tmpDir, hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, wrapErr("create", "(new)", err)
	}
	return &writer{s: s, f: f}, nil
}

type writer struct {
	s    *Store
	f    *os.File
	done bool
	err  error // first write error; Commit fails with it
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("write blob: writer already committed or aborted")
	}
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(p)
	if err != nil {
		w.err = wrapErr("write", "(new)", err)
		return n, w.err
	}
	return n, nil
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
	dst, err := w.s.file(key)
	if err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return wrapErr("sync", key, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return wrapErr("commit", key, err)
	}
	if err := os.Rename(w.f.Name(), dst); err != nil {
		return wrapErr("commit", key, err)
	}
	w.done = true
	cerr := w.f.Close()
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return wrapErr("commit", key, err)
	}
	if cerr != nil {
		return wrapErr("commit", key, cerr)
	}
	return nil
}

func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("abort blob: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open opens the blob under key; the result is an *os.File.
func (s *Store) Open(ctx context.Context, key string) (io.ReadSeekCloser, error) {
	name, err := s.file(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, wrapErr("open", key, err)
	}
	return f, nil
}

// Stat describes the blob under key.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	name, err := s.file(key)
	if err != nil {
		return blob.Info{}, err
	}
	fi, err := os.Stat(name)
	if err != nil {
		return blob.Info{}, wrapErr("stat", key, err)
	}
	return blob.Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete removes the blob under key.
func (s *Store) Delete(ctx context.Context, key string) error {
	name, err := s.file(key)
	if err != nil {
		return err
	}
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return wrapErr("delete", key, err)
	}
	return nil
}

// List calls fn for every blob whose key starts with prefix.
func (s *Store) List(ctx context.Context, prefix string, fn func(blob.Info) error) error {
	top, _, hasDir := strings.Cut(prefix, "/")
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.root, p)
		if d.IsDir() {
			isTop := rel != "." && !strings.ContainsRune(rel, filepath.Separator)
			if rel == tmpDir || isTop && hasDir && rel != top {
				return filepath.SkipDir
			}
			return nil
		}
		key, ok := keyOf(rel)
		if !ok || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(blob.Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("list blobs %q in %s: %w", prefix, s.root, err)
	}
	return nil
}

// CleanTemp removes files that writers left in the temporary directory
// more than olderThan ago (all of them for 0) and returns how many. Only
// the one process writing to the store may call it with 0, at start-up.
func (s *Store) CleanTemp(olderThan time.Duration) (int, error) {
	dir := filepath.Join(s.root, tmpDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("clean %s: %w", dir, err)
	}
	n := 0
	cutoff := time.Now().Add(-olderThan)
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || olderThan > 0 && fi.ModTime().After(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
			n++
		}
	}
	return n, nil
}
