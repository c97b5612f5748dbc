package queue

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the project's SQLite driver

	"github.com/silo-cache/silo/internal/localstore"
)

// Path states in the paths table.
const (
	statePending = 0 // to upload (retried with backoff while it fails)
	stateDone    = 1 // in the cache: uploaded, found present, or signed upstream
	stateFailed  = 2 // cannot be uploaded until retried (gone from the store, or a reference failed)
)

// schema is the queue's durable state. roots holds paths handed in by the
// hook, not yet expanded to their closure; paths holds every path of every
// expanded closure, ids assigned in dependency order (a path's references
// always have smaller ids); refs links a path to its references (without
// itself).
const schema = `
create table if not exists roots (
	id integer primary key,
	path text not null,
	drv text not null default '',
	added integer not null,
	attempts integer not null default 0,
	next_attempt integer not null default 0,
	last_error text not null default ''
);
create table if not exists paths (
	id integer primary key,
	path text not null unique,
	state integer not null,
	how text not null default '',
	attempts integer not null default 0,
	next_attempt integer not null default 0,
	last_error text not null default '',
	added integer not null,
	done_at integer not null default 0
);
create index if not exists paths_pending on paths(next_attempt) where state = 0;
create table if not exists refs (
	path integer not null,
	ref integer not null,
	primary key (path, ref)
) without rowid;
create index if not exists refs_ref on refs(ref);
`

// db is the queue's SQLite database in WAL mode with synchronous=NORMAL,
// as Nix keeps its own database: a commit survives the queue being killed
// at any point; a power failure may lose the last commits, but then Nix
// loses the registration of the paths built last as well.
type db struct {
	sql  *sql.DB
	path string
}

func openDB(stateDir string) (*db, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create queue state directory: %w", err)
	}
	path := filepath.Join(stateDir, "queue.db")
	u := url.URL{Scheme: "file", Path: path, RawQuery: "_pragma=journal_mode(wal)&_pragma=synchronous(normal)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(off)&_txlock=immediate"}
	s, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("open queue database %s: %w", path, err)
	}
	s.SetMaxOpenConns(4)
	if _, err := s.Exec(schema); err != nil {
		s.Close()
		return nil, fmt.Errorf("open queue database %s: %w", path, err)
	}
	return &db{sql: s, path: path}, nil
}

func (d *db) close() error { return d.sql.Close() }

func millis(t time.Time) int64 { return t.UnixMilli() }

