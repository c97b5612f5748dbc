// Package sqlite keeps silo's metadata in one SQLite database in WAL mode
// (modernc.org/sqlite, pure Go), shared safely by the server and the admin
// commands running beside it: every write is a transaction that takes the
// write lock up front (BEGIN IMMEDIATE), every read sees committed state,
// and a busy database is waited for, not failed.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/silo-cache/silo/internal/meta"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var _ meta.Store = (*Store)(nil)

// Store is a meta.Store in an SQLite database file.
type Store struct {
	db   *sql.DB
	path string
	hot  map[string]*sql.Stmt

	// version watches PRAGMA data_version on a connection of its own, on
	// which nothing is ever written: it changes with every commit made
	// through any other connection, in this process or another.
	versionMu   sync.Mutex
	versionConn *sql.Conn
	versionStmt *sql.Stmt
}

// Open opens (creating if needed) the database at path and brings its
// schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	dsn := "file:" + path + "?_txlock=immediate" +
		"&_pragma=busy_timeout(10000)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(FULL)" +
		"&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	db.SetMaxIdleConns(16)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s := &Store{db: db, path: path, hot: map[string]*sql.Stmt{}}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	for name, q := range hotQueries {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("open metadata %s: prepare %s: %w", path, name, err)
		}
		s.hot[name] = st
	}
	if s.versionConn, err = db.Conn(ctx); err == nil {
		s.versionStmt, err = s.versionConn.PrepareContext(ctx, "PRAGMA data_version")
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.versionMu.Lock()
	s.versionStmt.Close()
	s.versionConn.Close()
	s.versionMu.Unlock()
	return s.db.Close()
}

// Version returns SQLite's data_version as seen by a connection that
// never writes.
func (s *Store) Version(ctx context.Context) (int64, error) {
	s.versionMu.Lock()
	defer s.versionMu.Unlock()
	var v int64
	if err := s.versionStmt.QueryRowContext(ctx).Scan(&v); err != nil {
		return 0, fmt.Errorf("read data version: %w", err)
	}
	return v, nil
}

// schema lists the migrations; schema[i] takes user_version i to i+1.
var schema = []string{`
CREATE TABLE caches (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	name TEXT NOT NULL UNIQUE,
	public INTEGER NOT NULL,
	priority INTEGER NOT NULL,
	secret_key TEXT NOT NULL,
	store_dir TEXT NOT NULL,
	created INTEGER NOT NULL
);
CREATE TABLE tokens (
	id TEXT PRIMARY KEY,
	hash BLOB NOT NULL,
	cache_pattern TEXT NOT NULL,
	perms INTEGER NOT NULL,
	expires INTEGER NOT NULL,
	created INTEGER NOT NULL,
	note TEXT NOT NULL
);
CREATE TABLE nars (
	nar_hash TEXT PRIMARY KEY,
	nar_size INTEGER NOT NULL,
	blob_key TEXT NOT NULL,
	compression TEXT NOT NULL,
	file_hash TEXT NOT NULL,
	file_size INTEGER NOT NULL,
	listing_key TEXT NOT NULL,
	created INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX nars_blob ON nars(blob_key);
CREATE INDEX nars_listing ON nars(listing_key);
CREATE TABLE uploads (
	cache_id INTEGER NOT NULL REFERENCES caches(id) ON DELETE CASCADE,
	url TEXT NOT NULL,
	file_hash TEXT NOT NULL,
	file_size INTEGER NOT NULL,
	nar_hash TEXT NOT NULL REFERENCES nars(nar_hash),
	nar_size INTEGER NOT NULL,
	created INTEGER NOT NULL,
	PRIMARY KEY (cache_id, url)
) WITHOUT ROWID;
CREATE INDEX uploads_nar ON uploads(nar_hash);
CREATE TABLE paths (
	cache_id INTEGER NOT NULL REFERENCES caches(id) ON DELETE CASCADE,
	hash_part TEXT NOT NULL,
	store_path TEXT NOT NULL,
	nar_hash TEXT NOT NULL REFERENCES nars(nar_hash),
	narinfo TEXT NOT NULL,
	created INTEGER NOT NULL,
	PRIMARY KEY (cache_id, hash_part)
) WITHOUT ROWID;
CREATE INDEX paths_nar ON paths(nar_hash, cache_id);
CREATE TABLE logs (
	cache_id INTEGER NOT NULL REFERENCES caches(id) ON DELETE CASCADE,
	drv TEXT NOT NULL,
	blob_key TEXT NOT NULL,
	size INTEGER NOT NULL,
	created INTEGER NOT NULL,
	PRIMARY KEY (cache_id, drv)
) WITHOUT ROWID;
CREATE INDEX logs_blob ON logs(blob_key);
`}

