// Package postgres keeps silo's metadata in PostgreSQL (pgx), shared by any
// number of silo serve replicas and the admin commands.
//
// Invariants:
//   - The schema is versioned and migrated forward only (schema.go), at
//     Open and by silo migrate, under a transaction-scoped advisory lock so
//     that replicas starting at once migrate once. A database newer than
//     this binary is refused.
//   - Every method is one short transaction; nothing holds a lock or a
//     connection between calls. Row-level constraints (foreign keys, unique
//     keys) decide races between replicas: a path whose NAR a concurrent
//     collection removed fails with meta.ErrNotFound, never dangles.
//   - Version is strict and needs no write: it compares the cluster's
//     transaction snapshot (pg_current_snapshot) with the last one seen. A
//     transaction that committed since changes it (it left the in-progress
//     list, or it began after the last snapshot's horizon), so a write on
//     any replica is seen by the next request on every other. Writes in
//     other databases of the cluster cause harmless extra reloads.
//   - Coordination between replicas lives here too (coordination.go):
//     leases for singletons, tombstones that delay blob deletion past a
//     grace period, and the record of S3 multipart uploads in progress.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/silo-cache/silo/internal/meta"
)

var _ meta.Store = (*Store)(nil)

// Store is a meta.Store in a PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool

	versionMu   sync.Mutex
	versionConn *pgxpool.Conn // kept for Version's queries; nil until needed
	snapshot    string        // the last pg_current_snapshot() seen
	version     int64
}

// Options configure Open. Zero values mean the documented defaults.
type Options struct {
	// NoMigrate opens without migrating; Open then fails if the schema is
	// not current (silo migrate brings it up to date).
	NoMigrate bool
	// MaxConns bounds the connection pool unless the URL sets
	// pool_max_conns; 0 means 16.
	MaxConns int32
	// ApplicationName names the connections in pg_stat_activity (and the
	// holder of recorded multipart uploads) unless the URL sets
	// application_name.
	ApplicationName string
}

// Open connects to the database at url (a postgres:// URL or a libpq
// key=value string) and brings its schema up to date.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	s, where, err := connect(ctx, url, opts)
	if err != nil {
		return nil, err
	}
	if opts.NoMigrate {
		cur, err := s.SchemaVersion(ctx)
		if err == nil && cur != len(migrations) {
			err = fmt.Errorf("schema version %d, this silo needs %d: run silo migrate", cur, len(migrations))
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open metadata database %s: %w", where, err)
		}
		return s, nil
	}
	if _, _, err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open metadata database %s: %w", where, err)
	}
	return s, nil
}

// Connect connects to the database without looking at its schema, for
// silo migrate (which calls Migrate).
func Connect(ctx context.Context, url string, opts Options) (*Store, error) {
	s, _, err := connect(ctx, url, opts)
	return s, err
}

func connect(ctx context.Context, url string, opts Options) (*Store, string, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, "", fmt.Errorf("open metadata database: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = opts.MaxConns
		if cfg.MaxConns == 0 {
			cfg.MaxConns = 16
		}
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok && opts.ApplicationName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = opts.ApplicationName
	}
	where := describe(cfg.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, "", fmt.Errorf("open metadata database %s: %w", where, err)
	}
	return &Store{pool: pool}, where, nil
}

// describe names the database for messages, without credentials.
func describe(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s on %s:%d", c.Database, c.Host, c.Port)
}

// Close closes the connection pool.
func (s *Store) Close() error {
	s.versionMu.Lock()
	if s.versionConn != nil {
		s.versionConn.Release()
		s.versionConn = nil
	}
	s.versionMu.Unlock()
	s.pool.Close()
	return nil
}

// migrationLock is the advisory lock key migrations hold.
const migrationLock = 0x73696c6f // "silo"

