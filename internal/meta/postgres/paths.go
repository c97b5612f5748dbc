package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/silo-cache/silo/internal/meta"
)

const narCols = `nar_hash, nar_size, blob_key, compression, file_hash, file_size, listing_key, created`

func scanNAR(r pgx.Row) (meta.NAR, error) {
	var n meta.NAR
	var created int64
	err := r.Scan(&n.NarHash, &n.NarSize, &n.BlobKey, &n.Compression, &n.FileHash, &n.FileSize, &n.ListingKey, &created)
	n.Created = fromNanos(created)
	return n, err
}

// ErrBlobGone is returned (wrapped) by AddUpload when the NAR it is given
// is no longer stored and its files were deleted by the garbage
// collector after the caller looked it up: the client must upload again.
var ErrBlobGone = errors.New("the NAR's stored file was garbage collected meanwhile; upload it again")

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
	var err error
	// A collection on another replica may delete the NAR found here before
	// the upload referencing it commits: then the NAR is stored again.
	for attempt := 0; attempt < 3; attempt++ {
		stored, inserted, err = s.addUpload(ctx, u, n)
		if constraint(err) != "uploads_nar_hash_fkey" {
			break
		}
	}
	if err != nil {
		return meta.NAR{}, false, fmt.Errorf("add upload %s: %w", u.URL, err)
	}
	return stored, inserted, nil
}

