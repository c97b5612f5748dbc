// Package nixdb is Nix's SQLite database as Nix 2.8's LocalStore keeps it:
// <state>/db/db.sqlite with schema version 10 (ValidPaths, Refs,
// DerivationOutputs) plus, when ca-derivations is enabled, the CA tables
// (Realisations, RealisationsRefs; ca-schema 3), the `schema` and
// `ca-schema` version files and the `big-lock`.
//
// Invariants:
//   - The real Nix writes the same database concurrently: nothing is cached
//     across calls; every call reads the current state. A PathInfo is read
//     by one statement, so its references belong to the same snapshot as
//     its hash.
//   - A DB holds a shared flock on db/big-lock for its whole life, as every
//     Nix process does; schema upgrades take it exclusively.
//   - One SQLite connection per DB, used by one call at a time (Nix's
//     per-store state lock): a DB is safe for concurrent use, calls
//     serialise. Open one DB per daemon connection, as nix-daemon does,
//     so a database deleted and re-created under a running daemon is
//     picked up by the next connection.
//   - Writes are transactions retried as a whole on SQLITE_BUSY (Nix's
//     retrySQLite); a failed RegisterValidPaths leaves the database as it
//     was: no path becomes valid without all its references valid.
package nixdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/silo-cache/silo/internal/storepath"
)

// SchemaVersion is the schema version Nix 2.8 writes to db/schema.
const SchemaVersion = 10

// CASchemaVersion is the version Nix 2.8 writes to db/ca-schema.
const CASchemaVersion = 3

// ErrNotValid is wrapped by errors about a path that is not valid. Its
// messages read as Nix's ("path '...' is not valid"), which the Nix
// client recognises.
var ErrNotValid = errors.New("is not valid")

// Options say where the database is and how to open it. The zero value of
// each field is Nix's behaviour with that setting off.
type Options struct {
	// StoreDir is the (logical) store directory the paths in the database
	// lie in. Required.
	StoreDir storepath.Dir
	// Dir is the database directory, <state>/db. Required.
	Dir string
	// FsyncMetadata is Nix's fsync-metadata (default true in Nix): SQLite
	// synchronous=normal when set, off otherwise.
	FsyncMetadata bool
	// CADerivations creates (migrates to) the CA tables, as Nix does when
	// the ca-derivations experimental feature is on. Without it the
	// realisation calls fail unless the tables already exist.
	CADerivations bool
	// Log receives Nix's informational messages ("waiting for the big Nix
	// store lock..."); nil discards them.
	Log func(msg string)
}

// DB is an open Nix database. See the package doc for its invariants.
type DB struct {
	dir     storepath.Dir
	path    string
	db      *sql.DB
	bigLock *os.File
	hasCA   bool
	log     func(string)

	mu    sync.Mutex // guards stmts creation
	stmts map[string]*sql.Stmt
}

