// Package storewatch notices store paths becoming valid in the local Nix
// store while it runs, for silo watch-store and silo watch-exec.
//
// Two ways, chosen by what the process may read:
//   - DB (root): Nix registers every valid path in ValidPaths, whose id is
//     an AUTOINCREMENT key (schema of Nix 2.0 to 2.8 and later): ids only
//     grow and are never reused, and SQLite commits one writer at a time,
//     so "id > the last one seen" finds every path registered since,
//     built, substituted or added, and only once. Nix's registrationTime
//     has one-second resolution and is kept from a substituted path's
//     narinfo, so it is not used. The database is opened read-only, as
//     localstore does.
//   - Inotify (any user): a new entry in the store directory is a
//     candidate; it is reported once the store (nix-daemon) says it is
//     valid, which Nix does only after the path is complete, and dropped
//     when it disappears (a failed build) or after a day. Nix's lock files
//     (NAME.lock) are ignored.
//
// Invariant: a path is reported at most once per Watcher, and only once it
// is valid; every path registered after New and before a Poll returns is
// reported by that Poll or an earlier one (DB), or once the store
// confirms it (inotify; Poll(ctx, true) checks every candidate at once).
package storewatch

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the project's SQLite driver

	"golang.org/x/sys/unix"

	"github.com/silo-cache/silo/internal/localstore"
	"github.com/silo-cache/silo/internal/storepath"
)

// Modes.
const (
	ModeAuto    = "auto"
	ModeDB      = "db"
	ModeInotify = "inotify"
)

// Options configures New.
type Options struct {
	Dir storepath.Dir
	// Mode is ModeDB, ModeInotify or ModeAuto (""): DB when Nix's database
	// can be opened, else inotify.
	Mode string
	// DBPath is Nix's database (default localstore.DefaultDBPath, or under
	// $NIX_STATE_DIR).
	DBPath string
	// Store confirms inotify candidates; required for ModeInotify.
	Store localstore.Store
}

// Watcher reports new valid store paths. Its methods are not safe for
// concurrent use.
type Watcher struct {
	dir  storepath.Dir
	mode string

	db     *sql.DB
	dbPath string
	lastID int64

	store      localstore.Store
	fd         int
	buf        []byte
	start      time.Time
	candidates map[string]*candidate
	reported   map[string]bool
	closeOnce  sync.Once
}

type candidate struct {
	first, next time.Time
	wait        time.Duration
}

// Mode returns the mode in use: ModeDB or ModeInotify.
func (w *Watcher) Mode() string { return w.mode }

// New starts watching: paths valid before it returns are never reported.
func New(ctx context.Context, opts Options) (*Watcher, error) {
	if opts.Dir == "" {
		opts.Dir = storepath.DefaultDir
	}
	if opts.DBPath == "" {
		opts.DBPath = localstore.DefaultDBPath
		if d := os.Getenv("NIX_STATE_DIR"); d != "" {
			opts.DBPath = filepath.Join(d, "db", "db.sqlite")
		}
	}
	w := &Watcher{dir: opts.Dir, fd: -1, dbPath: opts.DBPath}
	switch opts.Mode {
	case ModeDB:
		return w, w.openDB(ctx)
	case ModeInotify:
		return w, w.openInotify(opts.Store)
	case ModeAuto, "":
		if err := w.openDB(ctx); err == nil {
			return w, nil
		} else if opts.Store == nil {
			return nil, err
		}
		return w, w.openInotify(opts.Store)
	}
	return nil, fmt.Errorf("watch mode %q: want auto, db or inotify", opts.Mode)
}