// addUpload sends AddUpload's statements in one pipeline, which
// PostgreSQL runs as one implicit transaction: one round trip.
func (s *Store) addUpload(ctx context.Context, u meta.Upload, n meta.NAR) (stored meta.NAR, inserted bool, err error) {
	b := &pgx.Batch{}
	// Claim the NAR's files back from their tombstones, or fail if they
	// are gone. (If the NAR is stored already its files are in use, so
	// this changes nothing.)
	b.Queue(`SELECT silo_revive($1)`, []string{n.BlobKey, n.ListingKey})
	b.Queue(`INSERT INTO nars (`+narCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (nar_hash) DO NOTHING`,
		n.NarHash, n.NarSize, n.BlobKey, n.Compression, n.FileHash, n.FileSize, n.ListingKey, nanos(n.Created))
	b.Queue(`SELECT `+narCols+` FROM nars WHERE nar_hash = $1`, n.NarHash)
	b.Queue(`INSERT INTO uploads (cache_id, url, file_hash, file_size, nar_hash, nar_size, created)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (cache_id, url) DO UPDATE SET file_hash = excluded.file_hash, file_size = excluded.file_size,
			nar_hash = excluded.nar_hash, nar_size = excluded.nar_size, created = excluded.created`,
		u.CacheID, u.URL, u.FileHash, u.FileSize, u.NarHash, u.NarSize, nanos(u.Created))
	br := s.pool.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = cerr
		}
		switch {
		case pgCode(err) == "SI001":
			err = fmt.Errorf("NAR %s: %w", n.NarHash, ErrBlobGone)
		case constraint(err) == "uploads_cache_id_fkey":
			err = fmt.Errorf("cache %d: %w", u.CacheID, meta.ErrNotFound)
		}
	}()
	if _, err = br.Exec(); err != nil {
		return stored, false, err
	}
	tag, err := br.Exec()
	if err != nil {
		return stored, false, err
	}
	inserted = tag.RowsAffected() == 1
	if stored, err = scanNAR(br.QueryRow()); err != nil {
		return stored, false, err
	}
	_, err = br.Exec()
	return stored, inserted, err
}

// Upload returns the upload to the cache under url.
func (s *Store) Upload(ctx context.Context, cacheID int64, url string) (meta.Upload, error) {
	var u meta.Upload
	var created int64
	err := s.pool.QueryRow(ctx, `SELECT cache_id, url, file_hash, file_size, nar_hash, nar_size, created FROM uploads WHERE cache_id = $1 AND url = $2`,
		cacheID, url).Scan(&u.CacheID, &u.URL, &u.FileHash, &u.FileSize, &u.NarHash, &u.NarSize, &created)
	if err != nil {
		return meta.Upload{}, notFound(err, "upload "+url)
	}
	u.Created = fromNanos(created)
	return u, nil
}

// NAR returns the stored NAR with hash narHash.
func (s *Store) NAR(ctx context.Context, narHash string) (meta.NAR, error) {
	n, err := scanNAR(s.pool.QueryRow(ctx, `SELECT `+narCols+` FROM nars WHERE nar_hash = $1`, narHash))
	if err != nil {
		return meta.NAR{}, notFound(err, "NAR "+narHash)
	}
	return n, nil
}

// ServedNAR returns the NAR stored under blobKey if the cache serves it.
func (s *Store) ServedNAR(ctx context.Context, cacheID int64, blobKey string) (meta.NAR, error) {
	n, err := scanNAR(s.pool.QueryRow(ctx, `SELECT `+narCols+` FROM nars WHERE blob_key = $1
		AND EXISTS (SELECT 1 FROM paths p WHERE p.nar_hash = nars.nar_hash AND p.cache_id = $2) LIMIT 1`, blobKey, cacheID))
	if err != nil {
		return meta.NAR{}, notFound(err, "NAR file "+blobKey)
	}
	return n, nil
}

// PutPath stores p unless the cache has a path with its hash part
// already (ErrExists): of racing writers exactly one wins, decided by
// the primary key. ErrNotFound if the cache or p's NAR does not exist.
func (s *Store) PutPath(ctx context.Context, p meta.Path) error {
	if p.Created.IsZero() {
		p.Created = time.Now()
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO paths (cache_id, hash_part, store_path, nar_hash, narinfo, created)
		SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM nars WHERE nar_hash = $4) AND EXISTS (SELECT 1 FROM caches WHERE id = $1)
		ON CONFLICT (cache_id, hash_part) DO NOTHING`,
		p.CacheID, p.HashPart, p.StorePath, p.NarHash, p.NarInfo, nanos(p.Created))
	if err == nil && tag.RowsAffected() == 0 {
		var one int
		switch qerr := s.pool.QueryRow(ctx, `SELECT 1 FROM paths WHERE cache_id = $1 AND hash_part = $2`, p.CacheID, p.HashPart).Scan(&one); {
		case qerr == nil:
			return fmt.Errorf("put path %s: %w", p.StorePath, meta.ErrExists)
		case !errors.Is(qerr, pgx.ErrNoRows):
			return fmt.Errorf("put path %s: %w", p.StorePath, qerr)
		}
	}
	return putPathResult(p, tag, err)
}

