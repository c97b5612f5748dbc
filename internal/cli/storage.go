package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/blob"
	"github.com/silo-cache/silo/internal/blob/disk"
	"github.com/silo-cache/silo/internal/blob/s3"
	"github.com/silo-cache/silo/internal/blob/tombstone"
	"github.com/silo-cache/silo/internal/cache"
	"github.com/silo-cache/silo/internal/lease"
	"github.com/silo-cache/silo/internal/meta"
	"github.com/silo-cache/silo/internal/meta/postgres"
	"github.com/silo-cache/silo/internal/meta/sqlite"
)

// storageFlags choose where silo serve and the admin commands keep their
// data: SQLite and a directory in --data-dir by default, or PostgreSQL
// and an S3 bucket shared by any number of silo serve replicas.
type storageFlags struct {
	db, blobs, s3CredFile  string
	gcGrace, multipartIdle time.Duration
}

func defineStorageFlags(fs *flag.FlagSet, f *storageFlags) {
	fs.StringVar(&f.db, "db", "", "metadata database `URL`: postgres://[USER@]HOST[:PORT]/DB[?host=/run/postgresql] for PostgreSQL shared by replicas (its password from PGPASSFILE or ~/.pgpass, never in the URL); default SQLite in --data-dir")
	fs.StringVar(&f.blobs, "blobs", "", "blob store `URL`: s3://BUCKET[/PREFIX]?endpoint=URL&region=R[&lookup=path][&redirect-ttl=5m&public-endpoint=URL], or a directory; default blobs/ in --data-dir")
	fs.StringVar(&f.s3CredFile, "s3-credentials-file", "", "AWS credentials `FILE` for an s3:// --blobs (default: $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, or $AWS_SHARED_CREDENTIALS_FILE)")
	fs.DurationVar(&f.gcGrace, "gc-grace", time.Hour, "with a postgres --db: how long a collected blob waits before it is deleted (covers other replicas' uploads and downloads in flight)")
	fs.DurationVar(&f.multipartIdle, "multipart-idle", time.Hour, "with an s3:// --blobs: abort multipart uploads that made no progress for this long (left by a replica that died mid-upload)")
}

func isPostgres(u string) bool {
	return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
}

// checkDBURL refuses a --db value silo cannot use or that carries a secret.
func checkDBURL(raw string) error {
	if raw == "" {
		return nil
	}
	if !isPostgres(raw) {
		return fmt.Errorf("--db %q: want postgres://... (or nothing, for SQLite in --data-dir)", raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("--db: %v", err)
	}
	if _, ok := u.User.Password(); ok || u.Query().Has("password") {
		return fmt.Errorf("--db %s: the URL carries a password, which ps and logs would show; put it in a password file (PGPASSFILE, ~/.pgpass, or ?passfile=FILE)", redactDB(u))
	}
	return nil
}

// redactDB shows a database URL without its password.
func redactDB(u *url.URL) string {
	c := *u
	if q := c.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		c.RawQuery = q.Encode()
	}
	return c.Redacted()
}

// describeDB names the metadata store for messages.
func describeDB(f *serveFlags) string {
	if f.store.db == "" {
		db, _ := dataPaths(f.dataDir)
		return db
	}
	u, err := url.Parse(f.store.db)
	if err != nil {
		return "the --db database"
	}
	return redactDB(u)
}

// openMeta opens the metadata store the flags name, migrating its schema.
func openMeta(ctx context.Context, f *serveFlags) (meta.Store, error) {
	if err := checkDBURL(f.store.db); err != nil {
		return nil, Usagef("%v", err)
	}
	if isPostgres(f.store.db) {
		s, err := postgres.Open(ctx, f.store.db, postgres.Options{ApplicationName: applicationName()})
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return s, nil
	}
	db, _ := dataPaths(f.dataDir)
	s, err := sqlite.Open(ctx, db)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func applicationName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("silo %s:%d", host, os.Getpid())
}

// storage is what silo serve runs on.
type storage struct {
	meta  meta.Store
	pg    *postgres.Store  // nil for SQLite
	blobs blob.Store       // what the cache server uses
	s3    *s3.Store        // nil unless S3
	tomb  *tombstone.Store // with PostgreSQL: deletions wait for Reap
	lock  *os.File
	where string
}

func (st *storage) Close() {
	if st.meta != nil {
		st.meta.Close()
	}
	if st.lock != nil {
		st.lock.Close()
	}
}