func (w *Watcher) openDB(ctx context.Context) error {
	if _, err := os.Stat(w.dbPath); err != nil {
		return fmt.Errorf("watch the Nix database: %w (run as root, or use inotify)", err)
	}
	u := url.URL{Scheme: "file", Path: w.dbPath, RawQuery: "mode=ro&_pragma=busy_timeout(30000)&_pragma=query_only(1)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return fmt.Errorf("watch the Nix database %s: %w", w.dbPath, err)
	}
	// No idle connections: see localstore (Nix replaces -wal and -shm).
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(0)
	err = retry(ctx, func() error {
		return db.QueryRowContext(ctx, `select coalesce(max(id), 0) from ValidPaths`).Scan(&w.lastID)
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("watch the Nix database %s: %w (run as root, or use inotify)", w.dbPath, err)
	}
	w.db, w.mode = db, ModeDB
	return nil
}

func (w *Watcher) openInotify(store localstore.Store) error {
	if store == nil {
		return errors.New("watch the store with inotify: no store to confirm paths with")
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, string(w.dir), unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return fmt.Errorf("watch %s with inotify: %w", w.dir, err)
	}
	w.fd, w.store, w.mode, w.start = fd, store, ModeInotify, time.Now()
	w.buf = make([]byte, 64<<10)
	w.candidates = map[string]*candidate{}
	w.reported = map[string]bool{}
	return nil
}

// Close stops watching.
func (w *Watcher) Close() error {
	var err error
	w.closeOnce.Do(func() {
		if w.db != nil {
			err = w.db.Close()
		}
		if w.fd >= 0 {
			err = errors.Join(err, unix.Close(w.fd))
		}
	})
	return err
}

// Poll returns the paths that became valid since the last Poll, in the
// order Nix registered them (DB) or found them valid (inotify). all makes
// inotify check every candidate now rather than when due.
func (w *Watcher) Poll(ctx context.Context, all bool) ([]storepath.Path, error) {
	if w.mode == ModeDB {
		return w.pollDB(ctx)
	}
	return w.pollInotify(ctx, all)
}

func (w *Watcher) pollDB(ctx context.Context) ([]storepath.Path, error) {
	var out []storepath.Path
	for {
		var batch []storepath.Path
		last := w.lastID
		err := retry(ctx, func() error {
			batch, last = batch[:0], w.lastID
			rows, err := w.db.QueryContext(ctx, `select id, path from ValidPaths where id > ? order by id limit 1000`, w.lastID)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id int64
				var p string
				if err := rows.Scan(&id, &p); err != nil {
					return err
				}
				last = id
				if sp, err := w.dir.Parse(p); err == nil {
					batch = append(batch, sp)
				}
			}
			return rows.Err()
		})
		if err != nil {
			return out, fmt.Errorf("read new paths from %s: %w", w.dbPath, err)
		}
		if last == w.lastID {
			return out, nil
		}
		w.lastID = last
		out = append(out, batch...)
	}
}

// retry runs query again a few times while SQLite reports the database
// malformed or busy: a read-only reader sees that for a moment while Nix
// checkpoints and truncates its WAL.
func retry(ctx context.Context, query func() error) error {
	pause := 10 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := query()
		if err == nil || attempt == 7 || !(strings.Contains(err.Error(), "malformed") || strings.Contains(err.Error(), "locked")) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		pause *= 2
	}
}

const (
	firstCheck   = 200 * time.Millisecond
	maxCheckWait = time.Minute
	maxCandidate = 24 * time.Hour
)

func (w *Watcher) pollInotify(ctx context.Context, all bool) ([]storepath.Path, error) {
	now := time.Now()
	if err := w.readEvents(now); err != nil {
		return nil, err
	}
	var out []storepath.Path
	for name, c := range w.candidates {
		if !all && now.Before(c.next) {
			continue
		}
		p, err := w.dir.ParseBase(name)
		if err != nil {
			delete(w.candidates, name)
			continue
		}
		_, err = w.store.QueryPathInfo(ctx, p)
		switch {
		case err == nil:
			delete(w.candidates, name)
			if !w.reported[name] {
				w.reported[name] = true
				out = append(out, p)
			}
			continue
		case !errors.Is(err, localstore.ErrNotFound):
			return out, fmt.Errorf("check %s: %w", p, err)
		}
		if _, err := os.Lstat(p.String()); err != nil || now.Sub(c.first) > maxCandidate {
			delete(w.candidates, name) // a failed build, or never registered
			continue
		}
		c.wait = min(c.wait*2, maxCheckWait)
		c.next = now.Add(c.wait)
	}
	if len(w.reported) > 1<<20 {
		clear(w.reported) // bound memory; a path is registered only once anyway
	}
	return out, nil
}

// readEvents drains the inotify queue into candidates. After a queue
// overflow (events lost) it rescans the store for entries changed since
// the watch began.
func (w *Watcher) readEvents(now time.Time) error {
	for {
		n, err := unix.Read(w.fd, w.buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read inotify events: %w", err)
		}
		if n <= 0 {
			return nil
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			mask := binary.NativeEndian.Uint32(w.buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(w.buf[off+12:]))
			start := off + unix.SizeofInotifyEvent
			if start+nameLen > n {
				return fmt.Errorf("read inotify events: truncated event")
			}
			name := strings.TrimRight(string(w.buf[start:start+nameLen]), "\x00")
			off = start + nameLen
			if mask&unix.IN_Q_OVERFLOW != 0 {
				w.rescan(now)
				continue
			}
			w.add(name, now)
		}
	}
}

func (w *Watcher) add(name string, now time.Time) {
	if name == "" || strings.HasSuffix(name, ".lock") || strings.HasPrefix(name, ".") {
		return
	}
	if _, ok := w.candidates[name]; !ok && !w.reported[name] {
		w.candidates[name] = &candidate{first: now, next: now.Add(firstCheck), wait: firstCheck}
	}
}

func (w *Watcher) rescan(now time.Time) {
	entries, err := os.ReadDir(string(w.dir))
	if err != nil {
		return
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && !fi.ModTime().Before(w.start.Add(-time.Second)) {
			w.add(e.Name(), now)
		}
	}
}