// Migrate applies the migrations the database lacks and returns the
// schema versions before and after.
func (s *Store) Migrate(ctx context.Context) (from, to int, err error) {
	err = s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM schema_migrations`).Scan(&from); err != nil {
			return err
		}
		if from > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this silo knows (%d); upgrade silo", from, len(migrations))
		}
		for v := from; v < len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v+1); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("migrate: %w", err)
	}
	return from, len(migrations), nil
}

// SchemaVersion returns the database's schema version (0: none).
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, `SELECT COALESCE((SELECT max(version) FROM schema_migrations), 0)`).Scan(&v)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// LatestSchema is the schema version this binary migrates to.
func LatestSchema() int { return len(migrations) }

// Version returns a number that changes whenever a transaction has
// committed in the cluster since the last call. It costs one round trip
// (a simple-protocol query on a connection kept for it) and no table
// access.
func (s *Store) Version(ctx context.Context) (int64, error) {
	s.versionMu.Lock()
	defer s.versionMu.Unlock()
	snap, err := s.currentSnapshot(ctx)
	if err != nil {
		return 0, fmt.Errorf("read data version: %w", err)
	}
	if snap != s.snapshot {
		s.snapshot = snap
		s.version++
	}
	return s.version, nil
}

func (s *Store) currentSnapshot(ctx context.Context) (string, error) {
	if s.versionConn == nil {
		c, err := s.pool.Acquire(ctx)
		if err != nil {
			return "", err
		}
		s.versionConn = c
	}
	res, err := s.versionConn.Conn().PgConn().Exec(ctx, `SELECT pg_current_snapshot()`).ReadAll()
	if err == nil && (len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1) {
		err = errors.New("unexpected answer to SELECT pg_current_snapshot()")
	}
	if err != nil {
		// Give the connection back; the pool drops it if it is broken.
		s.versionConn.Release()
		s.versionConn = nil
		return "", err
	}
	return string(res[0].Rows[0][0]), nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// tx runs fn in a transaction, committing if it returns nil.
func (s *Store) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

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

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// constraint returns the name of the constraint err violates, or "".
func constraint(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.ConstraintName
	}
	return ""
}

const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

func notFound(err error, what string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, meta.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

const cacheCols = `id, name, public, priority, secret_key, store_dir, created`

func scanCache(r pgx.Row) (meta.Cache, error) {
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
	err := s.pool.QueryRow(ctx, `INSERT INTO caches (name, public, priority, secret_key, store_dir, created)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		c.Name, c.Public, c.Priority, c.SecretKey, c.StoreDir, nanos(c.Created)).Scan(&c.ID)
	if pgCode(err) == uniqueViolation {
		return meta.Cache{}, fmt.Errorf("create cache %q: %w", c.Name, meta.ErrExists)
	}
	if err != nil {
		return meta.Cache{}, fmt.Errorf("create cache %q: %w", c.Name, err)
	}
	return c, nil
}

// Cache returns the cache named name.
func (s *Store) Cache(ctx context.Context, name string) (meta.Cache, error) {
	c, err := scanCache(s.pool.QueryRow(ctx, `SELECT `+cacheCols+` FROM caches WHERE name = $1`, name))
	if err != nil {
		return meta.Cache{}, notFound(err, fmt.Sprintf("cache %q", name))
	}
	return c, nil
}

// Caches returns all caches by name.
func (s *Store) Caches(ctx context.Context) ([]meta.Cache, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+cacheCols+` FROM caches ORDER BY name`)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (meta.Cache, error) { return scanCache(r) })
	if err != nil {
		return nil, fmt.Errorf("list caches: %w", err)
	}
	return out, nil
}

// DeleteCache removes the cache and, by cascade, its paths, uploads and logs.
func (s *Store) DeleteCache(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM caches WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("delete cache %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete cache %q: %w", name, meta.ErrNotFound)
	}
	return nil
}

const tokenCols = `id, hash, cache_pattern, perms, expires, created, note`

func scanToken(r pgx.Row) (meta.Token, error) {
	var t meta.Token
	var expires, created int64
	var perms int32
	err := r.Scan(&t.ID, &t.Hash, &t.CachePattern, &perms, &expires, &created, &t.Note)
	t.Perms = meta.Perm(perms)
	t.Expires, t.Created = fromNanos(expires), fromNanos(created)
	return t, err
}

// CreateToken stores t.
func (s *Store) CreateToken(ctx context.Context, t meta.Token) error {
	if t.Created.IsZero() {
		t.Created = time.Now()
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		t.ID, t.Hash, t.CachePattern, int32(t.Perms), nanos(t.Expires), nanos(t.Created), t.Note)
	if pgCode(err) == uniqueViolation {
		return fmt.Errorf("create token %q: %w", t.ID, meta.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create token %q: %w", t.ID, err)
	}
	return nil
}

// Token returns the token with the given ID.
func (s *Store) Token(ctx context.Context, id string) (meta.Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = $1`, id))
	if err != nil {
		return meta.Token{}, notFound(err, fmt.Sprintf("token %q", id))
	}
	return t, nil
}

// Tokens returns all tokens, oldest first.
func (s *Store) Tokens(ctx context.Context) ([]meta.Token, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+tokenCols+` FROM tokens ORDER BY created, id`)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (meta.Token, error) { return scanToken(r) })
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// DeleteToken removes the token with the given ID.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM tokens WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete token %q: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete token %q: %w", id, meta.ErrNotFound)
	}
	return nil
}