// ReplacePath stores p, replacing the cache's path with the same hash
// part; ErrNotFound if the cache or p's NAR does not exist.
func (s *Store) ReplacePath(ctx context.Context, p meta.Path) error {
	if p.Created.IsZero() {
		p.Created = time.Now()
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO paths (cache_id, hash_part, store_path, nar_hash, narinfo, created)
		SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM nars WHERE nar_hash = $4) AND EXISTS (SELECT 1 FROM caches WHERE id = $1)
		ON CONFLICT (cache_id, hash_part) DO UPDATE SET store_path = excluded.store_path, nar_hash = excluded.nar_hash,
			narinfo = excluded.narinfo, created = excluded.created`,
		p.CacheID, p.HashPart, p.StorePath, p.NarHash, p.NarInfo, nanos(p.Created))
	return putPathResult(p, tag, err)
}

func putPathResult(p meta.Path, tag pgconn.CommandTag, err error) error {
	if pgCode(err) == foreignKeyViolation || err == nil && tag.RowsAffected() == 0 {
		// A foreign key violation is a NAR or cache deleted by another
		// replica between the check and the insert.
		return fmt.Errorf("put path %s: cache %d or NAR %s: %w", p.StorePath, p.CacheID, p.NarHash, meta.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("put path %s: %w", p.StorePath, err)
	}
	return nil
}

// Path returns the cache's path with the given hash part.
func (s *Store) Path(ctx context.Context, cacheID int64, hashPart string) (meta.Path, error) {
	var p meta.Path
	var created int64
	err := s.pool.QueryRow(ctx, `SELECT cache_id, hash_part, store_path, nar_hash, narinfo, created FROM paths WHERE cache_id = $1 AND hash_part = $2`,
		cacheID, hashPart).Scan(&p.CacheID, &p.HashPart, &p.StorePath, &p.NarHash, &p.NarInfo, &created)
	if err != nil {
		return meta.Path{}, notFound(err, "path "+hashPart)
	}
	p.Created = fromNanos(created)
	return p, nil
}

// Missing returns the hash parts the cache lacks, in order.
func (s *Store) Missing(ctx context.Context, cacheID int64, hashParts []string) ([]string, error) {
	missing := []string{}
	if len(hashParts) == 0 {
		return missing, nil
	}
	rows, _ := s.pool.Query(ctx, `SELECT hash_part FROM paths WHERE cache_id = $1 AND hash_part = ANY($2)`, cacheID, hashParts)
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("query missing paths: %w", err)
	}
	set := make(map[string]bool, len(have))
	for _, h := range have {
		set[h] = true
	}
	for _, h := range hashParts {
		if !set[h] {
			missing = append(missing, h)
		}
	}
	return missing, nil
}

// PutLog stores l unless the cache has a log for l.Drv (ErrExists) or l
// would take its logs past max (ErrLimit). The cache's row is locked for
// the transaction, so concurrent PutLogs of one cache check and insert
// one at a time (replicas included).
func (s *Store) PutLog(ctx context.Context, l meta.Log, max meta.LogLimits) error {
	if l.Created.IsZero() {
		l.Created = time.Now()
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var id int64
		if err := tx.QueryRow(ctx, `SELECT id FROM caches WHERE id = $1 FOR UPDATE`, l.CacheID).Scan(&id); errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("cache %d: %w", l.CacheID, meta.ErrNotFound)
		} else if err != nil {
			return err
		}
		var exists bool
		var count, bytes int64
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM logs WHERE cache_id = $1 AND drv = $2),
			count(*), COALESCE(sum(size), 0) FROM logs WHERE cache_id = $1`, l.CacheID, l.Drv).Scan(&exists, &count, &bytes); err != nil {
			return err
		}
		switch {
		case exists:
			return meta.ErrExists
		case max.Count > 0 && count+1 > max.Count:
			return fmt.Errorf("%w: the cache holds %d logs, its limit", meta.ErrLimit, count)
		case max.Bytes > 0 && bytes+l.Size > max.Bytes:
			return fmt.Errorf("%w: the cache's logs would take %d bytes, over its limit of %d", meta.ErrLimit, bytes+l.Size, max.Bytes)
		}
		_, err := tx.Exec(ctx, `INSERT INTO logs (cache_id, drv, blob_key, size, created) VALUES ($1, $2, $3, $4, $5)`,
			l.CacheID, l.Drv, l.BlobKey, l.Size, nanos(l.Created))
		return err
	})
	if err != nil {
		return fmt.Errorf("put log %s: %w", l.Drv, err)
	}
	return nil
}

