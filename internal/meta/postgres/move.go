package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/silo-cache/silo/internal/meta"
)

// ImportNAR stores n as it is (silo migrate-data), unless a NAR with its
// hash is stored already; it returns the NAR stored. Its files must be
// stored first. Unlike AddUpload it needs no upload: the NAR comes with
// the paths that use it. It reports whether it stored n.
func (s *Store) ImportNAR(ctx context.Context, n meta.NAR) (meta.NAR, bool, error) {
	var stored meta.NAR
	var inserted bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO nars (`+narCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (nar_hash) DO NOTHING`,
			n.NarHash, n.NarSize, n.BlobKey, n.Compression, n.FileHash, n.FileSize, n.ListingKey, nanos(n.Created))
		if err != nil {
			return err
		}
		inserted = tag.RowsAffected() == 1
		if inserted {
			if err := reviveBlobs(ctx, tx, n.BlobKey, n.ListingKey); err != nil {
				return err
			}
		}
		stored, err = scanNAR(tx.QueryRow(ctx, `SELECT `+narCols+` FROM nars WHERE nar_hash = $1`, n.NarHash))
		return err
	})
	if err != nil {
		return meta.NAR{}, false, fmt.Errorf("import NAR %s: %w", n.NarHash, err)
	}
	return stored, inserted, nil
}

// ImportPath stores p unless the cache has a path with its hash part (the
// first writer wins), and reports whether it stored it; ErrNotFound if
// the cache or the NAR does not exist.
func (s *Store) ImportPath(ctx context.Context, p meta.Path) (bool, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO paths (cache_id, hash_part, store_path, nar_hash, narinfo, created)
		SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM nars WHERE nar_hash = $4) AND EXISTS (SELECT 1 FROM caches WHERE id = $1)
		ON CONFLICT (cache_id, hash_part) DO NOTHING`,
		p.CacheID, p.HashPart, p.StorePath, p.NarHash, p.NarInfo, nanos(p.Created))
	if pgCode(err) == foreignKeyViolation {
		return false, fmt.Errorf("import path %s: %w", p.StorePath, meta.ErrNotFound)
	}
	if err != nil {
		return false, fmt.Errorf("import path %s: %w", p.StorePath, err)
	}
	if tag.RowsAffected() == 1 {
		return true, nil
	}
	// Not inserted: either it exists, or its cache or NAR does not.
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM paths WHERE cache_id = $1 AND hash_part = $2)`, p.CacheID, p.HashPart).Scan(&exists); err != nil {
		return false, fmt.Errorf("import path %s: %w", p.StorePath, err)
	}
	if !exists {
		return false, fmt.Errorf("import path %s: cache %d or NAR %s: %w", p.StorePath, p.CacheID, p.NarHash, meta.ErrNotFound)
	}
	return false, nil
}

// ImportLog stores l unless the cache has a log of its derivation, and
// reports whether it stored it.
func (s *Store) ImportLog(ctx context.Context, l meta.Log) (bool, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO logs (cache_id, drv, blob_key, size, created)
		SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM caches WHERE id = $1)
		ON CONFLICT (cache_id, drv) DO NOTHING`, l.CacheID, l.Drv, l.BlobKey, l.Size, nanos(l.Created))
	if err != nil {
		return false, fmt.Errorf("import log %s: %w", l.Drv, err)
	}
	return tag.RowsAffected() == 1, nil
}
