package substitute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"syscall"
)

// errNotFound is wrapped by errors about a file the cache does not have
// (HTTP 404, 410, and 401, 403, 407 as Nix treats them; ENOENT).
var errNotFound = errors.New("not found")

// transport reads files of a cache.
type transport interface {
	// open returns a reader of the file at rel (relative to the cache, or
	// an absolute URL the cache gave) and its size if known (else -1).
	// Transient failures are retried, also in the middle of the body.
	open(ctx context.Context, rel string, cfg *Config) (io.ReadCloser, int64, error)
	// getSmall reads a whole small file (nix-cache-info, a narinfo).
	getSmall(ctx context.Context, rel string, max int64, cfg *Config) ([]byte, error)
	// describe names rel for messages (its URL).
	describe(rel string) string
}

// readSmall reads all of r, refusing more than max bytes.
func readSmall(r io.Reader, max int64, what string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("'%s' is larger than %d bytes", what, max)
	}
	return data, nil
}

// fileTransport reads a file:// cache.
type fileTransport struct{ dir string }

func (f *fileTransport) describe(rel string) string { return "file://" + path.Join(f.dir, rel) }

// resolve maps a cache-relative name to a file inside the cache
// directory; a name that would leave it is refused.
func (f *fileTransport) resolve(rel string) (string, error) {
	if strings.Contains(rel, "://") || path.IsAbs(rel) || rel == "" {
		return "", fmt.Errorf("refusing file '%s' of binary cache 'file://%s': not a name inside the cache", rel, f.dir)
	}
	clean := path.Clean(rel)
	if clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsRune(rel, 0) {
		return "", fmt.Errorf("refusing file '%s' of binary cache 'file://%s': it leaves the cache directory", rel, f.dir)
	}
	return path.Join(f.dir, clean), nil
}

func (f *fileTransport) open(ctx context.Context, rel string, _ *Config) (io.ReadCloser, int64, error) {
	name, err := f.resolve(rel)
	if err != nil {
		return nil, 0, err
	}
	// O_NONBLOCK: a FIFO planted in the cache must not block the daemon.
	fd, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, 0, fmt.Errorf("file '%s' does not exist in binary cache: %w", rel, errNotFound)
		}
		return nil, 0, fmt.Errorf("reading binary cache file: %w", err)
	}
	st, err := fd.Stat()
	if err != nil {
		fd.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		fd.Close()
		return nil, 0, fmt.Errorf("binary cache file '%s' is not a regular file", name)
	}
	return ctxReadCloser{ctx, fd}, st.Size(), nil
}

func (f *fileTransport) getSmall(ctx context.Context, rel string, max int64, cfg *Config) ([]byte, error) {
	r, _, err := f.open(ctx, rel, cfg)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return readSmall(r, max, f.describe(rel))
}

// ctxReadCloser stops reading once ctx is done.
type ctxReadCloser struct {
	ctx context.Context
	io.ReadCloser
}

func (c ctxReadCloser) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.ReadCloser.Read(p)
}