// ReplaceLog stores l, replacing the cache's log for the same derivation,
// whatever the limits; ErrNotFound if the cache does not exist.
func (s *Store) ReplaceLog(ctx context.Context, l meta.Log) error {
	if l.Created.IsZero() {
		l.Created = time.Now()
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO logs (cache_id, drv, blob_key, size, created)
		SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM caches WHERE id = $1)
		ON CONFLICT (cache_id, drv) DO UPDATE SET blob_key = excluded.blob_key, size = excluded.size, created = excluded.created`,
		l.CacheID, l.Drv, l.BlobKey, l.Size, nanos(l.Created))
	if pgCode(err) == foreignKeyViolation || err == nil && tag.RowsAffected() == 0 {
		return fmt.Errorf("replace log %s: cache %d: %w", l.Drv, l.CacheID, meta.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("replace log %s: %w", l.Drv, err)
	}
	return nil
}

// Log returns the cache's log of the derivation drv.
func (s *Store) Log(ctx context.Context, cacheID int64, drv string) (meta.Log, error) {
	var l meta.Log
	var created int64
	err := s.pool.QueryRow(ctx, `SELECT cache_id, drv, blob_key, size, created FROM logs WHERE cache_id = $1 AND drv = $2`,
		cacheID, drv).Scan(&l.CacheID, &l.Drv, &l.BlobKey, &l.Size, &created)
	if err != nil {
		return meta.Log{}, notFound(err, "log "+drv)
	}
	l.Created = fromNanos(created)
	return l, nil
}

// Collect removes expired uploads and unused NARs. It first locks the
// NARs that look unused, which keeps other replicas from referencing them
// (their foreign key checks wait), then deletes those still unused as a
// fresh statement sees it, so a reference committed in between keeps its
// NAR.
func (s *Store) Collect(ctx context.Context, uploadsBefore time.Time) ([]string, error) {
	var keys []string
	err := s.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM uploads WHERE created < $1 AND NOT EXISTS
			(SELECT 1 FROM paths p WHERE p.cache_id = uploads.cache_id AND p.nar_hash = uploads.nar_hash)`, nanos(uploadsBefore))
		if err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, `SELECT nar_hash FROM nars WHERE `+unusedNAR+` FOR UPDATE SKIP LOCKED`)
		candidates, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(candidates) == 0 {
			return err
		}
		rows, _ = tx.Query(ctx, `DELETE FROM nars WHERE nar_hash = ANY($1) AND `+unusedNAR+` RETURNING blob_key, listing_key`, candidates)
		var b, l string
		_, err = pgx.ForEachRow(rows, []any{&b, &l}, func() error {
			keys = append(keys, b)
			if l != "" {
				keys = append(keys, l)
			}
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("collect garbage: %w", err)
	}
	return keys, nil
}

const unusedNAR = `NOT EXISTS (SELECT 1 FROM paths p WHERE p.nar_hash = nars.nar_hash)
	AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.nar_hash = nars.nar_hash)`

// BlobInUse reports whether a NAR or log refers to key.
func (s *Store) BlobInUse(ctx context.Context, key string) (bool, error) {
	var used bool
	if err := s.pool.QueryRow(ctx, blobInUse, key).Scan(&used); err != nil {
		return false, fmt.Errorf("check blob %s: %w", key, err)
	}
	return used, nil
}

const blobInUse = `SELECT EXISTS (SELECT 1 FROM nars WHERE blob_key = $1)
	OR EXISTS (SELECT 1 FROM nars WHERE listing_key = $1) OR EXISTS (SELECT 1 FROM logs WHERE blob_key = $1)`

// Usage sums each cache's paths and bytes.
func (s *Store) Usage(ctx context.Context) ([]meta.Usage, error) {
	rows, _ := s.pool.Query(ctx, `SELECT c.name, COALESCE(p.cnt, 0), COALESCE(p.nar, 0), COALESCE(d.stored, 0) FROM caches c
		LEFT JOIN (SELECT cache_id, COUNT(*) AS cnt, SUM(n.nar_size)::bigint AS nar FROM paths JOIN nars n USING (nar_hash) GROUP BY cache_id) p ON p.cache_id = c.id
		LEFT JOIN (SELECT cache_id, SUM(file_size)::bigint AS stored FROM
			(SELECT DISTINCT p.cache_id, n.nar_hash, n.file_size FROM paths p JOIN nars n USING (nar_hash)) dn GROUP BY cache_id) d ON d.cache_id = c.id
		ORDER BY c.name`)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (meta.Usage, error) {
		var u meta.Usage
		err := r.Scan(&u.Cache, &u.Paths, &u.NarBytes, &u.StoredBytes)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("sum usage: %w", err)
	}
	return out, nil
}