// Open opens (creating if the schema file is absent, upgrading an older
// schema) the database in o.Dir, as Nix 2.8's LocalStore constructor does.
func Open(ctx context.Context, o Options) (*DB, error) {
	if o.StoreDir == "" || o.Dir == "" {
		return nil, errors.New("open Nix database: StoreDir and Dir are required")
	}
	log := o.Log
	if log == nil {
		log = func(string) {}
	}
	if err := unix.Access(o.Dir, unix.R_OK|unix.W_OK); err != nil {
		return nil, fmt.Errorf("Nix database directory '%s' is not writable: %w", o.Dir, err)
	}
	lockPath := filepath.Join(o.Dir, "big-lock")
	big, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file '%s': %w", lockPath, err)
	}
	d := &DB{dir: o.StoreDir, path: filepath.Join(o.Dir, "db.sqlite"), bigLock: big, log: log, stmts: map[string]*sql.Stmt{}}
	if err := d.open(ctx, o); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *DB) open(ctx context.Context, o Options) error {
	if !flockNB(d.bigLock, unix.LOCK_SH) {
		d.log("waiting for the big Nix store lock...")
		if err := flockWait(ctx, d.bigLock, unix.LOCK_SH); err != nil {
			return fmt.Errorf("acquiring the big Nix store lock: %w", err)
		}
	}
	schemaPath := filepath.Join(o.Dir, "schema")
	cur, err := readSchema(schemaPath)
	if err != nil {
		return err
	}
	switch {
	case cur > SchemaVersion:
		return fmt.Errorf("current Nix store schema is version %d, but I only support %d", cur, SchemaVersion)
	case cur == 0:
		if err := d.connect(ctx, o, true); err != nil {
			return err
		}
		if err := d.execSQL(ctx, schemaSQL); err != nil {
			return fmt.Errorf("creating the Nix database %s: %w", d.path, err)
		}
		if err := os.WriteFile(schemaPath, []byte(strconv.Itoa(SchemaVersion)), 0o666); err != nil {
			return fmt.Errorf("writing %s: %w", schemaPath, err)
		}
	case cur < 7:
		return fmt.Errorf("the Nix store at %s has a database of schema %d, which Nix 2.8 (and silo) no longer supports; upgrade it with Nix 1.11 first", o.Dir, cur)
	case cur < SchemaVersion:
		if err := d.upgrade(ctx, o, schemaPath); err != nil {
			return err
		}
	default:
		if err := d.connect(ctx, o, false); err != nil {
			return err
		}
	}
	if o.CADerivations {
		if err := d.migrateCA(ctx, filepath.Join(o.Dir, "ca-schema")); err != nil {
			return err
		}
	}
	var n int
	err = d.retry(ctx, func() error {
		return d.db.QueryRowContext(ctx, `select count(*) from sqlite_master where type = 'table' and name = 'Realisations'`).Scan(&n)
	})
	if err != nil {
		return fmt.Errorf("reading the schema of %s: %w", d.path, err)
	}
	d.hasCA = n > 0
	// Prepare every statement now, as Nix does: with one connection, a
	// statement prepared inside a transaction would wait for itself.
	qs := []string{qPathInfo, qIsValid, qReferrers, qValidDerivers, qDerivationOutputs, qPathFromHashPart, qAllValid,
		sRegister, sUpdate, sAddRef, sAddDrvOut, sInvalidate, qID, sInvalidateUnreferenced}
	if d.hasCA {
		qs = append(qs, qRealisation, qRealisationRefs, sRegisterReal, sUpdateReal, sAddRealRef)
	}
	for _, q := range qs {
		if _, err := d.stmt(ctx, q); err != nil {
			return fmt.Errorf("preparing statement %q on %s: %w", q, d.path, err)
		}
	}
	return nil
}

// upgrade brings a schema 7 to 9 database to 10, holding the big lock
// exclusively, as Nix does.
func (d *DB) upgrade(ctx context.Context, o Options, schemaPath string) error {
	if !flockNB(d.bigLock, unix.LOCK_EX) {
		d.log("waiting for exclusive access to the Nix store...")
		if err := flockWait(ctx, d.bigLock, unix.LOCK_EX); err != nil {
			return fmt.Errorf("acquiring the big Nix store lock: %w", err)
		}
	}
	cur, err := readSchema(schemaPath)
	if err != nil {
		return err
	}
	if err := d.connect(ctx, o, false); err != nil {
		return err
	}
	steps := []struct {
		below int
		sql   string
	}{
		{8, "alter table ValidPaths add column ultimate integer; alter table ValidPaths add column sigs text;"},
		{9, "drop table FailedPaths;"},
		{10, "alter table ValidPaths add column ca text;"},
	}
	for _, s := range steps {
		if cur < s.below {
			if err := d.execSQL(ctx, "begin; "+s.sql+" commit;"); err != nil {
				return fmt.Errorf("upgrading the Nix database %s to schema %d: %w", d.path, s.below, err)
			}
		}
	}
	if err := os.WriteFile(schemaPath, []byte(strconv.Itoa(SchemaVersion)), 0o666); err != nil {
		return fmt.Errorf("writing %s: %w", schemaPath, err)
	}
	return flockWait(ctx, d.bigLock, unix.LOCK_SH)
}

// migrateCA creates the CA tables (ca-schema 3), as migrateCASchema.
func (d *DB) migrateCA(ctx context.Context, path string) error {
	cur, err := readSchema(path)
	if err != nil {
		return err
	}
	if cur == CASchemaVersion {
		return nil
	}
	if cur > CASchemaVersion {
		return fmt.Errorf("current Nix store ca-schema is version %d, but I only support %d", cur, CASchemaVersion)
	}
	if !flockNB(d.bigLock, unix.LOCK_EX) {
		d.log("waiting for exclusive access to the Nix store for ca drvs...")
		if err := flockWait(ctx, d.bigLock, unix.LOCK_EX); err != nil {
			return fmt.Errorf("acquiring the big Nix store lock: %w", err)
		}
	}
	if cur == 0 {
		err = d.execSQL(ctx, caSchemaSQL)
	} else {
		if cur < 2 {
			err = d.execSQL(ctx, "begin; "+caMigrate2SQL+" commit;")
		}
		if err == nil {
			err = d.execSQL(ctx, "begin; "+caMigrate3SQL+" commit;")
		}
	}
	if err != nil {
		return fmt.Errorf("creating the CA tables in %s: %w", d.path, err)
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(CASchemaVersion)), 0o666); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return flockWait(ctx, d.bigLock, unix.LOCK_SH)
}

