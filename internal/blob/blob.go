// Package blob defines where silo keeps the bytes of NARs, listings and
// build logs: a Store of immutable blobs named by keys.
//
// Contract every implementation keeps (checked by blob/blobtest):
//   - A blob is never half-visible: bytes written through a Writer appear
//     under a key only when Commit returns nil, all at once; an aborted,
//     failed or crashed write leaves nothing readable under any key.
//   - Blobs are immutable. Callers name blobs by their content (a hash of
//     the stored bytes), so committing a key that already exists keeps one
//     blob with those same bytes, whichever write wins.
//   - Keys are relative slash-separated paths whose segments match
//     [A-Za-z0-9._-]+ and do not start with '.'; ValidKey checks them.
//   - Missing blobs are reported with ErrNotFound, a full store with
//     ErrFull (the HTTP layer answers 507 Insufficient Storage).
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

var (
	// ErrNotFound is returned (wrapped) for a key that holds no blob.
	ErrNotFound = errors.New("blob not found")
	// ErrFull is returned (wrapped) when the store has no room left.
	ErrFull = errors.New("blob store is full")
	// ErrInvalidKey is returned (wrapped) for a key ValidKey rejects.
	ErrInvalidKey = errors.New("invalid blob key")
)

// Store holds immutable blobs.
type Store interface {
	// Create starts a new blob. Nothing is visible until Commit.
	Create(ctx context.Context) (Writer, error)
	// Open opens the blob stored under key. Callers should pass the result
	// to io.Copy or http.ServeContent as is: the disk store returns an
	// *os.File so that downloads use sendfile.
	Open(ctx context.Context, key string) (io.ReadSeekCloser, error)
	// Stat describes the blob under key.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes the blob under key; deleting a missing blob is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for every blob whose key starts with prefix, in no
	// particular order. It stops at the first error fn returns and returns it.
	List(ctx context.Context, prefix string, fn func(Info) error) error
}

// Writer receives a new blob's bytes.
type Writer interface {
	io.Writer
	// Commit makes the bytes written so far visible under key, durably. It
	// is the last call on a Writer.
	Commit(ctx context.Context, key string) error
	// Abort discards the bytes. It is safe to call at any time, also after
	// Commit (then it does nothing), so callers may defer it.
	Abort() error
}

// Info describes a stored blob.
type Info struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// ValidKey reports why key cannot name a blob, or nil.
func ValidKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg[0] == '.' {
			return fmt.Errorf("%w: %q has an empty segment or one starting with '.'", ErrInvalidKey, key)
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("%w: %q has character %q (allowed: A-Z a-z 0-9 . _ -)", ErrInvalidKey, key, c)
			}
		}
	}
	return nil
}