func (s *Store) migrate(ctx context.Context) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var v int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return err
		}
		if v > len(schema) {
			return fmt.Errorf("database schema version %d is newer than this silo knows (%d); upgrade silo", v, len(schema))
		}
		for ; v < len(schema); v++ {
			if _, err := tx.ExecContext(ctx, schema[v]); err != nil {
				return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
			}
		}
		_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v))
		return err
	})
}

// tx runs fn in a write transaction.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

var hotQueries = map[string]string{
	"cache":     `SELECT id, name, public, priority, secret_key, store_dir, created FROM caches WHERE name = ?`,
	"token":     `SELECT id, hash, cache_pattern, perms, expires, created, note FROM tokens WHERE id = ?`,
	"path":      `SELECT cache_id, hash_part, store_path, nar_hash, narinfo, created FROM paths WHERE cache_id = ? AND hash_part = ?`,
	"servedNAR": `SELECT ` + narCols + ` FROM nars WHERE blob_key = ? AND EXISTS (SELECT 1 FROM paths p WHERE p.nar_hash = nars.nar_hash AND p.cache_id = ?)`,
}

const narCols = `nar_hash, nar_size, blob_key, compression, file_hash, file_size, listing_key, created`

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func isUnique(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && (se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, meta.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

type scanner interface{ Scan(...any) error }

func scanCache(r scanner) (meta.Cache, error) {
	var c meta.Cache
	var created int64
	err := r.Scan(&c.ID, &c.Name, &c.Public, &c.Priority, &c.SecretKey, &c.StoreDir, &created)
	c.Created = fromNanos(created)
	return c, err
}

// CreateCache stores c under a fresh ID.
func (s *Store) CreateCache(ctx context.Context, c meta.Cache) (meta.Cache, error) {
	if c.Created.IsZero() {
		c.Created = time.Now()
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO caches (name, public, priority, secret_key, store_dir, created) VALUES (?, ?, ?, ?, ?, ?)`,
		c.Name, c.Public, c.Priority, c.SecretKey, c.StoreDir, nanos(c.Created))
	if isUnique(err) {
		return meta.Cache{}, fmt.Errorf("create cache %q: %w", c.Name, meta.ErrExists)
	}
	if err != nil {
		return meta.Cache{}, fmt.Errorf("create cache %q: %w", c.Name, err)
	}
	c.ID, err = res.LastInsertId()
	return c, err
}

// Cache returns the cache named name.
func (s *Store) Cache(ctx context.Context, name string) (meta.Cache, error) {
	c, err := scanCache(s.hot["cache"].QueryRowContext(ctx, name))
	if err != nil {
		return meta.Cache{}, notFound(err, fmt.Sprintf("cache %q", name))
	}
	return c, nil
}

// Caches returns all caches by name.
func (s *Store) Caches(ctx context.Context) ([]meta.Cache, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, public, priority, secret_key, store_dir, created FROM caches ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list caches: %w", err)
	}
	defer rows.Close()
	var out []meta.Cache
	for rows.Next() {
		c, err := scanCache(rows)
		if err != nil {
			return nil, fmt.Errorf("list caches: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// DeleteCache removes the cache and, by cascade, its paths, uploads and logs.
func (s *Store) DeleteCache(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM caches WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete cache %q: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete cache %q: %w", name, meta.ErrNotFound)
	}
	return nil
}

func scanToken(r scanner) (meta.Token, error) {
	var t meta.Token
	var expires, created int64
	err := r.Scan(&t.ID, &t.Hash, &t.CachePattern, &t.Perms, &expires, &created, &t.Note)
	t.Expires, t.Created = fromNanos(expires), fromNanos(created)
	return t, err
}

// CreateToken stores t.
func (s *Store) CreateToken(ctx context.Context, t meta.Token) error {
	if t.Created.IsZero() {
		t.Created = time.Now()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO tokens (id, hash, cache_pattern, perms, expires, created, note) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Hash, t.CachePattern, t.Perms, nanos(t.Expires), nanos(t.Created), t.Note)
	if isUnique(err) {
		return fmt.Errorf("create token %q: %w", t.ID, meta.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create token %q: %w", t.ID, err)
	}
	return nil
}

// Token returns the token with the given ID.
func (s *Store) Token(ctx context.Context, id string) (meta.Token, error) {
	t, err := scanToken(s.hot["token"].QueryRowContext(ctx, id))
	if err != nil {
		return meta.Token{}, notFound(err, fmt.Sprintf("token %q", id))
	}
	return t, nil
}

// Tokens returns all tokens, oldest first.
func (s *Store) Tokens(ctx context.Context) ([]meta.Token, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, hash, cache_pattern, perms, expires, created, note FROM tokens ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []meta.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// DeleteToken removes the token with the given ID.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM tokens WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete token %q: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete token %q: %w", id, meta.ErrNotFound)
	}
	return nil
}

func scanNAR(r scanner) (meta.NAR, error) {
	var n meta.NAR
	var created int64
	err := r.Scan(&n.NarHash, &n.NarSize, &n.BlobKey, &n.Compression, &n.FileHash, &n.FileSize, &n.ListingKey, &created)
	n.Created = fromNanos(created)
	return n, err
}

// AddUpload records u and, unless one with its hash exists, the NAR n.
func (s *Store) AddUpload(ctx context.Context, u meta.Upload, n meta.NAR) (meta.NAR, bool, error) {
	if u.NarHash != n.NarHash {
		return meta.NAR{}, false, fmt.Errorf("add upload %s: upload is of NAR %s but the NAR given is %s", u.URL, u.NarHash, n.NarHash)
	}
	now := time.Now()
	if u.Created.IsZero() {
		u.Created = now
	}
	if n.Created.IsZero() {
		n.Created = now
	}
	var stored meta.NAR
	var inserted bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO nars (`+narCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (nar_hash) DO NOTHING`,
			n.NarHash, n.NarSize, n.BlobKey, n.Compression, n.FileHash, n.FileSize, n.ListingKey, nanos(n.Created))
		if err != nil {
			return err
		}
		k, _ := res.RowsAffected()
		inserted = k == 1
		stored, err = scanNAR(tx.QueryRowContext(ctx, `SELECT `+narCols+` FROM nars WHERE nar_hash = ?`, n.NarHash))
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT OR REPLACE INTO uploads (cache_id, url, file_hash, file_size, nar_hash, nar_size, created) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			u.CacheID, u.URL, u.FileHash, u.FileSize, u.NarHash, u.NarSize, nanos(u.Created))
		if err != nil && strings.Contains(err.Error(), "FOREIGN KEY") {
			return fmt.Errorf("cache %d: %w", u.CacheID, meta.ErrNotFound)
		}
		return err
	})
	if err != nil {
		return meta.NAR{}, false, fmt.Errorf("add upload %s: %w", u.URL, err)
	}
	return stored, inserted, nil
}

// Upload returns the upload to the cache under url.
func (s *Store) Upload(ctx context.Context, cacheID int64, url string) (meta.Upload, error) {
	var u meta.Upload
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT cache_id, url, file_hash, file_size, nar_hash, nar_size, created FROM uploads WHERE cache_id = ? AND url = ?`,
		cacheID, url).Scan(&u.CacheID, &u.URL, &u.FileHash, &u.FileSize, &u.NarHash, &u.NarSize, &created)
	if err != nil {
		return meta.Upload{}, notFound(err, "upload "+url)
	}
	u.Created = fromNanos(created)
	return u, nil
}

// NAR returns the stored NAR with hash narHash.
func (s *Store) NAR(ctx context.Context, narHash string) (meta.NAR, error) {
	n, err := scanNAR(s.db.QueryRowContext(ctx, `SELECT `+narCols+` FROM nars WHERE nar_hash = ?`, narHash))
	if err != nil {
		return meta.NAR{}, notFound(err, "NAR "+narHash)
	}
	return n, nil
}

// ServedNAR returns the NAR stored under blobKey if the cache serves it.
func (s *Store) ServedNAR(ctx context.Context, cacheID int64, blobKey string) (meta.NAR, error) {
	n, err := scanNAR(s.hot["servedNAR"].QueryRowContext(ctx, blobKey, cacheID))
	if err != nil {
		return meta.NAR{}, notFound(err, "NAR file "+blobKey)
	}
	return n, nil
}

// PutPath stores p if its cache and NAR exist.
func (s *Store) PutPath(ctx context.Context, p meta.Path) error {
	if p.Created.IsZero() {
		p.Created = time.Now()
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO paths (cache_id, hash_part, store_path, nar_hash, narinfo, created)
		SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM nars WHERE nar_hash = ?) AND EXISTS (SELECT 1 FROM caches WHERE id = ?)
		ON CONFLICT (cache_id, hash_part) DO UPDATE SET store_path = excluded.store_path, nar_hash = excluded.nar_hash,
			narinfo = excluded.narinfo, created = excluded.created`,
		p.CacheID, p.HashPart, p.StorePath, p.NarHash, p.NarInfo, nanos(p.Created), p.NarHash, p.CacheID)
	if err != nil {
		return fmt.Errorf("put path %s: %w", p.StorePath, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("put path %s: cache %d or NAR %s: %w", p.StorePath, p.CacheID, p.NarHash, meta.ErrNotFound)
	}
	return nil
}

// Path returns the cache's path with the given hash part.
func (s *Store) Path(ctx context.Context, cacheID int64, hashPart string) (meta.Path, error) {
	var p meta.Path
	var created int64
	err := s.hot["path"].QueryRowContext(ctx, cacheID, hashPart).Scan(&p.CacheID, &p.HashPart, &p.StorePath, &p.NarHash, &p.NarInfo, &created)
	if err != nil {
		return meta.Path{}, notFound(err, "path "+hashPart)
	}
	p.Created = fromNanos(created)
	return p, nil
}

// missingChunk bounds the number of SQL parameters per query.
const missingChunk = 500

// Missing returns the hash parts the cache lacks, in order.
func (s *Store) Missing(ctx context.Context, cacheID int64, hashParts []string) ([]string, error) {
	have := make(map[string]bool)
	for start := 0; start < len(hashParts); start += missingChunk {
		chunk := hashParts[start:min(start+missingChunk, len(hashParts))]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, cacheID)
		for _, h := range chunk {
			args = append(args, h)
		}
		q := `SELECT hash_part FROM paths WHERE cache_id = ? AND hash_part IN (?` + strings.Repeat(",?", len(chunk)-1) + `)`
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("query missing paths: %w", err)
		}
		for rows.Next() {
			var h string
			if err := rows.Scan(&h); err != nil {
				rows.Close()
				return nil, fmt.Errorf("query missing paths: %w", err)
			}
			have[h] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("query missing paths: %w", err)
		}
	}
	missing := []string{}
	for _, h := range hashParts {
		if !have[h] {
			missing = append(missing, h)
		}
	}
	return missing, nil
}

// PutLog stores l, replacing an earlier log of the same derivation.
func (s *Store) PutLog(ctx context.Context, l meta.Log) error {
	if l.Created.IsZero() {
		l.Created = time.Now()
	}
	res, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO logs (cache_id, drv, blob_key, size, created)
		SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM caches WHERE id = ?)`,
		l.CacheID, l.Drv, l.BlobKey, l.Size, nanos(l.Created), l.CacheID)
	if err != nil {
		return fmt.Errorf("put log %s: %w", l.Drv, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("put log %s: cache %d: %w", l.Drv, l.CacheID, meta.ErrNotFound)
	}
	return nil
}

// Log returns the cache's log of the derivation drv.
func (s *Store) Log(ctx context.Context, cacheID int64, drv string) (meta.Log, error) {
	var l meta.Log
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT cache_id, drv, blob_key, size, created FROM logs WHERE cache_id = ? AND drv = ?`,
		cacheID, drv).Scan(&l.CacheID, &l.Drv, &l.BlobKey, &l.Size, &created)
	if err != nil {
		return meta.Log{}, notFound(err, "log "+drv)
	}
	l.Created = fromNanos(created)
	return l, nil
}

const unusedNAR = `NOT EXISTS (SELECT 1 FROM paths p WHERE p.nar_hash = nars.nar_hash)
	AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.nar_hash = nars.nar_hash)`

// Collect removes expired uploads and unused NARs.
func (s *Store) Collect(ctx context.Context, uploadsBefore time.Time) ([]string, error) {
	var keys []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM uploads WHERE created < ? AND NOT EXISTS
			(SELECT 1 FROM paths p WHERE p.cache_id = uploads.cache_id AND p.nar_hash = uploads.nar_hash)`, nanos(uploadsBefore))
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT blob_key, listing_key FROM nars WHERE `+unusedNAR)
		if err != nil {
			return err
		}
		for rows.Next() {
			var b, l string
			if err := rows.Scan(&b, &l); err != nil {
				rows.Close()
				return err
			}
			keys = append(keys, b)
			if l != "" {
				keys = append(keys, l)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM nars WHERE `+unusedNAR)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("collect garbage: %w", err)
	}
	return keys, nil
}

