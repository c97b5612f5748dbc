// Package meta defines the metadata silo's cache server keeps beside the
// blobs: caches, access tokens, stored NARs, verified uploads, the store
// paths each cache serves, and build logs.
//
// Contract every Store keeps (checked by meta/metatest):
//   - A Path refers to a NAR that exists: PutPath fails with ErrNotFound
//     unless the NAR (and the cache) is there, atomically with the insert,
//     and Collect never removes a NAR that a path or an upload refers to.
//   - A NAR record is immutable and there is at most one per NarHash:
//     AddUpload keeps the first one stored, so identical NARs are stored
//     once whichever cache or compression they came with.
//   - The first writer wins: PutPath and PutLog never replace a record
//     (ErrExists), atomically however many writers race; only ReplacePath
//     and ReplaceLog (an admin's replacement) do. PutLog also holds a
//     cache's logs to the limits it is given (ErrLimit), atomically.
//   - Cache IDs are never reused, so a record keyed by a deleted cache's ID
//     can never surface under a new cache of the same name.
//   - Writes by another process (the admin commands) are seen by the next
//     call: a Store caches nothing. Version changes with every committed
//     write, by any process, so that callers can cache records and
//     re-check them cheaply.
//   - Missing records are ErrNotFound, name clashes ErrExists, limits
//     reached ErrLimit.
package meta

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrNotFound is returned (wrapped) when a record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned (wrapped) when a record with that name exists.
	ErrExists = errors.New("already exists")
	// ErrLimit is returned (wrapped) when a write would take a cache past
	// a limit it was given.
	ErrLimit = errors.New("limit reached")
)

// Cache is one binary cache served at /<Name>/.
type Cache struct {
	ID        int64 // assigned by CreateCache
	Name      string
	Public    bool   // anyone may read; otherwise readers need a token
	Priority  int    // nix-cache-info Priority: lower is preferred
	SecretKey string // signing key, "name:base64" (signature.ParseSecretKey)
	StoreDir  string // "/nix/store"
	Created   time.Time
}

// Perm is a set of permissions a token grants on the caches it matches.
type Perm uint8

// The permissions. Push implies pull and admin implies both, checked by
// the HTTP layer; the bits are stored as given.
const (
	PermPull Perm = 1 << iota
	PermPush
	PermAdmin
)

// Token is an access token. Only its SHA-256 is stored.
type Token struct {
	ID           string // embedded in the token text, used to look it up
	Hash         []byte // SHA-256 of the whole token text
	CachePattern string // path.Match pattern over cache names
	Perms        Perm
	Expires      time.Time // zero: never
	Created      time.Time
	Note         string
}

// NAR is a stored, verified NAR, shared by every path (in any cache)
// whose NarHash it has.
type NAR struct {
	NarHash     string // "sha256:<nix32>"
	NarSize     int64
	BlobKey     string // the stored file, served as /<cache>/<BlobKey>
	Compression string // of the stored file: "zstd", "xz", "none"
	FileHash    string // of the stored file, "sha256:<nix32>"
	FileSize    int64
	ListingKey  string // blob holding the .ls listing (JSON)
	Created     time.Time
}

// Upload records that a client uploaded a NAR file to a cache under URL
// (as Nix names it, "nar/<filehash>.nar.xz") and that it verified as the
// NAR NarHash. A narinfo naming URL may then be committed.
type Upload struct {
	CacheID  int64
	URL      string
	FileHash string // of the file as the client sent it
	FileSize int64
	NarHash  string
	NarSize  int64
	Created  time.Time
}

// Path is a store path a cache serves.
type Path struct {
	CacheID   int64
	HashPart  string // 32 nix32 characters
	StorePath string
	NarHash   string
	NarInfo   string // the narinfo text served, signed
	Created   time.Time
}

// Log is a build log stored in a cache.
type Log struct {
	CacheID int64
	Drv     string // base name of the derivation, "<hash>-<name>.drv"
	BlobKey string
	Size    int64
	Created time.Time
}

