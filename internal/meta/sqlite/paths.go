package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/silo-cache/silo/internal/meta"
)

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

// PutPath stores p if its cache and NAR exist and the cache has no path
// with its hash part.
func (s *Store) PutPath(ctx context.Context, p meta.Path) error {
	return s.putPath(ctx, p, false)
}

// ReplacePath stores p if its cache and NAR exist, replacing the cache's
// path with its hash part.
func (s *Store) ReplacePath(ctx context.Context, p meta.Path) error {
	return s.putPath(ctx, p, true)
}

func (s *Store) putPath(ctx context.Context, p meta.Path, replace bool) error {
	if p.Created.IsZero() {
		p.Created = time.Now()
	}
	conflict := `DO NOTHING`
	if replace {
		conflict = `DO UPDATE SET store_path = excluded.store_path, nar_hash = excluded.nar_hash,
			narinfo = excluded.narinfo, created = excluded.created`
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO paths (cache_id, hash_part, store_path, nar_hash, narinfo, created)
		SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM nars WHERE nar_hash = ?) AND EXISTS (SELECT 1 FROM caches WHERE id = ?)
		ON CONFLICT (cache_id, hash_part) `+conflict,
			p.CacheID, p.HashPart, p.StorePath, p.NarHash, p.NarInfo, nanos(p.Created), p.NarHash, p.CacheID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM paths WHERE cache_id = ? AND hash_part = ?)`, p.CacheID, p.HashPart).Scan(&exists); err != nil {
			return err
		}
		if exists && !replace {
			return fmt.Errorf("cache %d has a path with hash part %s: %w", p.CacheID, p.HashPart, meta.ErrExists)
		}
		return fmt.Errorf("cache %d or NAR %s: %w", p.CacheID, p.NarHash, meta.ErrNotFound)
	})
	if err != nil {
		return fmt.Errorf("put path %s: %w", p.StorePath, err)
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

// PutLog stores l unless the cache has a log of its derivation or l would
// take the cache past max.
func (s *Store) PutLog(ctx context.Context, l meta.Log, max meta.LogLimits) error {
	return s.putLog(ctx, l, false, max)
}

// ReplaceLog stores l, replacing an earlier log of the same derivation.
func (s *Store) ReplaceLog(ctx context.Context, l meta.Log) error {
	return s.putLog(ctx, l, true, meta.LogLimits{})
}

// putLog keeps log_usage, the count and size of each cache's logs, in
// step with logs, so that limits cost a lookup, not a scan.
func (s *Store) putLog(ctx context.Context, l meta.Log, replace bool, max meta.LogLimits) error {
	if l.Created.IsZero() {
		l.Created = time.Now()
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM caches WHERE id = ?)`, l.CacheID).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("cache %d: %w", l.CacheID, meta.ErrNotFound)
		}
		var oldSize int64
		err := tx.QueryRowContext(ctx, `SELECT size FROM logs WHERE cache_id = ? AND drv = ?`, l.CacheID, l.Drv).Scan(&oldSize)
		switch {
		case err == nil && !replace:
			return fmt.Errorf("cache %d has a log for %s: %w", l.CacheID, l.Drv, meta.ErrExists)
		case err == nil:
			if _, err := tx.ExecContext(ctx, `DELETE FROM logs WHERE cache_id = ? AND drv = ?`, l.CacheID, l.Drv); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE log_usage SET count = count - 1, bytes = bytes - ? WHERE cache_id = ?`, oldSize, l.CacheID); err != nil {
				return err
			}
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if max.Count > 0 || max.Bytes > 0 {
			var count, bytes int64
			err := tx.QueryRowContext(ctx, `SELECT count, bytes FROM log_usage WHERE cache_id = ?`, l.CacheID).Scan(&count, &bytes)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if max.Count > 0 && count+1 > max.Count {
				return fmt.Errorf("cache %d holds %d logs, its limit: %w", l.CacheID, count, meta.ErrLimit)
			}
			if max.Bytes > 0 && bytes+l.Size > max.Bytes {
				return fmt.Errorf("cache %d holds %d bytes of logs; %d more would pass its limit of %d: %w", l.CacheID, bytes, l.Size, max.Bytes, meta.ErrLimit)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO logs (cache_id, drv, blob_key, size, created) VALUES (?, ?, ?, ?, ?)`,
			l.CacheID, l.Drv, l.BlobKey, l.Size, nanos(l.Created)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO log_usage (cache_id, count, bytes) VALUES (?, 1, ?)
			ON CONFLICT (cache_id) DO UPDATE SET count = count + 1, bytes = bytes + excluded.bytes`, l.CacheID, l.Size)
		return err
	})
	if err != nil {
		return fmt.Errorf("put log %s: %w", l.Drv, err)
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