// BlobInUse reports whether a NAR or log refers to key.
func (s *Store) BlobInUse(ctx context.Context, key string) (bool, error) {
	var used bool
	err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM nars WHERE blob_key = ?1)
		OR EXISTS (SELECT 1 FROM nars WHERE listing_key = ?1) OR EXISTS (SELECT 1 FROM logs WHERE blob_key = ?1)`, key).Scan(&used)
	if err != nil {
		return false, fmt.Errorf("check blob %s: %w", key, err)
	}
	return used, nil
}

// Usage sums each cache's paths and bytes.
func (s *Store) Usage(ctx context.Context) ([]meta.Usage, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT c.name, COALESCE(p.cnt, 0), COALESCE(p.nar, 0), COALESCE(d.stored, 0) FROM caches c
		LEFT JOIN (SELECT cache_id, COUNT(*) AS cnt, SUM(n.nar_size) AS nar FROM paths JOIN nars n USING (nar_hash) GROUP BY cache_id) p ON p.cache_id = c.id
		LEFT JOIN (SELECT cache_id, SUM(file_size) AS stored FROM
			(SELECT DISTINCT p.cache_id, n.nar_hash, n.file_size FROM paths p JOIN nars n USING (nar_hash)) GROUP BY cache_id) d ON d.cache_id = c.id
		ORDER BY c.name`)
	if err != nil {
		return nil, fmt.Errorf("sum usage: %w", err)
	}
	defer rows.Close()
	var out []meta.Usage
	for rows.Next() {
		var u meta.Usage
		if err := rows.Scan(&u.Cache, &u.Paths, &u.NarBytes, &u.StoredBytes); err != nil {
			return nil, fmt.Errorf("sum usage: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
