// Package sqlite keeps silo's metadata in one SQLite database in WAL mode
// (modernc.org/sqlite, pure Go), shared safely by the server and the admin
// commands running beside it: every write is a transaction that takes the
// write lock up front (BEGIN IMMEDIATE), every read sees committed state,
// and a busy database is waited for, not failed. Version costs a read of
// the mapped WAL index (-shm) while nothing has been committed, so the
// server can check it on every request.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
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
	// shm maps the first page of the database's WAL index (<db>-shm),
	// read to learn cheaply that nothing was committed since the last
	// data_version query; nil if it could not be mapped (then every
	// Version call queries).
	shm         []byte
	shmFile     *shmHandle            // keeps the -shm file open while shm is mapped
	shmHdr      [walIndexHdrSize]byte // the WAL index header at lastVersion
	shmValid    bool
	lastVersion int64
}

// Open opens (creating if needed) the database at path and brings its
// schema up to date. A new database file (and its directory) is readable
// by its owner only, whatever the umask: it holds every cache's signing
// key. SQLite gives the -wal and -shm files the database file's mode.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, os.ErrExist) {
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
	if err == nil {
		// The query opens the WAL index, which versionConn then keeps open
		// (and so mapped and never truncated by another process) until Close.
		_, err = s.queryVersion(ctx)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	s.shmFile = openShm(path + "-shm")
	if s.shmFile != nil {
		s.shm = s.shmFile.mapHeader()
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.versionMu.Lock()
	s.versionStmt.Close()
	s.versionConn.Close()
	if s.shm != nil {
		syscall.Munmap(s.shm)
		s.shm = nil
	}
	s.versionMu.Unlock()
	err := s.db.Close()
	// Only now, with every SQLite connection of this Store closed: see shmHandle.
	s.shmFile.release()
	return err
}

// walIndexHdrSize is the size of the WAL index header at the start of the
// -shm file. SQLite keeps two copies of it, and every commit (by any
// process) writes the second copy, then the first, with a commit counter
// (iChange) and the last frame's checksum in them. SQLite itself decides
// that data_version changed by comparing this header with the one it saw
// before, so an unchanged header means an unchanged data_version.
const walIndexHdrSize = 48

// Version returns SQLite's data_version as seen by a connection that
// never writes. While the WAL index header has not changed since the
// last query it returns that query's answer after reading the header
// from the mapped -shm file, without a query.
func (s *Store) Version(ctx context.Context) (int64, error) {
	s.versionMu.Lock()
	defer s.versionMu.Unlock()
	var hdr [2 * walIndexHdrSize]byte
	// Read the header before querying: a commit in between then changes
	// the header from the one stored with the answer, and the next call
	// queries again. (The other order could pair an old answer with a
	// new header and miss that commit.)
	ok := s.readShm(hdr[:])
	// The two copies differ while a commit is writing them.
	ok = ok && [walIndexHdrSize]byte(hdr[:walIndexHdrSize]) == [walIndexHdrSize]byte(hdr[walIndexHdrSize:])
	if ok && s.shmValid && [walIndexHdrSize]byte(hdr[:walIndexHdrSize]) == s.shmHdr {
		return s.lastVersion, nil
	}
	v, err := s.queryVersion(ctx)
	if err != nil {
		s.shmValid = false
		return 0, err
	}
	s.lastVersion, s.shmValid = v, ok
	s.shmHdr = [walIndexHdrSize]byte(hdr[:walIndexHdrSize])
	return v, nil
}

// shmHandle is this process's open file of one WAL index (-shm). SQLite
// locks the -shm file with POSIX (fcntl) locks, which belong to the
// process and are all dropped when the process closes any descriptor of
// the file. A descriptor of our own, opened to map the header, must
// therefore stay open as long as SQLite may hold locks on the file in
// this process: closing it would drop the server's shared DMS lock, and
// the next admin command, finding no other user, would truncate and
// rebuild the WAL index under the server's mappings (SQLITE_IOERR_IN_PAGE,
// "disk I/O error (8714)"). Handles are shared per file and refcounted:
// the descriptor is closed when the last Store of the file in this
// process has closed its connections.
type shmHandle struct {
	name string
	f    *os.File
	refs int
}

var (
	shmMu    sync.Mutex
	shmFiles = map[string]*shmHandle{}
)

// openShm returns this process's handle of the -shm file name, opening
// it if needed, or nil if it cannot be opened.
func openShm(name string) *shmHandle {
	shmMu.Lock()
	defer shmMu.Unlock()
	if h := shmFiles[name]; h != nil {
		h.refs++
		return h
	}
	f, err := os.Open(name)
	if err != nil {
		return nil
	}
	h := &shmHandle{name: name, f: f, refs: 1}
	shmFiles[name] = h
	return h
}

// release drops one reference; the last closes the file.
func (h *shmHandle) release() {
	if h == nil {
		return
	}
	shmMu.Lock()
	defer shmMu.Unlock()
	if h.refs--; h.refs == 0 {
		delete(shmFiles, h.name)
		h.f.Close()
	}
}

// mapHeader maps the first page of the WAL index read-only, or returns
// nil. SQLite never shrinks the file while a connection of this process
// (versionConn) has it open; readShm survives a fault anyway.
func (h *shmHandle) mapHeader() []byte { return mapFile(h.f) }

// mapFile maps the first page of f read-only, or returns nil.
func mapFile(f *os.File) []byte {
	const size = 4096
	if fi, err := f.Stat(); err != nil || fi.Size() < size {
		return nil
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil
	}
	return m
}

// readShm copies the start of the mapped WAL index into b. After a fault
// (the file was truncated) it stops using the mapping and reports false.
func (s *Store) readShm(b []byte) (ok bool) {
	if s.shm == nil {
		return false
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			syscall.Munmap(s.shm)
			s.shm, ok = nil, false
		}
	}()
	copy(b, s.shm)
	return true
}

func (s *Store) queryVersion(ctx context.Context) (int64, error) {
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
`, `
CREATE TABLE log_usage (
	cache_id INTEGER PRIMARY KEY REFERENCES caches(id) ON DELETE CASCADE,
	count INTEGER NOT NULL,
	bytes INTEGER NOT NULL
);
INSERT INTO log_usage (cache_id, count, bytes) SELECT cache_id, COUNT(*), SUM(size) FROM logs GROUP BY cache_id;
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