// addRoots records paths handed in by a hook or found in the spool. With
// no paths but a derivation, one root with an empty path stands for the
// derivation's outputs.
func (d *db) addRoots(ctx context.Context, paths []string, drv string, now time.Time) error {
	if len(paths) == 0 {
		paths = []string{""}
	}
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("queue paths: %w", err)
	}
	defer tx.Rollback()
	for _, p := range paths {
		if _, err := tx.ExecContext(ctx, `insert into roots (path, drv, added) values (?, ?, ?)`, p, drv, millis(now)); err != nil {
			return fmt.Errorf("queue %s: %w", p, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("queue paths: %w", err)
	}
	return nil
}

type root struct {
	id       int64
	path     string // "" for "the outputs of drv"
	drv      string
	attempts int
}

// dueRoots returns roots to expand now.
func (d *db) dueRoots(ctx context.Context, now time.Time, limit int) ([]root, error) {
	rows, err := d.sql.QueryContext(ctx, `select id, path, drv, attempts from roots where next_attempt <= ? order by id limit ?`, millis(now), limit)
	if err != nil {
		return nil, fmt.Errorf("list queued roots: %w", err)
	}
	defer rows.Close()
	var out []root
	for rows.Next() {
		var r root
		if err := rows.Scan(&r.id, &r.path, &r.drv, &r.attempts); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// known reports whether path is already in the paths table: its closure
// was added with it.
func (d *db) known(ctx context.Context, path string) (bool, error) {
	var one int
	err := d.sql.QueryRowContext(ctx, `select 1 from paths where path = ?`, path).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// expandRoot adds the closure of a root (dependencies first) and removes
// the root, in one transaction. Paths already known keep their state;
// signed paths are done at once.
func (d *db) expandRoot(ctx context.Context, rootID int64, closure []*localstore.PathInfo, signedUpstream func(*localstore.PathInfo) bool, now time.Time) (added int, err error) {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	ids := make(map[string]int64, len(closure))
	for _, info := range closure {
		p := info.Path.String()
		var id int64
		err := tx.QueryRowContext(ctx, `select id from paths where path = ?`, p).Scan(&id)
		if err == nil {
			ids[p] = id
			continue
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, err
		}
		state, how, doneAt := statePending, "", int64(0)
		if signedUpstream(info) {
			state, how, doneAt = stateDone, "signed-upstream", millis(now)
		}
		res, err := tx.ExecContext(ctx, `insert into paths (path, state, how, added, done_at) values (?, ?, ?, ?, ?)`, p, state, how, millis(now), doneAt)
		if err != nil {
			return 0, err
		}
		if id, err = res.LastInsertId(); err != nil {
			return 0, err
		}
		ids[p] = id
		added++
		for _, r := range info.References {
			if r == info.Path {
				continue
			}
			refID, ok := ids[r.String()]
			if !ok {
				return 0, fmt.Errorf("closure of root %d is not in dependency order: %s before its reference %s", rootID, p, r)
			}
			if _, err := tx.ExecContext(ctx, `insert or ignore into refs (path, ref) values (?, ?)`, id, refID); err != nil {
				return 0, err
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `delete from roots where id = ?`, rootID); err != nil {
		return 0, err
	}
	return added, tx.Commit()
}

func (d *db) deleteRoot(ctx context.Context, id int64) error {
	_, err := d.sql.ExecContext(ctx, `delete from roots where id = ?`, id)
	return err
}

// rootFailed records a failed expansion with its next attempt.
func (d *db) rootFailed(ctx context.Context, id int64, msg string, next time.Time) error {
	_, err := d.sql.ExecContext(ctx, `update roots set attempts = attempts + 1, next_attempt = ?, last_error = ? where id = ?`, millis(next), msg, id)
	return err
}

// rootGone turns a root that is not in the local store into a failed path,
// so status shows it.
func (d *db) rootGone(ctx context.Context, r root, msg string, now time.Time) error {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	p := r.path
	if p == "" {
		p = r.drv
	}
	if _, err := tx.ExecContext(ctx, `insert into paths (path, state, last_error, added) values (?, ?, ?, ?)
		on conflict (path) do nothing`, p, stateFailed, msg, millis(now)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `delete from roots where id = ?`, r.id); err != nil {
		return err
	}
	return tx.Commit()
}

type pending struct {
	id       int64
	path     string
	attempts int
}

// ready returns pending paths due now whose references are all done, in
// dependency order.
func (d *db) ready(ctx context.Context, now time.Time, limit int) ([]pending, error) {
	rows, err := d.sql.QueryContext(ctx, `select p.id, p.path, p.attempts from paths p
		where p.state = 0 and p.next_attempt <= ?
		and not exists (select 1 from refs r join paths q on q.id = r.ref where r.path = p.id and q.state != 1)
		order by p.id limit ?`, millis(now), limit)
	if err != nil {
		return nil, fmt.Errorf("list paths ready to upload: %w", err)
	}
	defer rows.Close()
	var out []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.id, &p.path, &p.attempts); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// nextDue returns when the earliest pending path or root becomes due, or
// the zero time if none waits.
func (d *db) nextDue(ctx context.Context) (time.Time, error) {
	var ms sql.NullInt64
	err := d.sql.QueryRowContext(ctx, `select min(t) from (
		select min(next_attempt) as t from paths where state = 0
		union all select min(next_attempt) from roots)`).Scan(&ms)
	if err != nil || !ms.Valid {
		return time.Time{}, err
	}
	return time.UnixMilli(ms.Int64), nil
}

func (d *db) markDone(ctx context.Context, id int64, how string, now time.Time) error {
	_, err := d.sql.ExecContext(ctx, `update paths set state = 1, how = ?, done_at = ?, last_error = '' where id = ?`, how, millis(now), id)
	return err
}

func (d *db) markRetry(ctx context.Context, id int64, msg string, next time.Time) error {
	_, err := d.sql.ExecContext(ctx, `update paths set attempts = attempts + 1, next_attempt = ?, last_error = ? where id = ?`, millis(next), msg, id)
	return err
}

// markFailed fails a path for good (until retry) and, transitively, every
// pending path that needs it.
func (d *db) markFailed(ctx context.Context, id int64, msg string) error {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `update paths set state = 2, attempts = attempts + 1, last_error = ? where id = ?`, msg, id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `with recursive dependents(id) as (
			select ?1
			union select r.path from refs r join dependents d on r.ref = d.id)
		update paths set state = 2,
			last_error = 'a path it references failed: ' || (select path from paths where id = ?1)
		where state = 0 and id in (select id from dependents)`, id); err != nil {
		return err
	}
	return tx.Commit()
}

// retry makes every failing or failed path and root due now.
func (d *db) retry(ctx context.Context) (int64, error) {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `update paths set state = 0, attempts = 0, next_attempt = 0, last_error = ''
		where state = 2 or (state = 0 and last_error != '')`)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	res, err = tx.ExecContext(ctx, `update roots set attempts = 0, next_attempt = 0, last_error = '' where last_error != ''`)
	if err != nil {
		return 0, err
	}
	m, _ := res.RowsAffected()
	return n + m, tx.Commit()
}

// retryFailing makes pending paths and roots whose last attempt failed due
// now, with their backoff reset.
func (d *db) retryFailing(ctx context.Context) (int64, error) {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `update paths set attempts = 0, next_attempt = 0 where state = 0 and last_error != ''`)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	res, err = tx.ExecContext(ctx, `update roots set attempts = 0, next_attempt = 0 where last_error != ''`)
	if err != nil {
		return 0, err
	}
	m, _ := res.RowsAffected()
	return n + m, tx.Commit()
}

// unsettled counts roots and pending paths that have had fewer than
// maxAttempts attempts and do not wait for a reference that is not done:
// work the queue is still expected to finish. (A path waiting for a
// reference that is itself unsettled is counted through that reference.)
func (d *db) unsettled(ctx context.Context, maxAttempts int) (int, error) {
	var n int
	err := d.sql.QueryRowContext(ctx, `select
		(select count(*) from roots where attempts < ?1) +
		(select count(*) from paths p where p.state = 0 and p.attempts < ?1
			and not exists (select 1 from refs r join paths q on q.id = r.ref where r.path = p.id and q.state != 1))`, maxAttempts).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("queue status: %w", err)
	}
	return n, nil
}

// Failure is a path that failed its last attempt.
type Failure struct {
	Path        string    `json:"path"`
	Attempts    int       `json:"attempts"`
	Error       string    `json:"error"`
	NextAttempt time.Time `json:"next_attempt,omitzero"` // zero: not retried until silo queue retry
}

// Status counts the queue's paths.
type Status struct {
	Roots    int       `json:"roots"`     // handed in, closure not yet expanded
	Pending  int       `json:"pending"`   // waiting for upload (including failing and in flight)
	InFlight int       `json:"in_flight"` // uploading now
	Failing  int       `json:"failing"`   // pending, last attempt failed, will retry
	Failed   int       `json:"failed"`    // given up until silo queue retry
	Done     int       `json:"done"`      // in the cache
	Uploaded int       `json:"uploaded"`  // of Done: uploaded by this queue
	Spooled  int       `json:"spooled"`   // spool files not yet read
	Failures []Failure `json:"failures,omitempty"`
	Target   string    `json:"target"`
}

func (d *db) status(ctx context.Context, maxFailures int) (Status, error) {
	var s Status
	err := d.sql.QueryRowContext(ctx, `select
		(select count(*) from roots),
		(select count(*) from paths where state = 0),
		(select count(*) from paths where state = 0 and last_error != ''),
		(select count(*) from paths where state = 2),
		(select count(*) from paths where state = 1),
		(select count(*) from paths where state = 1 and how = 'uploaded')`).
		Scan(&s.Roots, &s.Pending, &s.Failing, &s.Failed, &s.Done, &s.Uploaded)
	if err != nil {
		return s, fmt.Errorf("queue status: %w", err)
	}
	rows, err := d.sql.QueryContext(ctx, `select path, attempts, last_error, next_attempt, state from paths
		where last_error != '' and state != 1
		union all select path, attempts, last_error, next_attempt, 0 from roots where last_error != ''
		order by 2 desc limit ?`, maxFailures)
	if err != nil {
		return s, fmt.Errorf("queue status: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f Failure
		var next int64
		var state int
		if err := rows.Scan(&f.Path, &f.Attempts, &f.Error, &next, &state); err != nil {
			return s, err
		}
		if state != stateFailed {
			f.NextAttempt = time.UnixMilli(next)
		}
		s.Failures = append(s.Failures, f)
	}
	return s, rows.Err()
}

// oneLine keeps stored errors to one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
