package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/silo-cache/silo/internal/storepath"
)

// fileTarget is a directory laid out as Nix's file:// binary cache:
// nix-cache-info, <hash>.narinfo and nar/<file>. Every file appears whole
// (written beside its final name, synced, then renamed).
type fileTarget struct{ dir string }

func (t *fileTarget) String() string { return "file://" + t.dir }

func (t *fileTarget) path(rel string) (string, error) {
	clean := filepath.Clean(rel)
	if clean != rel || strings.HasPrefix(rel, "/") || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("cache file name %q is not a plain relative path", rel)
	}
	return filepath.Join(t.dir, rel), nil
}

func (t *fileTarget) Init(ctx context.Context, dir storepath.Dir) error {
	if err := os.MkdirAll(filepath.Join(t.dir, "nar"), 0o755); err != nil {
		return fmt.Errorf("create cache directory: %w", err)
	}
	data, err := os.ReadFile(filepath.Join(t.dir, "nix-cache-info"))
	if err == nil {
		return checkCacheInfo(filepath.Join(t.dir, "nix-cache-info"), string(data), dir)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read cache info: %w", err)
	}
	info := cacheInfo(dir)
	return t.PutFile(ctx, "nix-cache-info", typeCacheInfo, int64(len(info)),
		func() (io.Reader, error) { return strings.NewReader(info), nil })
}

func (t *fileTarget) Missing(ctx context.Context, hashParts []string) ([]string, error) {
	var missing []string
	for _, h := range hashParts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ok, err := t.HasFile(ctx, h+".narinfo")
		if err != nil {
			return nil, err
		}
		if !ok {
			missing = append(missing, h)
		}
	}
	return missing, nil
}

func (t *fileTarget) HasFile(ctx context.Context, rel string) (bool, error) {
	p, err := t.path(rel)
	if err != nil {
		return false, err
	}
	_, err = os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look for %s in cache: %w", rel, err)
	}
	return true, nil
}

func (t *fileTarget) PutFile(ctx context.Context, rel, contentType string, size int64, open func() (io.Reader, error)) error {
	dst, err := t.path(rel)
	if err != nil {
		return err
	}
	body, err := open()
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, readerCtx{ctx, body})
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if n != size {
		return fmt.Errorf("write %s: got %d bytes, want %d", dst, n, size)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	ok = true
	return nil
}

// readerCtx stops a copy when ctx is done.
type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
