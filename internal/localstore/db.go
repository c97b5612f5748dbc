package localstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the project's SQLite driver

	"github.com/silo-cache/silo/internal/nix32"
	"github.com/silo-cache/silo/internal/storepath"
)

// DB reads Nix's SQLite database (schema version 10, Nix 2.0 to 2.8 and
// later) read-only. It is safe for concurrent use.
type DB struct {
	dir  storepath.Dir
	path string
	db   *sql.DB
}

// queryPathInfo reads a path's row and its references in one statement,
// hence one snapshot: a concurrent garbage collection cannot make us see
// the row without its references.
const queryPathInfo = `select v.hash, v.registrationTime, coalesce(v.deriver, ''), coalesce(v.narSize, 0),
	coalesce(v.ultimate, 0), coalesce(v.sigs, ''), coalesce(v.ca, ''),
	coalesce((select group_concat(r.path, ' ') from Refs join ValidPaths r on r.id = Refs.reference
		where Refs.referrer = v.id), '')
	from ValidPaths v where v.path = ?`

// OpenDB opens Nix's database at dbPath (DefaultDBPath if empty) for a
// store in dir. It never writes: the connection is mode=ro and query_only,
// and waits for Nix's write locks rather than failing.
func OpenDB(dir storepath.Dir, dbPath string) (*DB, error) {
	if dbPath == "" {
		dbPath = DefaultDBPath
	}
	u := url.URL{Scheme: "file", Path: dbPath, RawQuery: "mode=ro&_pragma=busy_timeout(30000)&_pragma=query_only(1)"}
	var db *sql.DB
	err := retryTransient(nil, func() error {
		var err error
		db, err = openOnce(u.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open Nix database %s: %w", dbPath, err)
	}
	return &DB{dir: dir, path: dbPath, db: db}, nil
}

func openOnce(dsn string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	// No idle connections: Nix's last connection deletes -wal and -shm on
	// close and the next one makes new ones; a connection this process
	// keeps open would go on reading the old shared-memory index and find
	// the database "malformed" (seen under concurrent nix commands, while a
	// fresh process read it fine). A connection per query maps the current
	// files. Callers cache what they need (publish caches narinfos).
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(0)
	var n int
	err = db.QueryRow(`select count(*) from sqlite_master where type = 'table' and name in ('ValidPaths', 'Refs')`).Scan(&n)
	if err == nil && n != 2 {
		err = errors.New("it has no ValidPaths and Refs tables (not a Nix database?)")
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// QueryPathInfo implements Store.
func (d *DB) QueryPathInfo(ctx context.Context, p storepath.Path) (*PathInfo, error) {
	if p.Dir() != d.dir {
		return nil, fmt.Errorf("query %s: %w (not in store directory %s)", p, ErrNotFound, d.dir)
	}
	var (
		narHash, deriver, sigs, ca, refs string
		regTime                          int64
		narSize                          int64
		ultimate                         int64
	)
	err := retryTransient(ctx.Done(), func() error {
		return d.db.QueryRowContext(ctx, queryPathInfo, p.String()).
			Scan(&narHash, &regTime, &deriver, &narSize, &ultimate, &sigs, &ca, &refs)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("query %s: %w", p, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("query %s in Nix database %s: %w", p, d.path, err)
	}
	if narSize < 0 {
		return nil, fmt.Errorf("query %s in Nix database %s: negative narSize %d", p, d.path, narSize)
	}
	return pathInfo(d.dir, p, narHash, deriver, strings.Fields(refs), strings.Fields(sigs),
		uint64(narSize), regTime, ultimate == 1, ca)
}

// QueryPathFromHashPart implements Store.
func (d *DB) QueryPathFromHashPart(ctx context.Context, hashPart string) (storepath.Path, error) {
	if len(hashPart) != storepath.HashLen || !nix32.IsValid(hashPart) {
		return storepath.Path{}, fmt.Errorf("query path from hash part %q: not %d nix32 characters", hashPart, storepath.HashLen)
	}
	prefix := string(d.dir) + "/" + hashPart
	var full string
	err := retryTransient(ctx.Done(), func() error {
		return d.db.QueryRowContext(ctx, `select path from ValidPaths where path >= ? order by path limit 1`, prefix).Scan(&full)
	})
	if errors.Is(err, sql.ErrNoRows) || err == nil && !strings.HasPrefix(full, prefix+"-") {
		return storepath.Path{}, fmt.Errorf("query path from hash part %s: %w", hashPart, ErrNotFound)
	}
	if err != nil {
		return storepath.Path{}, fmt.Errorf("query path from hash part %s in Nix database %s: %w", hashPart, d.path, err)
	}
	return d.dir.Parse(full)
}

// Close implements Store.
func (d *DB) Close() error { return d.db.Close() }

// retryTransient runs query again, a few times with a growing pause, when
// SQLite reports the database malformed: a read-only reader can see that
// for a moment while Nix's last connection checkpoints and truncates the
// WAL on close. A database that stays malformed still fails. done (which
// may be nil) ends the retries early.
func retryTransient(done <-chan struct{}, query func() error) error {
	pause := 10 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := query()
		if err == nil || attempt == 7 || !strings.Contains(err.Error(), "malformed") {
			return err
		}
		select {
		case <-done:
			return err
		case <-time.After(pause):
		}
		pause *= 2
	}
}
