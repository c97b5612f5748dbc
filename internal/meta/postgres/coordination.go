package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// AcquireLease takes the lease name for holder for ttl, or renews it if
// holder has it already, and reports whether holder has it now. Leases
// use the database's clock, so replicas' clocks need not agree.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	rows, _ := s.pool.Query(ctx, `INSERT INTO leases (name, holder, expires) VALUES ($1, $2, now() + $3::interval)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
		WHERE leases.holder = excluded.holder OR leases.expires < now()
		RETURNING holder`, name, holder, ttl)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return len(got) == 1, nil
}

// ReleaseLease gives up holder's lease name, if it has it.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// LeaseHolder returns who holds the lease name, or "" if nobody does.
func (s *Store) LeaseHolder(ctx context.Context, name string) (string, error) {
	var h string
	err := s.pool.QueryRow(ctx, `SELECT holder FROM leases WHERE name = $1 AND expires >= now()`, name).Scan(&h)
	if err == pgx.ErrNoRows {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read lease %s: %w", name, err)
	}
	return h, nil
}

// Bury records that the blobs under keys are to be deleted once they have
// been buried for a grace period and are still unused (Reap). A key
// buried already keeps its first burial time.
func (s *Store) Bury(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO blob_tombstones (key) SELECT unnest($1::text[]) ON CONFLICT (key) DO NOTHING`, keys); err != nil {
		return fmt.Errorf("bury blobs: %w", err)
	}
	return nil
}

// Revive cancels the deletion of key: a writer is about to store it
// (again). It waits while a Reap is deleting key, so that the writer's
// bytes are stored after that deletion, never before.
func (s *Store) Revive(ctx context.Context, key string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM blob_tombstones WHERE key = $1`, key); err != nil {
		return fmt.Errorf("revive blob %s: %w", key, err)
	}
	return nil
}

// reviveBlobs, in a transaction that references keys anew, cancels their
// deletion, or fails with ErrBlobGone if a Reap has deleted one.
func reviveBlobs(ctx context.Context, tx pgx.Tx, keys ...string) error {
	rows, _ := tx.Query(ctx, `SELECT key FROM blob_tombstones WHERE key = ANY($1) AND reaped IS NOT NULL FOR UPDATE`, keys)
	gone, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(gone) > 0 {
		return fmt.Errorf("blob %s: %w", gone[0], ErrBlobGone)
	}
	_, err = tx.Exec(ctx, `DELETE FROM blob_tombstones WHERE key = ANY($1)`, keys)
	return err
}

// reapedKept is how long the marker of a deleted blob is kept, for
// writers that looked its NAR up before it was collected.
const reapedKept = 24 * time.Hour

// Reap deletes (with del) every blob buried more than grace ago that no
// NAR or log refers to, and drops the tombstones of blobs in use again.
// It returns how many blobs it deleted. Each blob is deleted in a
// transaction that holds its tombstone's row lock, which writers storing
// the key again (Revive) and uploads referencing it anew wait for.
func (s *Store) Reap(ctx context.Context, grace time.Duration, del func(ctx context.Context, key string) error) (int, error) {
	deleted := 0
	for {
		rows, _ := s.pool.Query(ctx, `SELECT key FROM blob_tombstones WHERE reaped IS NULL AND buried < now() - $1::interval
			ORDER BY buried LIMIT 500`, grace)
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return deleted, fmt.Errorf("reap blobs: %w", err)
		}
		progress := false
		for _, key := range keys {
			done, err := s.reapOne(ctx, key, grace, del)
			if err != nil {
				return deleted, fmt.Errorf("reap blob %s: %w", key, err)
			}
			if done {
				deleted++
			}
			progress = true
		}
		if len(keys) < 500 || !progress {
			break
		}
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM blob_tombstones WHERE reaped < now() - $1::interval`, max(reapedKept, grace)); err != nil {
		return deleted, fmt.Errorf("reap blobs: %w", err)
	}
	return deleted, nil
}

func (s *Store) reapOne(ctx context.Context, key string, grace time.Duration, del func(context.Context, string) error) (bool, error) {
	deleted := false
	err := s.tx(ctx, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT key FROM blob_tombstones WHERE key = $1 AND reaped IS NULL AND buried < now() - $2::interval
			FOR UPDATE SKIP LOCKED`, key, grace)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(got) == 0 {
			return err // revived or taken by another reaper meanwhile
		}
		var used bool
		if err := tx.QueryRow(ctx, blobInUse, key).Scan(&used); err != nil {
			return err
		}
		if used {
			_, err := tx.Exec(ctx, `DELETE FROM blob_tombstones WHERE key = $1`, key)
			return err
		}
		if err := del(ctx, key); err != nil {
			return err
		}
		deleted = true
		_, err = tx.Exec(ctx, `UPDATE blob_tombstones SET reaped = now() WHERE key = $1`, key)
		return err
	})
	return deleted, err
}

// Buried returns how many blobs wait to be reaped.
func (s *Store) Buried(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM blob_tombstones WHERE reaped IS NULL`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count buried blobs: %w", err)
	}
	return n, nil
}

// MultipartStarted records an S3 multipart upload in progress.
func (s *Store) MultipartStarted(ctx context.Context, uploadID, object string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO multipart_uploads (upload_id, object_key, holder)
		VALUES ($1, $2, current_setting('application_name')) ON CONFLICT (upload_id) DO NOTHING`, uploadID, object)
	if err != nil {
		return fmt.Errorf("record multipart upload %s: %w", uploadID, err)
	}
	return nil
}

// MultipartTouched notes that the upload made progress.
func (s *Store) MultipartTouched(ctx context.Context, uploadID string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE multipart_uploads SET touched = now() WHERE upload_id = $1`, uploadID); err != nil {
		return fmt.Errorf("touch multipart upload %s: %w", uploadID, err)
	}
	return nil
}

// MultipartFinished forgets the upload (completed or aborted).
func (s *Store) MultipartFinished(ctx context.Context, uploadID string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM multipart_uploads WHERE upload_id = $1`, uploadID); err != nil {
		return fmt.Errorf("forget multipart upload %s: %w", uploadID, err)
	}
	return nil
}

// StaleMultiparts calls fn for every recorded upload that made no
// progress for idle.
func (s *Store) StaleMultiparts(ctx context.Context, idle time.Duration, fn func(uploadID, object string) error) error {
	rows, _ := s.pool.Query(ctx, `SELECT upload_id, object_key FROM multipart_uploads WHERE touched < now() - $1::interval ORDER BY touched`, idle)
	type up struct{ id, object string }
	ups, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (up, error) {
		var u up
		return u, r.Scan(&u.id, &u.object)
	})
	if err != nil {
		return fmt.Errorf("list stale multipart uploads: %w", err)
	}
	for _, u := range ups {
		if err := fn(u.id, u.object); err != nil {
			return err
		}
	}
	return nil
}