// LogLimits bound what build logs one cache holds; zero fields mean no
// limit.
type LogLimits struct {
	Count int64 // logs
	Bytes int64 // sum of their sizes
}

// Usage sums what one cache holds.
type Usage struct {
	Cache       string
	Paths       int64
	NarBytes    int64 // uncompressed NAR sizes of its paths
	StoredBytes int64 // stored files of the distinct NARs its paths use
}

// Store keeps silo's metadata.
type Store interface {
	// CreateCache stores c, assigning ID and Created; ErrExists if the name is taken.
	CreateCache(ctx context.Context, c Cache) (Cache, error)
	Cache(ctx context.Context, name string) (Cache, error)
	// Caches returns every cache, ordered by name.
	Caches(ctx context.Context) ([]Cache, error)
	// DeleteCache removes a cache with its paths, uploads and logs. The
	// NARs they used become garbage for Collect.
	DeleteCache(ctx context.Context, name string) error

	// CreateToken stores t, assigning Created if zero; ErrExists if the ID is taken.
	CreateToken(ctx context.Context, t Token) error
	Token(ctx context.Context, id string) (Token, error)
	// Tokens returns every token, oldest first.
	Tokens(ctx context.Context) ([]Token, error)
	DeleteToken(ctx context.Context, id string) error

	// AddUpload records u, replacing an earlier upload to the same cache
	// and URL, together with its NAR n (n.NarHash == u.NarHash) unless a
	// NAR with that hash is stored already. It returns the NAR stored and
	// whether it is n.
	AddUpload(ctx context.Context, u Upload, n NAR) (stored NAR, inserted bool, err error)
	Upload(ctx context.Context, cacheID int64, url string) (Upload, error)
	// NAR returns the stored NAR with the given hash.
	NAR(ctx context.Context, narHash string) (NAR, error)
	// ServedNAR returns the NAR stored under blobKey if a path of the cache
	// uses it, else ErrNotFound.
	ServedNAR(ctx context.Context, cacheID int64, blobKey string) (NAR, error)

	// PutPath stores p unless the cache has a path with its hash part
	// already (ErrExists): of writers racing for one path exactly one
	// succeeds. ErrNotFound if the cache or a NAR with p.NarHash does not
	// exist.
	PutPath(ctx context.Context, p Path) error
	// ReplacePath stores p, replacing the cache's path with the same hash
	// part if there is one; ErrNotFound as for PutPath.
	ReplacePath(ctx context.Context, p Path) error
	Path(ctx context.Context, cacheID int64, hashPart string) (Path, error)
	// Missing returns the hash parts the cache has no path for, in order.
	Missing(ctx context.Context, cacheID int64, hashParts []string) ([]string, error)

	// PutLog stores l unless the cache has a log for l.Drv already
	// (ErrExists), or holding l too would take the cache's logs past max
	// (ErrLimit); the checks and the insert are one atomic step.
	// ErrNotFound if the cache does not exist.
	PutLog(ctx context.Context, l Log, max LogLimits) error
	// ReplaceLog stores l, replacing the cache's log for the same
	// derivation if there is one, whatever the limits.
	ReplaceLog(ctx context.Context, l Log) error
	Log(ctx context.Context, cacheID int64, drv string) (Log, error)

	// Collect removes uploads created before uploadsBefore that no path of
	// their cache uses, then NARs that no path or upload refers to, and
	// returns the blob keys of the removed NARs (files and listings) for
	// the caller to delete.
	Collect(ctx context.Context, uploadsBefore time.Time) ([]string, error)
	// BlobInUse reports whether a NAR or log refers to the blob key.
	BlobInUse(ctx context.Context, key string) (bool, error)

	// Version returns a number that differs from the previous result
	// whenever a write (by this or any other process) has been committed
	// since. It is cheap: callers check it on every request.
	Version(ctx context.Context) (int64, error)

	// Usage returns per-cache sums, ordered by cache name.
	Usage(ctx context.Context) ([]Usage, error)

	Close() error
}