// openStorage opens the metadata and blob stores for silo serve. With
// SQLite, or blobs on local disk, the server takes the directory's lock
// (one server per directory); with PostgreSQL and S3 there is nothing
// local to lock and any number of replicas may run.
func openStorage(ctx context.Context, env *Env, f *serveFlags, log *slog.Logger) (_ *storage, err error) {
	st := &storage{}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	pg := isPostgres(f.store.db)
	if !pg {
		if st.lock, err = lockDataDir(f.dataDir); err != nil {
			return nil, err
		}
		if err := privateDataDir(f.dataDir, log); err != nil {
			return nil, err
		}
	}
	if st.meta, err = openMeta(ctx, f); err != nil {
		return nil, err
	}
	if pg {
		st.pg = st.meta.(*postgres.Store)
	}
	var b blob.Store
	switch {
	case strings.HasPrefix(f.store.blobs, "s3://"):
		o, err := s3.ParseURL(f.store.blobs)
		if err != nil {
			return nil, Usagef("--blobs: %v", err)
		}
		if o.Creds, err = s3.Credentials(env.Getenv, f.store.s3CredFile); err != nil {
			return nil, err
		}
		if st.pg != nil {
			o.Journal = st.pg
		}
		if st.s3, err = s3.Open(ctx, o); err != nil {
			return nil, err
		}
		b = st.s3
		st.where = st.s3.String()
	default:
		dir, err := blobDir(f)
		if err != nil {
			return nil, err
		}
		if pg {
			// Blobs on a local disk belong to one server.
			if st.lock, err = lockDataDir(dir); err != nil {
				return nil, err
			}
		}
		d, err := disk.Open(dir)
		if err != nil {
			return nil, err
		}
		// We hold the directory's lock: every temporary file is a leftover.
		if n, err := d.CleanTemp(0); err != nil {
			return nil, err
		} else if n > 0 {
			log.Info("removed unfinished uploads left by an earlier run", "files", n)
		}
		b = d
		st.where = dir
	}
	if st.pg != nil {
		st.tomb = tombstone.New(b, st.pg)
		b = st.tomb
	}
	st.blobs = b
	return st, nil
}

// blobDir returns the directory of a disk --blobs.
func blobDir(f *serveFlags) (string, error) {
	v := f.store.blobs
	switch {
	case v == "":
		_, dir := dataPaths(f.dataDir)
		return dir, nil
	case strings.HasPrefix(v, "file://"):
		return strings.TrimPrefix(v, "file://"), nil
	case strings.HasPrefix(v, "file:"):
		return strings.TrimPrefix(v, "file:"), nil
	case strings.Contains(v, "://"):
		return "", Usagef("--blobs %q: want s3://BUCKET?endpoint=... or a directory", v)
	}
	return filepath.Clean(v), nil
}

// maintain runs the garbage collector and sweeps until ctx ends. On
// SQLite this server is the only one; on PostgreSQL one replica at a time
// runs them, holding the lease "gc".
func (st *storage) maintain(ctx context.Context, srv *cache.Server, f *serveFlags, log *slog.Logger) {
	if st.pg == nil && st.s3 == nil {
		srv.RunGC(ctx, f.gcInterval)
		return
	}
	round := 0
	collect := func(ctx context.Context) error {
		defer func() { round++ }()
		var errs []error
		if n, err := srv.CollectGarbage(ctx); err != nil {
			errs = append(errs, err)
		} else if n > 0 {
			log.InfoContext(ctx, "garbage collected", "blobs", n)
		}
		if round%10 == 0 {
			if n, err := srv.SweepOrphans(ctx, time.Hour); err != nil {
				errs = append(errs, err)
			} else if n > 0 {
				log.InfoContext(ctx, "orphan blobs deleted", "blobs", n)
			}
		}
		if st.tomb != nil {
			if n, err := st.tomb.Reap(ctx, f.store.gcGrace); err != nil {
				errs = append(errs, err)
			} else if n > 0 {
				log.InfoContext(ctx, "collected blobs deleted after their grace period", "blobs", n)
			}
		}
		if st.s3 != nil {
			if n, err := st.s3.Sweep(ctx, f.store.multipartIdle); err != nil {
				errs = append(errs, err)
			} else if n > 0 {
				log.InfoContext(ctx, "abandoned multipart uploads removed", "uploads", n)
			}
		}
		return errors.Join(errs...)
	}
	if st.pg == nil {
		t := time.NewTicker(f.gcInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := collect(ctx); err != nil && ctx.Err() == nil {
				log.ErrorContext(ctx, "garbage collection failed", "err", err)
			}
		}
	}
	holder := lease.Holder()
	defer lease.Release(context.WithoutCancel(ctx), st.pg, "gc", holder)
	lease.Every(ctx, st.pg, "gc", holder, f.gcInterval, log, collect)
}