// connect opens the SQLite connection with Nix's pragmas.
func (d *DB) connect(ctx context.Context, o Options, create bool) error {
	mode := "rw"
	if create {
		mode = "rwc"
	}
	sync := "off"
	if o.FsyncMetadata {
		sync = "normal"
	}
	q := url.Values{}
	q.Set("mode", mode)
	q.Set("_txlock", "immediate")
	q["_pragma"] = []string{"busy_timeout(1000)", "foreign_keys(1)", "synchronous(" + sync + ")"}
	u := url.URL{Scheme: "file", Path: d.path, RawQuery: q.Encode()}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return fmt.Errorf("cannot open SQLite database '%s': %w", d.path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	d.db = db
	var prev string
	err = d.retry(ctx, func() error { return db.QueryRowContext(ctx, "pragma main.journal_mode").Scan(&prev) })
	if err != nil {
		return fmt.Errorf("cannot open SQLite database '%s': %w", d.path, err)
	}
	if prev != "wal" {
		if err := d.execSQL(ctx, "pragma main.journal_mode = wal"); err != nil {
			return fmt.Errorf("setting journal mode of %s: %w", d.path, err)
		}
	}
	if err := d.execSQL(ctx, "pragma wal_autocheckpoint = 40000"); err != nil {
		return fmt.Errorf("setting autocheckpoint interval of %s: %w", d.path, err)
	}
	return nil
}

func (d *DB) execSQL(ctx context.Context, stmt string) error {
	return d.retry(ctx, func() error {
		_, err := d.db.ExecContext(ctx, stmt)
		return err
	})
}

// readSchema reads a schema version file; 0 if it does not exist.
func readSchema(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	n, err := strconv.Atoi(string(b))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("'%s' is corrupt", path)
	}
	return n, nil
}

// Dir returns the store directory the database's paths lie in.
func (d *DB) Dir() storepath.Dir { return d.dir }

// HasCA reports whether the database has the CA tables.
func (d *DB) HasCA() bool { return d.hasCA }

// Close closes the database and releases the big lock.
func (d *DB) Close() error {
	var err error
	if d.db != nil {
		err = d.db.Close()
	}
	if d.bigLock != nil {
		if cerr := d.bigLock.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// stmt returns the prepared statement for query, preparing it once
// (all are prepared by Open).
func (d *DB) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.stmts[query]; ok {
		return s, nil
	}
	s, err := d.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	d.stmts[query] = s
	return s, nil
}

// isBusy reports whether err is SQLite's "busy" (or a WAL protocol race),
// after which Nix retries the whole transaction.
func isBusy(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code() & 0xff
		return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_PROTOCOL || c == sqlite3.SQLITE_LOCKED
	}
	return false
}

// retry runs f until it does not fail with SQLITE_BUSY, sleeping up to
// 100 ms between tries and warning at most every 10 s, as Nix's
// retrySQLite; it stops when ctx is done.
func (d *DB) retry(ctx context.Context, f func() error) error {
	var lastWarn time.Time
	for {
		err := f()
		if err == nil || !isBusy(err) {
			return err
		}
		if time.Since(lastWarn) > 10*time.Second {
			lastWarn = time.Now()
			d.log(fmt.Sprintf("SQLite database '%s' is busy", d.path))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (while the database was busy: %v)", ctx.Err(), err)
		case <-time.After(time.Duration(rand.IntN(100)+1) * time.Millisecond):
		}
	}
}

// tx runs f in a write transaction, retried as a whole on SQLITE_BUSY.
func (d *DB) tx(ctx context.Context, f func(*sql.Tx) error) error {
	return d.retry(ctx, func() error {
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := f(tx); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	})
}

func flockNB(f *os.File, how int) bool {
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err != unix.EINTR {
			return err == nil
		}
	}
}

// flockWait takes a lock, waiting; it polls so that ctx can end the wait.
func flockWait(ctx context.Context, f *os.File, how int) error {
	pause := time.Millisecond
	for !flockNB(f, how) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(pause*2, 100*time.Millisecond)
	}
	return nil
}

// notValid returns the error for a path that is not valid.
func notValid(p string) error {
	return fmt.Errorf("path '%s' %w", p, ErrNotValid)
}

// joinSet joins a sorted string set with spaces, as Nix stores sigs.
func joinSet(ss []string) string { return strings.Join(ss, " ") }
